"""Where the UI gets its answers: the search API, over HTTP or in this process.

The pages only ever talk to the `Backend`, and the backend only ever talks to the API, through
`VidsearchClient`: in API mode over HTTP, in local mode over an in-process transport of the very
same app (`vidsearch.server.local_client`: the API without a socket). So there is one backend, the
answers are the API's own pydantic models, and the UI imports neither the search engine nor the
encoders. Every failure reaches a page as a `BackendError` whose `kind` picks the message (an
unreachable API, an empty index, a bad query...), never as a stack trace.

What differs is only where the browser gets bytes from. In API mode the browser fetches media and
thumbnails from the API itself (range requests make the player seekable, and the API caches the
JPEGs); in local mode no port serves them but Streamlit's, so the page gets their bytes from the
in-process API and hands them to Streamlit. With a key (VIDSEARCH_API_KEY), the URLs the browser
gets are signed with it, so a server that wants a key for reads (`--read-auth`) serves them too.
"""

from __future__ import annotations

import base64
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from vidsearch.api_models import JobInfo, SearchRequest, SearchResponse, VideoInfo
from vidsearch.client import ApiError, VidsearchClient
from vidsearch.config import load_settings
from vidsearch.objectstore import is_uri
from vidsearch.signing import sign_query
from vidsearch.index_lock import writer_busy

ErrorKind = Literal["unreachable", "empty", "bad_query", "auth", "refused", "not_found", "unavailable"]
CATALOG_LIMIT = 20_000  # videos read for facets and totals; larger libraries show the first ones


class BackendError(Exception):
    """A failure the page can explain: `kind` picks the message style, `hint` says what to do."""

    def __init__(self, kind: ErrorKind, message: str, hint: str | None = None):
        super().__init__(message)
        self.kind, self.message, self.hint = kind, message, hint


@dataclass(frozen=True)
class UiConfig:
    """Where to search, read from the environment (`vidsearch ui` sets it for the app process)."""

    api_url: str | None
    db: Path
    api_key: str | None = None
    public_api_url: str | None = None  # the API as the *browser* reaches it, when that differs
    max_image_mb: float = 10.0  # the largest picture a search takes (the settings' max_image_mb)

    @classmethod
    def from_env(cls) -> UiConfig:
        """`VIDSEARCH_API_URL` (empty: local mode), `VIDSEARCH_DB`, `VIDSEARCH_API_KEY`, and
        `VIDSEARCH_PUBLIC_API_URL` for a browser that reaches the API under another name (a proxy,
        a container network). The rest of the settings (TOML, model) come from `load_settings`."""
        settings = load_settings()
        return cls(
            api_url=(settings.api_url or "").strip().rstrip("/") or None,
            db=Path(settings.db),
            api_key=os.environ.get("VIDSEARCH_API_KEY") or None,
            public_api_url=(os.environ.get("VIDSEARCH_PUBLIC_API_URL") or "").strip().rstrip("/") or None,
            max_image_mb=settings.max_image_mb,
        )

    @property
    def mode(self) -> Literal["api", "local"]:
        return "api" if self.api_url else "local"

    def describe(self) -> str:
        return f"search API at {self.api_url}" if self.api_url else f"local index {self.db}"


@dataclass
class LibraryStats:
    """What the library page shows. Fields a mode cannot know are None (shown as "n/a")."""

    videos: int
    hours: float
    model: str | None
    fingerprint: str | None
    files: int | None = None
    failed: int | None = None
    failures: list[dict] = field(default_factory=list)
    warnings: list[dict] = field(default_factory=list)  # indexed with a part lost: {path, error}
    excluded: list[str] = field(default_factory=list)  # deleted by a user, kept out of later runs
    index_version: str | None = None
    not_ready: str | None = None  # why searches cannot be answered yet, if they cannot


@dataclass
class Facets:
    """What the sidebar filters offer: the duration range and each metadata field's values."""

    total: int
    min_duration: float = 0.0
    max_duration: float = 0.0
    metadata: dict[str, list] = field(default_factory=dict)

    @classmethod
    def of(cls, videos: list[VideoInfo], total: int | None = None, max_values: int = 50) -> Facets:
        durations = [v.duration for v in videos]
        fields: dict[str, set] = {}
        for v in videos:
            for k, val in (v.metadata or {}).items():
                if isinstance(val, (str, int, float, bool)):
                    fields.setdefault(k, set()).add(val)
        metadata = {
            k: sorted(vals, key=lambda x: (str(type(x)), x))
            for k, vals in sorted(fields.items())
            if 1 < len(vals) <= max_values or (len(vals) == 1 and len(videos) > 1)
        }
        return cls(
            total=len(videos) if total is None else total,
            min_duration=min(durations, default=0.0),
            max_duration=max(durations, default=0.0),
            metadata=metadata,
        )


