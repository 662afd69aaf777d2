"""A small typed Python client for the vidsearch HTTP API, over a socket or in-process.

    from vidsearch.client import VidsearchClient
    with VidsearchClient("http://127.0.0.1:8080") as vs:
        for r in vs.search("a dog catches a red frisbee").results:
            print(r.video.title, r.moments[0].start if r.moments else None)

`AppTransport` reaches an app in the same process without a socket (as datasette's internal client
does), so the UI's local mode and `vidsearch search --db` speak to the very same API a server
would serve (`vidsearch.server.local_client` builds one).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from .api_models import IndexStatus, JobInfo, LikeQuery, SearchRequest, SearchResponse, VideoInfo, VideoList
from .timeline_export import ExportRequest

LOCAL_URL = "http://in-process"


class AppTransport(httpx.BaseTransport):
    """Requests to an ASGI app in this process, no socket.

    httpx's `ASGITransport` speaks ASGI but only to an async client; this runs it on an event loop of
    its own, in a daemon thread (an embedding process, Streamlit, never waits for it at exit), and
    runs the app's lifespan there before the first request, as a server would. Responses are read
    whole, as a server's would be by the client (media included).
    """

    def __init__(self, app):
        self.app = app
        self._asgi = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lifespan = None
        self._lock = threading.Lock()

    @property
    def started(self) -> bool:
        return self._loop is not None

    def start(self) -> asyncio.AbstractEventLoop:
        """Start the loop and the app's lifespan (once; later calls return at once)."""
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="vidsearch-in-process-app", daemon=True).start()
                lifespan = self.app.router.lifespan_context(self.app)
                try:
                    asyncio.run_coroutine_threadsafe(lifespan.__aenter__(), loop).result()
                except BaseException:
                    loop.call_soon_threadsafe(loop.stop)
                    raise
                self._loop, self._lifespan = loop, lifespan
        return self._loop

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        loop = self.start()
        body = request.read()
        return asyncio.run_coroutine_threadsafe(self._send(request, body), loop).result()

    async def _send(self, request: httpx.Request, body: bytes) -> httpx.Response:
        response = await self._asgi.handle_async_request(httpx.Request(request.method, request.url, headers=request.headers, content=body))
        content = b"".join([part async for part in response.stream])
        return httpx.Response(response.status_code, headers=response.headers, content=content, request=request)

    def close(self) -> None:
        with self._lock:
            loop, self._loop = self._loop, None
            if loop is not None:
                asyncio.run_coroutine_threadsafe(self._lifespan.__aexit__(None, None, None), loop).result()
                loop.call_soon_threadsafe(loop.stop)


class ApiError(RuntimeError):
    """The server answered with an error; `status` and `detail` say which and why."""

    def __init__(self, status: int, detail: str):
        self.status, self.detail = status, detail
        super().__init__(f"HTTP {status}: {detail}")


def _base_url(url: str) -> str:
    """The server's root URL; ValueError without a scheme ("localhost:8080" reads as the scheme
    `localhost`). A URL ending in the API's `/v1` is taken as the root it is under."""
    if "://" not in url:
        raise ValueError(f"the API URL {url!r} needs its scheme: e.g. http://{url}")
    url = url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def _segment(ident: str, what: str = "id") -> str:
    """`ident` as one URL path segment: every reserved character escaped (`../jobs/x`, `?x`, `#x` stay in
    the segment and name no other route), `.` and `..` too (a URL would resolve them away). ValueError
    for an empty id or one that is not a string."""
    if not isinstance(ident, str):
        raise TypeError(f"the {what} must be a string, not {type(ident).__name__}")
    if not ident:
        raise ValueError(f"the {what} is empty")
    escaped = quote(ident, safe="")
    return escaped.replace(".", "%2E") if escaped in (".", "..") else escaped


def _excerpt(resp: httpx.Response, limit: int = 200) -> str:
    text = " ".join(resp.text.split())
    return text if len(text) <= limit else text[:limit] + "…"


def _json(resp: httpx.Response) -> Any:
    """The answer's JSON, or ApiError (its status, its type and the start of its body) when it is not JSON
    (a proxy's error page, a redirect, the UI's HTML)."""
    try:
        return resp.json()
    except ValueError:
        kind = resp.headers.get("content-type", "no content type")
        asked = f"{resp.request.method} {resp.request.url.path}"
        raise ApiError(resp.status_code, f"the answer to {asked} is not JSON ({kind}): {_excerpt(resp) or '(empty)'}") from None


