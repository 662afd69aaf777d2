"""Whether an indexing run is writing an index now: a look at its write lock that takes nothing.

The store holds `<db>/.write.lock` (an exclusive `flock`, `store.index_write_lock`) for as long as a run
or a server job writes. Who only reads (a server job waiting its turn, the server's status, the UI in
local mode, which may not import the store) looks here: one module for both, beside the lock's name.
"""

from __future__ import annotations

import fcntl
from pathlib import Path

from . import objectstore

__all__ = ["LOCK_FILE", "writer_busy"]

LOCK_FILE = ".write.lock"


def writer_busy(db: Path | str) -> bool:
    """Whether a writer holds the index's write lock now. A shared, non-blocking `flock` on the lock file
    opened for reading: it conflicts with a writer's exclusive lock, needs no write permission (a reader
    of an index it may not write) and is dropped at once (a writer waits its patience for it). An index
    on object storage, or one not made yet, has no lock to hold; a file system without locks cannot
    tell, and says no."""
    if objectstore.is_uri(str(db)):
        return False
    try:
        fh = open(Path(db) / LOCK_FILE, "rb")  # never created here: no file, no writer
    except OSError:
        return False
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return False
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False
