"""What a reader without a key may see: no server paths.

Reads are open unless `--read-auth`; an open read still must not map the server's disk. A request
that carries no valid key (an anonymous reader) sees each file as its path relative to the library
root it lies under (`films/a.mp4`), or its bare name when it lies under none; video ids, titles,
metadata, durations and failure reasons are unchanged. A request with a valid key (the operator's
tools, the UI's in-process app, a UI started with a key) sees absolute paths, which it needs to act on
them (reindex, delete, fix). Job records name server paths and are read with a key only; so are
/metrics and the details of /readyz under `--read-auth` (a load balancer still gets `ready`).
"""

from __future__ import annotations

import functools
import os
from typing import Annotated

from fastapi import Depends, Request

from vidsearch.api_models import FileProblem, VideoInfo
from vidsearch.store import local_path, readable_name

from .deps import State, key_accepted
from .library import resolved_roots

__all__ = ["Viewer", "PathView"]


class PathView:
    """Presents server paths to one request: as they are for a keyed reader, relative otherwise."""

    def __init__(self, keyed: bool, roots: list[str]):
        self.keyed, self.roots = keyed, roots

    def path(self, path: str) -> str:
        if self.keyed or not path:
            return path
        return _relative(path, tuple(self.roots))

    def video(self, info: VideoInfo) -> VideoInfo:
        return info if self.keyed else info.model_copy(update={"uri": self.path(info.uri)})

    def problems(self, items: list[FileProblem]) -> list[FileProblem]:
        return items if self.keyed else [p.model_copy(update={"path": self.path(p.path)}) for p in items]


@functools.lru_cache(maxsize=8192)
def _relative(path: str, roots: tuple[str, ...]) -> str:
    """`path` relative to the root it lies under (through links too), else its bare name. Memoised:
    `realpath` asks the file system for every component, and every anonymous search result asked it
    again (~5% of the server's CPU under bench/api_load.py). A link changed later shows once the entry
    is pushed out (8,192 paths) or the server restarts; that changes only how a path is shown to an
    anonymous reader, never what may be read (library.py checks access on every request). A name that is
    not valid UTF-8 (stored as a file:// URI, store.path_key) is shown readable (store.readable_name)."""
    path = local_path(path)
    for candidate in {os.path.abspath(path), os.path.realpath(path)}:
        for root in roots:
            if candidate.startswith(root.rstrip(os.sep) + os.sep):
                return readable_name(os.path.relpath(candidate, root))
    return readable_name(os.path.basename(path.rstrip(os.sep)) or path)


@functools.lru_cache(maxsize=64)
def _roots(roots: tuple[str, ...]) -> list[str]:
    """The configured roots resolved once per server (each is a few file system calls)."""
    return resolved_roots(roots)


async def path_view(request: Request, state: State) -> PathView:
    return PathView(key_accepted(state, request), _roots(tuple(str(r) for r in state.settings.library_roots)))


Viewer = Annotated[PathView, Depends(path_view)]
