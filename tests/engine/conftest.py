import pytest


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """8 train + 4 val images of 64x64 (COCO layout, every kind of annotation)."""
    from engine_helpers import make_synth

    return make_synth(tmp_path_factory.mktemp("synth"))