def _image_upload(image: bytes | bytearray | memoryview | str | os.PathLike) -> tuple[str, bytes]:
    """(file name, bytes) to upload for `search(image=...)`: the picture's bytes, a path to it (str or
    PathLike), or its base64 (a `data:` URL too) as a string that names no file."""
    expected = "give the picture's bytes, a path to a file, or its base64"
    if isinstance(image, (bytes, bytearray, memoryview)):
        return "image", bytes(image)
    if isinstance(image, os.PathLike):
        path = Path(image)
        if not path.is_file():
            raise ValueError(f"image: {str(path)!r} names no file ({expected})")
        return path.name, path.read_bytes()
    if not isinstance(image, str):
        raise TypeError(f"image: {expected}, not {type(image).__name__}")
    try:
        if Path(image).is_file():
            return Path(image).name, Path(image).read_bytes()
    except (OSError, ValueError):  # too long a name for the file system, a NUL: no path
        pass
    data = "".join(image.split())
    if data.startswith("data:") and "," in data:
        data = data.split(",", 1)[1]
    try:
        decoded = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if decoded and (len(data) >= 64 or image.startswith("data:")):  # a picture's base64 is long; a short string is a name
        return "image", decoded
    shown = image if len(image) <= 80 else image[:80] + "…"
    raise ValueError(f"image: {shown!r} names no file and is no picture's base64 ({expected})")


class ApiTimeout(ApiError):
    """The server took longer than the client's `timeout` to answer (it may be busy, not down: a long
    clip's encode, a cold model); status 0, as for a server that cannot be reached."""


def _clean_key(api_key: str | None) -> str | None:
    """The key as the server compares it: surrounding whitespace dropped (a key read from a file or an
    env file keeps its newline, which httpx refused as an illegal header and the error printed the
    key); ValueError, without the key, for one with whitespace or control characters inside."""
    if api_key is None:
        return None
    key = api_key.strip()
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in key):
        raise ValueError("api_key holds whitespace or control characters inside it (not shown); check where it was read from")
    if not key.isascii():  # an HTTP header cannot carry it: it failed at the first request, as a UnicodeEncodeError
        raise ValueError("api_key holds characters outside ASCII (not shown); server keys are ASCII")
    return key or None


# transport errors worth another try in a polling loop: the server restarting or a proxy reconnecting
_RETRYABLE = (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError, httpx.PoolTimeout)
_RETRY_STATUS = (502, 504)


def _passing(resp: httpx.Response) -> bool:
    """An answer that says "not now" rather than "no": a proxy's 502/504 while the server restarts, or a
    503 with Retry-After (busy). A 503 without it is this API's lasting "no index at ...": not retried."""
    return resp.status_code in _RETRY_STATUS or (resp.status_code == 503 and "retry-after" in resp.headers)


