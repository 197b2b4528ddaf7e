"""A worker process that ends with the process that started it.

``pase compare --jobs N`` runs its runs in ``spawn`` workers. Killed with SIGKILL, the comparison
left its workers alive for good (parent 1, about 430 MB each, blocked on the pool's queue, holding
the command's stdout and stderr so a ``| tee`` never returned; a review). Every file a run writes
is atomic, so ending a worker when its parent is gone loses nothing its checkpoints do not hold.
Standard library only: a spawned worker imports this before anything heavy.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import threading

__all__ = ["exit_with_parent"]


def exit_with_parent(code: int = 1) -> bool:
    """In a ``multiprocessing`` child, start a daemon thread that waits on the parent's sentinel
    (readable once the parent has exited, however it ended) and then ends this process with
    ``os._exit(code)``. Returns False where there is no parent to watch (the main process)."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return False

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(code)

    threading.Thread(target=watch, name="pase-exit-with-parent", daemon=True).start()
    return True
