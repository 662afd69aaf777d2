"""Who runs a job: the server process that owns it, recorded with the job, so another server on the
same index (or the same server after a restart) marks failed only the jobs whose owner is gone.

An owner is the host, the process id and that process's start time (Linux: `/proc/PID/stat` field
22, in clock ticks since boot), so a recycled pid is not taken for the owner. A job owned on another
host cannot be checked from here and is left as its owner recorded it.
"""

from __future__ import annotations

import os
import socket

__all__ = ["is_gone", "this_process"]


def _start_ticks(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: count fields after its last ')'
    fields = data[data.rindex(b")") + 2 :].split()
    return int(fields[19])  # field 22 overall


def this_process() -> dict:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "start": _start_ticks(pid)}


def is_gone(owner: dict | None) -> bool:
    """Whether the process that owned a job no longer runs (True for records without an owner: they
    were written by a server that predates ownership, which is gone by now)."""
    if not owner:
        return True
    if owner.get("host") != socket.gethostname():
        return False
    pid = int(owner.get("pid", -1))
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        pass
    start = owner.get("start")
    return start is not None and _start_ticks(pid) not in (None, start)
