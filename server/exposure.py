"""What a reader without a key may see: no server paths.

Reads are open unless `--read-auth`; an open read still must not map the server's disk. A request
that carries no valid key (an anonymous reader) sees each file as its path relative to the library
root it lies under (`films/a.mp4`), or its bare name when it lies under none; video ids, titles,
metadata and durations are unchanged. Messages are shown the same way: every absolute path inside a
failure reason, a warning or an error's `detail` (`no index at /srv/idx: ...`, `symbolic link leads
outside the library (/home/x/a.mp4)`) is rewritten as the `path` field is (`PathView.text`; the app's
error handler applies it to every error an anonymous reader gets). A request with a valid key (the operator's
tools, the UI's in-process app, a UI started with a key) sees absolute paths, which it needs to act on
them (reindex, delete, fix). Job records name server paths and are read with a key only; so are
/metrics and the details of /readyz under `--read-auth` (a load balancer still gets `ready`).
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable
from typing import Annotated

from fastapi import Depends, Request

from vidsearch.api_models import FileProblem, VideoInfo
from vidsearch.store import local_path, readable_name

from .deps import State, key_accepted
from .library import resolved_roots

__all__ = ["Viewer", "PathView", "view_of"]

# an absolute path inside a message: `/` (or `file:`, `file:///`, `~/`, `~user/`) at the start of a
# word, or after a bracket, a quote or `=`; it runs to the next space, bracket, quote, comma or
# semicolon. Not `1/2`, `a/b`, nor a URL's `//host/...` (`:` before it), nor this API's own routes
# (`GET /v1/index`, `/readyz`). A name with a space is cut there (the part after it is then no absolute
# path); `text(known=...)` replaces the paths a message is known to name whole first.
_ABSOLUTE = re.compile(
    r"""(?<![^\s(\[{'"`=])(?!/v1/|/(?:readyz|healthz|metrics|docs|redoc|openapi\.json)\b)"""
    r"""(?:file:|~[^\s/()\[\]{}'"`<>,;]*)?/[^\s()\[\]{}'"`<>,;]+"""
)
_TRAILING = ".:!?"  # sentence punctuation after a path is not part of it ("no index at /x/db: build")


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

    def text(self, message: str | None, known: Iterable[str] = ()) -> str | None:
        """`message` with every absolute path in it shown as `path` shows one (for a keyed reader,
        unchanged). `known`: paths the message may name whole, spaces and all (a failure's own file),
        replaced before the rest are found word by word."""
        if self.keyed or not message:
            return message
        return _relative_text(message, tuple(self.roots), tuple(sorted(set(known), key=len, reverse=True)))

    def problems(self, items: list[FileProblem]) -> list[FileProblem]:
        """Failures and warnings: the file, and any path its reason names (a link's target, a manifest's
        line), relative or bare."""
        if self.keyed:
            return items
        return [p.model_copy(update={"path": self.path(p.path), "error": self.text(p.error, known=[p.path])}) for p in items]


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


@functools.lru_cache(maxsize=4096)
def _relative_text(message: str, roots: tuple[str, ...], known: tuple[str, ...]) -> str:
    """The message with its absolute paths relative to their root, or bare (memoised: a status page
    lists the same reasons on every read)."""
    for path in known:
        if path and os.path.isabs(local_path(path)) and path in message:
            message = message.replace(path, _relative(path, roots))

    def shown(match: re.Match) -> str:
        token = match.group(0)
        path = _as_path(token.rstrip(_TRAILING))
        if path.strip("/") == "":
            return token
        return _relative(path, roots) + token[len(token.rstrip(_TRAILING)) :]

    return _ABSOLUTE.sub(shown, message)


def _as_path(token: str) -> str:
    """A path as a message spells it, as a plain absolute path: `file:/x`, `file:///x` and `~/x`
    (the spellings a manifest line may use) name the same file as `/x` and its home's `x`."""
    if token.startswith("file:"):
        return "/" + token.removeprefix("file:").lstrip("/")
    if token.startswith("~"):
        return os.path.expanduser(token)
    return token


@functools.lru_cache(maxsize=64)
def _roots(roots: tuple[str, ...]) -> list[str]:
    """The configured roots resolved once per server (each is a few file system calls)."""
    return resolved_roots(roots)


def view_of(state, request: Request) -> PathView:
    """How this request is shown server paths: absolute with a valid key, relative otherwise."""
    return PathView(key_accepted(state, request), _roots(tuple(str(r) for r in state.settings.library_roots)))


async def path_view(request: Request, state: State) -> PathView:
    return view_of(state, request)


Viewer = Annotated[PathView, Depends(path_view)]
