"""Worker processes that parse raw mail (pure work, the slowest step of intake).

Started with `spawn` (the caller may run threads, where `fork` is unsafe).  Each
worker watches its parent and exits when it is gone: a `fetch` killed with
SIGKILL must not leave parsers behind, waiting forever on a queue nobody feeds.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor


def parser_pool(workers: int | None = None) -> ProcessPoolExecutor | None:
    """A pool of `workers` parser processes (default: one per core, at most 4); None for 0."""
    count = workers if workers is not None else min(os.cpu_count() or 1, 4)
    if count < 1:
        return None
    return ProcessPoolExecutor(count, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_exit_with_parent, initargs=(os.getpid(),))


def _exit_with_parent(parent: int) -> None:
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
