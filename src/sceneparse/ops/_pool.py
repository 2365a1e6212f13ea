"""One process-wide thread pool for CPU work that torch runs on a single thread (torchvision's
RoIAlign and NMS kernels): the kernels release the GIL, so independent calls -- RoI chunks, images
of a batch -- run concurrently on the intra-op threads that would otherwise idle.

A forked child has none of its parent's threads: the pool is forgotten there and started anew on
first use (without this, a call in a forked data-loader worker waits forever).
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import torch

_pool: ThreadPoolExecutor | None = None
_lock = threading.Lock()


def executor(n: int) -> ThreadPoolExecutor:
    """The shared pool, with at least ``n`` workers (grown when ``torch.set_num_threads`` grows)."""
    global _pool
    with _lock:
        if _pool is None or _pool._max_workers < n:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="sceneparse-cpu")
        return _pool


def cpu_workers(device: torch.device, tasks: int) -> int:
    """How many pool threads ``tasks`` independent calls on ``device`` should use: 1 (run them in
    the calling thread) off the CPU, when traced or scripted, or with one intra-op thread."""
    if device.type != "cpu" or torch.jit.is_tracing() or torch.jit.is_scripting():
        return 1
    return max(1, min(torch.get_num_threads(), tasks))


def _forget_pool() -> None:
    global _pool
    _pool = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)
