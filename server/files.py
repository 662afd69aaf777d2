"""A file response over a descriptor the server opened and checked (`library.open_indexed`), with the
HTTP caching and range rules a browser player relies on.

Starlette's `FileResponse` reopens its path when it sends; here the bytes come from the descriptor
that passed the check, so a file swapped in between is never read. On top of it, RFC 9110:
- `If-None-Match` with the file's ETag (or `*`) answers 304 with no body;
- a `Range` header that cannot be parsed, or names another unit, is ignored (200, the whole file)
  rather than a 400 (RFC 9110 §14.2: a server MAY ignore Range; a player then gets the file), and a
  416 is only for ranges none of which is there (`_parse_range_header`);
- HEAD gets the headers of the GET (the route allows it);
- a range that starts past the end is a 416 with `Content-Range: bytes */N` and, as every other
  error, a JSON `{"detail": ...}` (Starlette's was an empty text/plain body);
- its name is given twice in `Content-Disposition` (`content_disposition`): `filename=` in ASCII for
  clients that know no other, `filename*=` in UTF-8 where the name needs it (RFC 6266 §4.3).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import quote

import anyio
from starlette.datastructures import Headers
from starlette.responses import FileResponse, JSONResponse, RangeNotSatisfiable, Response
from starlette.types import Receive, Scope, Send

from .library import IndexedFile

__all__ = ["IndexedFileResponse", "content_disposition", "etag_matches"]

# how uvloop refuses a write to a transport already closed (asyncio's own transports drop such writes)
TRANSPORT_CLOSED = "unable to perform operation on"
log = logging.getLogger("vidsearch.server")

# int-range (first-last, first-) or suffix-range; a position of more than 18 digits (an exabyte) is no file's:
# the header is ignored (Python's int() refuses strings of over 4,300 digits, which was a 500)
_RANGE_SPEC = re.compile(r"([0-9]{1,18})-([0-9]{0,18})|-([0-9]{1,18})", re.ASCII)


def content_disposition(kind: str, name: str) -> str:
    """`inline` or `attachment` with the file's name: `filename="..."` with what is not printable
    ASCII (and `"`, `\\`, `%`, `;`) as `_`, which every client reads; and, where that changed the name,
    `filename*=utf-8''...` with the name itself, which a client that knows it prefers. Starlette gave a
    non-ASCII name only as `filename*=`, which some clients (and older download tools) ignore."""
    plain = re.sub(r'[^\x20-\x7e]|["\\%;]', "_", name)
    if plain == name:
        return f'{kind}; filename="{name}"'
    return f"{kind}; filename=\"{plain}\"; filename*=utf-8''{quote(name, safe='')}"


def etag_matches(header: str, etag: str) -> bool:
    """Weak comparison, as If-None-Match uses (RFC 9110 §13.1.2)."""
    if header.strip() == "*":
        return True
    strip = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == strip for tag in header.split(","))


class IndexedFileResponse(FileResponse):
    """Streams an `IndexedFile` (and closes it once sent) with ranges, ETags and HEAD."""

    def __init__(self, file: IndexedFile, media_type: str, headers: dict[str, str] | None = None):
        self.file = file
        headers = {**(headers or {}), "Content-Disposition": content_disposition("inline", file.name)}  # Starlette's only if unset
        super().__init__(file.proc_path, media_type=media_type, headers=headers, filename=file.name, stat_result=file.stat)

    @classmethod
    def _parse_range_header(cls, http_range: str, file_size: int) -> list[tuple[int, int]]:
        """The byte ranges to send ([] for the whole file, 200), by RFC 9110 §14.1-14.2 (Starlette's read
        `bytes=--5` as a range past the end, a 416, and `bytes=0-10,99999-` as a 416 though its first
        range is there): a header that is not a valid `bytes` ranges-specifier is ignored (200); one
        whose ranges all start past the end (or ask for a suffix of 0 bytes) is a 416; otherwise the
        satisfiable ranges are sent and the others left out."""
        units, eq, specs = http_range.partition("=")
        if not eq or units.strip().lower() != "bytes":
            return []  # another unit, or no ranges-specifier: ignored
        parts = [p.strip() for p in specs.split(",")]
        parts = [p for p in parts if p]  # a list may hold empty elements (RFC 9110 §5.6.1)
        if not parts or len(parts) > cls.max_ranges:
            return []
        ranges = []
        for part in parts:
            spec = _RANGE_SPEC.fullmatch(part)
            if spec is None:
                return []  # malformed (`--5`, `1_0-2`, `5-2`): the whole header is ignored
            first, last, suffix = spec.groups()
            if suffix is not None:
                if int(suffix) > 0 and file_size > 0:
                    ranges.append((max(file_size - int(suffix), 0), file_size))
            elif last and int(last) < int(first):
                return []
            elif int(first) < file_size:
                ranges.append((int(first), min(int(last) + 1, file_size) if last else file_size))
        if not ranges:
            raise RangeNotSatisfiable(file_size)
        if len(ranges) == 1:
            return ranges
        ranges.sort()  # overlapping or touching ranges are sent as one (as Starlette merged them)
        merged = [ranges[0]]
        for start, end in ranges[1:]:
            if start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], end))
            else:
                merged.append((start, end))
        return merged

    def _unsatisfiable(self, scope: Scope) -> Response | None:
        """The JSON 416 for a Range that starts past the end, where FileResponse would use the range
        (GET or HEAD, an If-Range that matches); None otherwise."""
        headers = Headers(scope=scope)
        http_range, if_range = headers.get("range"), headers.get("if-range")
        if http_range is None or scope["method"].upper() not in ("GET", "HEAD"):
            return None
        if if_range is not None and not self._should_use_range(if_range):  # the whole file, 200
            return None
        try:
            self._parse_range_header(http_range, self.file.stat.st_size)
        except RangeNotSatisfiable as exc:
            return JSONResponse({"detail": f"range not satisfiable: the file is {exc.max_size} bytes"}, status_code=416,
                                headers={"Content-Range": f"bytes */{exc.max_size}"})  # fmt: skip
        return None

    @asynccontextmanager
    async def _open_file(self) -> AsyncIterator[anyio.AsyncFile[bytes]]:
        file = anyio.wrap_file(os.fdopen(os.dup(self.file.fd), "rb"))
        try:
            await file.seek(0)
            yield file
        finally:
            with anyio.CancelScope(shield=True):
                await file.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            match = Headers(scope=scope).get("if-none-match")
            if match is not None and etag_matches(match, self.headers["etag"]):
                keep = {k: self.headers[k] for k in ("etag", "last-modified", "cache-control") if k in self.headers}
                return await Response(status_code=304, headers=keep)(scope, receive, send)
            refused = self._unsatisfiable(scope)
            if refused is not None:
                return await refused(scope, receive, send)
            # never "pathsend": a server would reopen the path, which is what this class exists to avoid
            extensions = {k: v for k, v in scope.get("extensions", {}).items() if k != "http.response.pathsend"}
            await super().__call__({**scope, "extensions": extensions}, receive, send)
        except RuntimeError as exc:
            if not str(exc).startswith(TRANSPORT_CLOSED):
                raise
            # the connection was dropped under the answer (send_timeout, or the client reset it) and
            # uvicorn did not say so: it marks only the newest request of a pipelined connection as
            # disconnected (connections.py marks them all under `vidsearch serve`; this is for a server
            # without it). The client is gone: one line, not "Exception in ASGI application" and a traceback
            log.info("stopped sending %s to %s: the connection was closed", self.file.name, _client(scope))
        finally:
            self.file.close()


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "a client"
