import os

import pytest
import torch

# Two xdist workers share two cores: one intra-op thread each keeps them from fighting.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def pytest_collection_modifyitems(config, items):
    """The ``ignore`` entries of the ini ``filterwarnings`` (warnings raised inside dependencies, not
    ours: see pyproject.toml) again as marks. Marks outrank ``-W`` on the command line, so
    ``pytest -W error::DeprecationWarning`` turns our own deprecations into errors and still not those."""
    marks = [pytest.mark.filterwarnings(f) for f in config.getini("filterwarnings") if f.startswith("ignore:")]
    for item in items:
        for mark in marks:
            item.add_marker(mark)