def picture_too_large(detail: str) -> str:
    """The API's 413 in words, with the limit when the API names one (its text names its setting and
    request bodies: `... room for a base64 picture of 10 MB: max_image_mb`)."""
    pixels = re.search(r"(\d+)x(\d+) pixels; the limit is ([\d,]+) pixels", detail)
    if pixels:
        w, h, limit = pixels.groups()
        return f"This picture is too large to search with: it is {w}×{h} pixels, and the limit is {limit} pixels."
    bomb = re.search(r"\((\d+) pixels\).*the limit is ([\d,]+) pixels", detail)  # past Pillow's own limit
    if bomb:
        return f"This picture is too large to search with: it has {int(bomb.group(1)):,} pixels, and the limit is {bomb.group(2)} pixels."
    limit = re.search(r"the limit is ([\d,]+) pixels", detail)
    if limit:
        return f"This picture is too large to search with: the limit is {limit.group(1)} pixels."
    size = re.search(r"(?:limit is|limit of|picture of) ([\d.]+) MB", detail)
    return "This picture is too large to search with" + (f": the limit is {float(size.group(1)):g} MB." if size else ".")


@dataclass(frozen=True)
class Indexing:
    """An indexing run writing to the index now (cache.indexing): what the search page says instead
    of "the index is empty" or a store error, and with results from a partial index."""

    videos: int | None  # videos in the index so far; None while it has no tables yet
    done: int | None = None  # a job's progress, when the run is a job the API lists
    total: int | None = None


def open_backend(config: UiConfig) -> Backend:
    """The backend for a config; cheap (nothing is contacted or loaded until the first call)."""
    return Backend(config)