class VidsearchClient:
    def __init__(self, base_url: str, api_key: str | None = None, timeout: float | None = 60.0, transport: httpx.BaseTransport | None = None):
        if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0 and timeout == timeout):
            # 0 made every connect fail at once with "Operation now in progress", as if the server were down
            raise ValueError(f"timeout must be a positive number of seconds (or None to wait as long as it takes), not {timeout!r}")
        api_key = _clean_key(api_key)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = _base_url(base_url)
        self.transport = transport
        self._secret = api_key
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout, transport=transport)

    @property
    def in_process(self) -> bool:
        return isinstance(self.transport, AppTransport)

    def __enter__(self) -> VidsearchClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()  # closes the transport too (an in-process app runs its shutdown)

    def _call(self, method: str, path: str, *, retry_for: float = 0.0, **kw) -> httpx.Response:
        """One request; ApiError for an error answer, ApiTimeout when it took past the timeout, ApiError
        with status 0 when the server cannot be reached. `retry_for` (seconds; idempotent requests in
        polling helpers only): a refused or dropped connection and a 502/503/504 are tried again with
        backoff until then (a 503 only with Retry-After), so a server restart does not end `wait_for_job` or `iter_videos`."""
        deadline, pause = time.monotonic() + retry_for, 0.25
        while True:
            error = None
            try:
                resp = self._http.request(method, path, **kw)
                again = _passing(resp)
            except httpx.TransportError as exc:  # timeouts included
                error, again = exc, isinstance(exc, _RETRYABLE)
            if not (again and time.monotonic() + pause < deadline):
                break
            time.sleep(pause)
            pause = min(2 * pause, 2.0)
        if isinstance(error, httpx.TimeoutException):
            raise ApiTimeout(0, f"the search API at {self.base_url} did not answer {method} {path} within "
                                f"{self._http.timeout.read:g} s (busy or down; a longer timeout may help)") from None  # fmt: skip
        if error is not None:
            raise ApiError(0, f"cannot reach the search API at {self.base_url}: {self._scrubbed(error)}") from None
        if resp.status_code >= 400:
            try:
                body = resp.json()
            except ValueError:
                body = None
            detail = body.get("detail") if isinstance(body, dict) and body.get("detail") is not None else _excerpt(resp)
            raise ApiError(resp.status_code, detail if isinstance(detail, str) else json.dumps(detail)[:1000])
        return resp

    def _scrubbed(self, exc: Exception) -> str:
        """An error's text without the API key (httpx quotes a header it refuses)."""
        text = str(exc)
        return text.replace(self._secret, "***") if self._secret else text

    def search(self, query: str | None = None, *, image: bytes | str | os.PathLike | None = None, **options: Any) -> SearchResponse:
        """Search by words, by an example picture, by a moment (`like`), or any mix of them.

        `image` is the picture's bytes, a file path (str or PathLike), or its base64 (a `data:` URL
        too) as a string naming no file; it is uploaded as multipart/form-data (no base64 inflation).
        ValueError for a string or path that names no file (and is no base64), TypeError for another
        type. `options` are
        SearchRequest fields: like (a LikeQuery or its dict), query_weights, top_k, group_by,
        channels, filters, min_score, cursor."""
        if image is None:
            body = SearchRequest(query=query, **options).model_dump(exclude_none=True, mode="json")
            return SearchResponse.model_validate(_json(self._call("POST", "/v1/search", json=body)))
        name, data = _image_upload(image)
        # validated here as the server will (an empty `image` stands for the uploaded part)
        body = SearchRequest(query=query, image="", **options).model_dump(exclude={"image"}, exclude_none=True, mode="json")
        form = {"request": json.dumps(body)}
        return SearchResponse.model_validate(_json(self._call("POST", "/v1/search", data=form, files={"image": (name, data)})))

    def more_like(self, video_id: str, start: float = 0.0, end: float | None = None, *, include_source: bool = False,
                  **options: Any) -> SearchResponse:  # fmt: skip
        """Moments of other videos like `start`-`end` of this one (its stored vectors; nothing re-encoded);
        `include_source`: moments of this video too. `options` as for `search` (a `query` in words
        composes with it)."""
        return self.search(like=LikeQuery(video_id=video_id, start=start, end=end, include_source=include_source), **options)

    def videos(self, limit: int = 100, offset: int = 0, cursor: str | None = None, *, retry_for: float = 0.0) -> VideoList:
        """One page of the indexed videos, in title order: from `offset`, or from `cursor` (the previous
        page's `next_cursor`). `iter_videos` follows the cursors for you. `retry_for`: seconds to keep
        trying while the server cannot be reached (restarting)."""
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if cursor is not None:
            params["cursor"] = cursor
        return VideoList.model_validate(_json(self._call("GET", "/v1/videos", params=params, retry_for=retry_for)))

    def iter_videos(self, page_size: int = 500, retry_for: float = 30.0) -> Iterator[VideoInfo]:
        """Every indexed video, page by page (each page's `next_cursor` asks for the next; a cursor
        outlives a server restart, which each page waits out for up to `retry_for` seconds)."""
        cursor = None
        while True:
            page = self.videos(limit=page_size, cursor=cursor, retry_for=retry_for)
            yield from page.videos
            if page.next_cursor is None or not page.videos:
                return
            cursor = page.next_cursor

    def video(self, video_id: str) -> VideoInfo:
        return VideoInfo.model_validate(_json(self._call("GET", f"/v1/videos/{_segment(video_id, 'video id')}")))

    def delete_video(self, video_id: str) -> dict:
        return _json(self._call("DELETE", f"/v1/videos/{_segment(video_id, 'video id')}"))

    def media_url(self, video_id: str) -> str:
        return f"{self.base_url}/v1/videos/{_segment(video_id, 'video id')}/media"

    def _media_call(self, video_id: str, headers: dict | None = None) -> httpx.Response:
        """GET a video's media, following object storage's redirect to its presigned URL with a plain
        client: without this client's key, and outside an in-process app (which would be asked for the
        bucket's URL as one of its own routes)."""
        resp = self._call("GET", f"/v1/videos/{_segment(video_id, 'video id')}/media", headers=headers)
        if resp.is_redirect and resp.headers.get("location"):
            request = httpx.Request("GET", resp.headers["location"], headers=headers)  # built alone: no Authorization
            try:
                if isinstance(self.transport, AppTransport):
                    with httpx.Client(timeout=self._http.timeout, follow_redirects=True) as plain:
                        resp = plain.send(request)
                else:
                    resp = self._http.send(request, follow_redirects=True)
            except httpx.TransportError as exc:
                raise ApiError(0, f"cannot reach the video's storage: {exc}") from exc
            if resp.status_code >= 400:
                raise ApiError(resp.status_code, f"the video's storage answered {resp.status_code}: {_excerpt(resp)}")
        return resp

    def media(self, video_id: str) -> tuple[bytes, str]:
        """The whole file and its media type (a client over a socket would rather stream `media_url`).
        A video in object storage is answered with a redirect to a presigned URL, which is followed
        (without this client's key: httpx drops `Authorization` on a redirect to another host)."""
        resp = self._media_call(video_id)
        return resp.content, resp.headers.get("content-type", "application/octet-stream")

    def media_size(self, video_id: str) -> int:
        """The file's size in bytes, from a one-byte range request (following object storage's redirect)."""
        resp = self._media_call(video_id, headers={"Range": "bytes=0-0"})
        total = resp.headers.get("content-range", "").rpartition("/")[2]
        return int(total) if total.isdigit() else len(resp.content)

    def thumbnail(self, video_id: str, t: float = 0.0, width: int = 320) -> bytes:
        return self._call("GET", f"/v1/videos/{_segment(video_id, 'video id')}/thumbnail", params={"t": t, "width": width}).content

    def clip(self, video_id: str, start: float, end: float) -> tuple[bytes, str]:
        """The moment [start, end] as a playable file, and its media type."""
        resp = self._call("GET", f"/v1/videos/{_segment(video_id, 'video id')}/clip", params={"start": start, "end": end})
        return resp.content, resp.headers.get("content-type", "video/mp4")

    def export(self, items: list[dict], format: str = "otio", padding: float = 0.0, fps: float = 25.0, title: str | None = None) -> str:
        """Moments ({video_id, start, end, name?}) as an OpenTimelineIO (`otio`) or CMX 3600 (`edl`) file's text.
        The options are checked here as the server will (a pydantic ValidationError, as `search` raises):
        fps from 1 to 240 (an EDL's one of 23.976, 24, 25, 29.97, 30, 47.952, 48, 50, 59.94, 60)."""
        req = ExportRequest(items=items, format=format, padding=padding, fps=fps, **({"title": title} if title else {}))
        body = req.model_dump(mode="json", exclude_none=True)
        return self._call("POST", "/v1/export", json=body).text

    def create_job(self, paths: list[str], kind: str = "index") -> JobInfo:
        return JobInfo.model_validate(_json(self._call("POST", "/v1/jobs", json={"kind": kind, "paths": paths})))

    def job(self, job_id: str) -> JobInfo:
        return JobInfo.model_validate(_json(self._call("GET", f"/v1/jobs/{_segment(job_id, 'job id')}")))

    def cancel_job(self, job_id: str) -> JobInfo:
        """Stop a queued or running job (what it committed stays; a later job resumes from there)."""
        return JobInfo.model_validate(_json(self._call("DELETE", f"/v1/jobs/{_segment(job_id, 'job id')}")))

    def jobs(self, limit: int = 50, state: str | None = None) -> list[JobInfo]:
        """Jobs, newest first: at most `limit` (the server keeps the newest 200 finished ones), of one
        `state` (queued, running, succeeded, failed, cancelled) where given."""
        params: dict[str, Any] = {"limit": limit, **({"state": state} if state else {})}
        return [JobInfo.model_validate(j) for j in _json(self._call("GET", "/v1/jobs", params=params))]

    def wait_for_job(self, job_id: str, timeout: float = 600.0, poll: float = 0.5) -> JobInfo:
        """The job once it has finished (succeeded, failed or cancelled: check `state`); TimeoutError
        naming the job and its state when it is still queued or running after `timeout` seconds (it
        was returned as it was, and `wait_for_job(id).summary` printed None)."""
        deadline = time.monotonic() + timeout
        while True:
            # a server restarting while the job runs (its record lives in the index) is waited out
            path = f"/v1/jobs/{_segment(job_id, 'job id')}"
            job = JobInfo.model_validate(_json(self._call("GET", path, retry_for=max(0.0, deadline - time.monotonic()))))
            if job.state in ("succeeded", "failed", "cancelled"):
                return job
            if time.monotonic() > deadline:
                done = f"{job.progress.done}/{job.progress.total} videos" if job.progress.total else "no video finished yet"
                raise TimeoutError(f"job {job.id} is still {job.state} after {timeout:g} s ({done}); wait longer, or "
                                   f"cancel it with cancel_job({job.id!r})")  # fmt: skip
            time.sleep(poll)

    def ready(self) -> dict:
        return _json(self._call("GET", "/readyz"))

    def status(self) -> IndexStatus:
        """What is indexed, the model, every failed file, and whether searches are answered."""
        return IndexStatus.model_validate(_json(self._call("GET", "/v1/index")))

    def healthy(self) -> bool:
        try:
            return self._call("GET", "/healthz").status_code == 200
        except ApiError:
            return False
