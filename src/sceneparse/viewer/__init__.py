"""sceneparse.viewer: ``sceneparse view``, a local web app over a COCO-layout dataset and prediction
files (a grid drawn in the browser, per-image facts from sceneparse's evaluation, plots).

:class:`~.store.Dataset` and :class:`~.store.Source` hold the data as columns, :mod:`.facts` turns
the evaluation's matching into per-image numbers, :mod:`.server` serves them with the static client
in ``static/``. Never imports models (the explain button runs the ``explain`` command)."""
from .facts import SourceFacts, compute_facts, per_image_ap
from .server import Viewer, ViewServer, serve_in_thread
from .store import Dataset, Source

__all__ = ["Dataset", "Source", "SourceFacts", "ViewServer", "Viewer", "compute_facts", "per_image_ap",
           "serve_in_thread"]
