"""Library roots and indexed files: what the server may index, and the one file it may serve per video.

A server reachable over a network must not become a way to read its own disk. Two rules:

- **Jobs index only under library roots** (`library_roots`). A job path must be absolute, and once
  resolved (symbolic links and `..` followed) must lie under a root; the resolved path is what the
  indexer gets, so a link swapped between this check and the walk cannot lead elsewhere. No roots
  configured means no jobs over HTTP (the CLI, and the UI's in-process app, index what the operator
  names). An absolute path never starts with `-`, so no path can be read as an option by anything that
  builds a command line from it.
- **Media is the file that was indexed, still.** A video's file is opened by its resolved path, without
  following a symbolic link in the last component (`O_NOFOLLOW`), and served only if that open file is
  a regular file whose size and modification time are the ones the index recorded (the `files` table),
  and, when roots are configured, it lies under one. A file replaced since (by a link to `/etc/shadow`,
  or by another video) is a 409 that says to reindex, never the new bytes. Everything after the check
  reads the opened descriptor (the response, ffmpeg for thumbnails), so a swap after the check changes
  nothing.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from vidsearch.indexer.discover import resolved_roots, under as _under  # one rule for what lies under a root
from vidsearch.store import Store, local_path, readable_name, sql_in_list

__all__ = ["IndexedFile", "PathRefused", "check_job_paths", "open_indexed", "resolved_roots"]

NAME_MAX = 255  # bytes in one path component (Linux, macOS)
PATH_MAX = 4096  # bytes in a whole path


class PathRefused(Exception):
    """A path the server will not index or serve, with the HTTP status that says why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status



def _check_shape(path: str) -> None:
    """Malformed paths are the client's error (422), found before the file system is asked."""
    if not path.strip():
        raise PathRefused(422, "empty path: name a folder, file or manifest under a library root")
    if "\x00" in path:
        raise PathRefused(422, f"path {path!r} contains a NUL byte")
    if not os.path.isabs(path):
        raise PathRefused(422, f"relative path {path!r}: give an absolute path under a library root")
    try:
        raw = os.fsencode(path)
    except UnicodeEncodeError as exc:  # a lone surrogate, which no file name holds (the app refuses such bodies first: bodies.py)
        raise PathRefused(422, f"path {path[:200]!r} is not valid text (a lone surrogate)") from exc
    if len(raw) > PATH_MAX or any(len(part) > NAME_MAX for part in raw.split(b"/")):
        raise PathRefused(422, f"path {path[:80]!r}... is too long (a name over {NAME_MAX} bytes or a path over {PATH_MAX})")


def check_job_paths(paths: list[str], roots: list[str]) -> list[str]:
    """The resolved paths a job may index, or PathRefused (403 outside the roots, 422 malformed, 400 missing)."""
    if not roots:
        raise PathRefused(403, "jobs are disabled on this server: no library roots are configured (set library_roots / VIDSEARCH_LIBRARY_ROOTS)")
    out, missing = [], []
    for path in paths:
        _check_shape(path)
        try:
            real = os.path.realpath(path)
            exists = os.path.exists(real)
        except OSError as exc:  # a loop of links, a name too long once resolved
            raise PathRefused(422, f"path {path[:200]!r} cannot be resolved: {exc.strerror or exc}") from exc
        if not _under(real, roots):
            raise PathRefused(403, f"path {path[:200]!r} is outside the server's library roots")
        if not exists:
            missing.append(path)
        out.append(real)
    if missing:
        raise PathRefused(400, f"path(s) not found on the server: {', '.join(missing[:5])}")
    return out


@dataclass(frozen=True)
class IndexedFile:
    """An open, checked file descriptor of an indexed video; `proc_path` names it for a child process
    that inherits it (`pass_fds`)."""

    fd: int
    stat: os.stat_result
    name: str

    @property
    def proc_path(self) -> str:
        return f"/proc/self/fd/{self.fd}" if os.path.isdir("/proc/self/fd") else f"/dev/fd/{self.fd}"

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> IndexedFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_RECORDED: dict[tuple[str, int, str], list[dict]] = {}
_RECORDED_MAX = 4096


def _recorded(store: Store, video_id: str) -> list[dict]:
    """The `files` rows that point at this video and were indexed (path, size, mtime), remembered per
    version of the `files` table: the query costs ~20 ms on a busy 2-core machine, the version ~0.3 ms,
    and a page of results asks for a thumbnail of each video."""
    files = store.table("files")
    key = (str(store.path), files.version, video_id)
    rows = _RECORDED.get(key)
    if rows is None:
        where = f"video_id IN {sql_in_list([video_id])} AND status = 'indexed'"
        rows = files.search().where(where).select(["path", "size", "mtime"]).limit(None).to_arrow().to_pylist()
        if len(_RECORDED) >= _RECORDED_MAX:
            _RECORDED.clear()
        _RECORDED[key] = rows
    return rows


def _open_checked(path: str, size: int, mtime: float, roots: list[str]) -> IndexedFile:
    path = local_path(path)  # a name that is not valid UTF-8 is stored as a file:// URI (store.path_key)
    real = os.path.realpath(path)
    if roots and not _under(real, roots):
        raise PathRefused(403, "the file is outside the server's library roots")
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            raise PathRefused(404, "the file is no longer on the server; reindex") from exc
        if exc.errno == errno.ELOOP:
            raise PathRefused(409, "file changed since it was indexed (it is now a symbolic link): reindex") from exc
        raise PathRefused(409, f"the file cannot be opened ({exc.strerror}): reindex") from exc
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_size != size or st.st_mtime != mtime:
        os.close(fd)
        raise PathRefused(409, "file changed since it was indexed: reindex")
    os.set_blocking(fd, True)
    return IndexedFile(fd, st, readable_name(os.path.basename(path)))


def open_indexed(store: Store, row: dict, roots: list[str]) -> IndexedFile:
    """The indexed file of a `videos` row, opened and checked (see the module docstring); the caller
    closes it (`close()`, or a `with` block). Tries the row's path first, then the other paths the same
    content was indexed under; PathRefused with the first path's reason when none serves."""
    recorded = sorted(_recorded(store, row["video_id"]), key=lambda r: r["path"] != row["path"])
    if not recorded:
        raise PathRefused(404, f"video {row['video_id']} has no indexed file on the server; reindex")
    first: PathRefused | None = None
    for rec in recorded:
        try:
            return _open_checked(rec["path"], rec["size"], rec["mtime"], roots)
        except PathRefused as exc:
            first = first or exc
    assert first is not None
    raise PathRefused(first.status, f"video {row['video_id']}: {first}")
