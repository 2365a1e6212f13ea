from pathlib import Path

import pytest
from format_fixtures import write_images


@pytest.fixture
def image_root(tmp_path) -> Path:
    """Three small random PNGs (32x32, 24x40, 40x28 as HxW) in ``tmp_path/images``."""
    return write_images(tmp_path / "images")