class Backend:
    """The search API through `VidsearchClient`, over HTTP (API mode) or in-process (local mode).

    In local mode the client, and so the app with its model and index, starts on the first call
    (the page shows a spinner meanwhile: `loaded` says whether it has).
    """

    def __init__(self, config: UiConfig, timeout: float = 30.0):
        self.config = config
        self.timeout = timeout
        self.browser_url = config.public_api_url or config.api_url
        self._client: VidsearchClient | None = None
        self._lock = threading.Lock()

    @property
    def client(self) -> VidsearchClient:
        with self._lock:
            if self._client is None:
                if self.config.mode == "api":
                    try:
                        self._client = VidsearchClient(self.config.api_url, self.config.api_key, timeout=self.timeout)
                    except ValueError as exc:  # a URL without its scheme
                        raise BackendError("unreachable", f"VIDSEARCH_API_URL: {exc}", "Set it to the URL `vidsearch serve` prints.") from exc
                else:
                    # the one place the UI meets the server: to build the app it talks to. Imported here,
                    # not at the top: the server brings the search stack and torch (~5 s, ~370 MB measured),
                    # which a UI in API mode never needs.
                    from vidsearch.server import local_client

                    self._client = local_client(load_settings(db=self.config.db))
            return self._client

    @property
    def loaded(self) -> bool:
        """Whether the first call is past (in local mode it loads the model and opens the index)."""
        return self.config.mode == "api" or (self._client is not None and self._client.transport.started)

    def _error(self, exc: ApiError) -> BackendError:
        status, detail = exc.status, exc.detail
        if status == 0:
            return BackendError(
                "unreachable",
                f"Cannot reach the search API at {self.config.api_url}.",
                "Start it with `vidsearch serve`, or unset VIDSEARCH_API_URL to search a local index directly.",
            )
        if status == 403 and "key" not in detail.lower():  # the key was accepted; what it asked for is not (a path outside the roots)
            return BackendError("refused", f"The search API refused the request: {detail}")
        if status in (401, 403):
            return BackendError("auth", f"The search API refused the request: {detail}", "Set VIDSEARCH_API_KEY to a key the server accepts.")
        if status == 413:  # the API's words name its setting and body sizes: say it as a user acts on it
            return BackendError("bad_query", picture_too_large(detail), "Use a smaller picture: a screenshot, or the picture saved smaller.")
        if status in (400, 415, 422):  # 415: not a picture
            return BackendError("bad_query", detail)
        if status == 404:
            generic = detail.strip().lower() in ("", "not found")  # a route's "Not Found" says nothing more than the title
            return BackendError("not_found", "That video is not in the index (it may have been deleted or reindexed)." if generic else detail)
        if status == 503 and ("empty" in detail or "no index" in detail):
            return BackendError("empty", self._empty_message(detail), "Index some videos first (Library page, or `vidsearch index PATH`).")
        if self.config.mode == "local":
            return BackendError("unavailable", detail)
        return BackendError("unavailable", f"The search API answered {status}: {detail}")

    def _empty_message(self, detail: str) -> str:
        """An index folder that does not exist is "empty" too, but a user who mistyped `--db` must see
        the path and that nothing is there, not advice to index videos into a folder they never meant."""
        db = self.config.db
        if self.config.mode == "local" and "no index" in detail and not is_uri(str(db)) and not Path(db).exists():
            return f"There is no index at {db} (no such folder). If your videos were indexed elsewhere, start the UI with that `--db` path."
        return detail

    def _call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ApiError as exc:
            raise self._error(exc) from None

    def search(self, req: SearchRequest) -> SearchResponse:
        image = base64.b64decode(req.image) if req.image else None  # uploaded as a file, not inflated base64
        resp = self._call(self.client.search, req.query, image=image, **req.model_dump(exclude={"query", "image"}, exclude_none=True))
        if resp.index_version == "empty":  # the server has no engine: say why (empty index, bad model...)
            self._call(self.client.ready)
            raise BackendError("empty", "The index is empty.", "Index some videos first (Library page, or `vidsearch index PATH`).")
        return resp

    def catalog(self) -> tuple[list[VideoInfo], int]:
        videos: list[VideoInfo] = []
        total = 0
        while len(videos) < CATALOG_LIMIT:
            page = self._call(self.client.videos, limit=1000, offset=len(videos))
            videos += page.videos
            total = page.total
            if page.next_cursor is None or not page.videos:
                break
        return videos, total

    def writing(self) -> bool:
        """Whether an indexing run writes to the index now: the local index's write lock, or what the
        API says of its own (`/v1/index` `indexing`, or its 503 while a first build has made no tables),
        so a `reindex --rebuild` in a shell beside a server is shown as such too."""
        if self.config.mode == "local":
            return writer_busy(self.config.db)
        try:
            return bool(self.client.status().indexing)
        except ApiError as exc:
            return "indexing run is writing" in (exc.detail or "")

    def stats(self) -> LibraryStats:
        s = self._call(self.client.status)
        return LibraryStats(
            videos=s.videos,
            hours=s.hours,
            model=s.model,
            fingerprint=s.fingerprint,
            files=s.files,
            failed=s.failed,
            failures=[f.model_dump() for f in s.failures],
            warnings=[w.model_dump() for w in s.warnings],
            excluded=list(s.excluded),
            index_version=s.index_version,
            not_ready=s.not_ready,
        )

    def channels(self) -> list[str]:
        """The channels the index has, visual first (audio is fused into visual, not offered on its own)."""
        try:
            found = self._call(self.client.status).channels
        except BackendError:
            return ["visual"]
        return ["visual", *sorted(c for c in found if c not in ("visual", "audio"))]

    def media_url(self, video: VideoInfo) -> str:
        return self._signed(f"{self.browser_url}/v1/videos/{video.id}/media", video.id, "?")

    def _signed(self, url: str, video_id: str, sep: str) -> str:
        """A URL the browser may fetch without headers: signed with the UI's key when it has one (a
        server with --read-auth wants a key for media and thumbnails too; vidsearch.signing)."""
        key = self.config.api_key
        return f"{url}{sep}{sign_query(key, video_id)}" if key else url

    def media_size(self, video: VideoInfo) -> int | None:
        """Bytes of the video's file, None when it is gone (local mode)."""
        try:
            return self._call(self.client.media_size, video.id)
        except BackendError as exc:
            if exc.kind == "not_found":
                return None
            raise

    def media_bytes(self, video: VideoInfo) -> tuple[bytes, str]:
        """The file and its media type, as the API serves them (local mode)."""
        return self._call(self.client.media, video.id)

    def video(self, video_id: str) -> VideoInfo:
        return self._call(self.client.video, video_id)

    def clip_bytes(self, video: VideoInfo, start: float, end: float) -> bytes:
        """The moment as a playable file, cut by the API (for the download button)."""
        return self._call(self.client.clip, video.id, start, end)[0]

    def export_text(self, items: list[dict], fmt: str, padding: float = 0.0) -> str:
        """Moments as an edit decision list (`otio` or `edl`), written by the API."""
        return self._call(self.client.export, items, fmt, padding)

    def thumbnails(self, wanted: list[tuple[VideoInfo, float]], width: int = 320) -> list[str | bytes | None]:
        """API mode: URLs the browser fetches (and caches: the API sends max-age) from the API itself.
        Local mode: JPEG bytes from the in-process API, a page of results at once."""
        if self.config.mode == "api":
            return [
                self._signed(f"{self.browser_url}/v1/videos/{v.id}/thumbnail?t={min(max(t, 0.0), v.duration):.2f}&width={width}", v.id, "&")
                for v, t in wanted
            ]

        def one(item: tuple[VideoInfo, float]) -> bytes | None:
            video, t = item
            try:
                return self.client.thumbnail(video.id, min(max(t, 0.0), video.duration), width)
            except ApiError:
                return None

        if len(wanted) <= 1:
            return [one(w) for w in wanted]
        with ThreadPoolExecutor(max_workers=min(4, len(wanted))) as pool:
            return list(pool.map(one, wanted))

    def start_job(self, paths: list[str], kind: str) -> JobInfo:
        return self._call(self.client.create_job, paths, kind)

    def job(self, job_id: str) -> JobInfo:
        return self._call(self.client.job, job_id)

    def jobs(self) -> list[JobInfo]:
        return self._call(self.client.jobs)

    def can_start_jobs(self) -> str | None:
        if self.config.mode == "api" and not self.config.api_key:
            return "Starting index jobs through the API needs a key: set VIDSEARCH_API_KEY (one of the server's VIDSEARCH_API_KEYS)."
        return None
