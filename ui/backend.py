"""Where the UI gets its answers: the search API over HTTP, or a local index opened in this process.

The pages only ever talk to a `Backend`. Both kinds answer with the API's own pydantic models
(`SearchResponse`, `JobInfo`, ...), so the page code is the same in both modes, and every failure
reaches a page as a `BackendError` whose `kind` picks the message (an unreachable API, an empty
index, a bad query...), never as a stack trace.

What differs is only where the browser gets bytes from. In API mode the browser fetches media and
thumbnails from the API itself (range requests make the player seekable, and the API caches the
JPEGs); in local mode there is no HTTP server but Streamlit, so the player gets the file path and
thumbnails are cut with ffmpeg into a cache directory.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, get_args

from vidsearch.api_models import Channel, JobInfo, SearchRequest, SearchResponse, VideoInfo

ErrorKind = Literal["unreachable", "empty", "bad_query", "auth", "not_found", "unavailable"]
ALL_CHANNELS: tuple[str, ...] = tuple(c for c in get_args(Channel) if c != "audio")  # audio is fused into visual
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

    @classmethod
    def from_env(cls) -> UiConfig:
        """`VIDSEARCH_API_URL` (empty: local mode), `VIDSEARCH_DB`, `VIDSEARCH_API_KEY`, and
        `VIDSEARCH_PUBLIC_API_URL` for a browser that reaches the API under another name (a proxy,
        a container network). The rest of the settings (TOML, model) come from `load_settings`."""
        from vidsearch.config import load_settings

        settings = load_settings()
        return cls(
            api_url=(settings.api_url or "").strip().rstrip("/") or None,
            db=Path(settings.db),
            api_key=os.environ.get("VIDSEARCH_API_KEY") or None,
            public_api_url=(os.environ.get("VIDSEARCH_PUBLIC_API_URL") or "").strip().rstrip("/") or None,
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
    failures_note: str | None = None  # where the failure list comes from, when it is partial
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


class Backend(Protocol):
    config: UiConfig

    def search(self, req: SearchRequest) -> SearchResponse: ...
    def catalog(self) -> tuple[list[VideoInfo], int]: ...
    def stats(self) -> LibraryStats: ...
    def channels(self) -> list[str]: ...
    def media(self, video: VideoInfo) -> str | None: ...
    def thumbnails(self, wanted: list[tuple[VideoInfo, float]], width: int = 320) -> list[str | None]: ...
    def start_job(self, paths: list[str], kind: str) -> JobInfo: ...
    def job(self, job_id: str) -> JobInfo: ...
    def jobs(self) -> list[JobInfo]: ...
    def can_start_jobs(self) -> str | None: ...


def open_backend(config: UiConfig) -> Backend:
    """The backend for a config; cheap (nothing is contacted or loaded until the first call)."""
    return ApiBackend(config) if config.mode == "api" else LocalBackend(config)


# -- API mode -----------------------------------------------------------------------------------
class ApiBackend:
    """The search API through `VidsearchClient`: nothing heavy is imported in the UI process."""

    def __init__(self, config: UiConfig, timeout: float = 30.0):
        from vidsearch.client import VidsearchClient

        self.config = config
        self.client = VidsearchClient(config.api_url, config.api_key, timeout=timeout)
        self.browser_url = config.public_api_url or config.api_url

    def _error(self, exc) -> BackendError:
        status, detail = exc.status, exc.detail
        if status == 0:
            return BackendError(
                "unreachable",
                f"Cannot reach the search API at {self.config.api_url}.",
                "Start it with `vidsearch serve`, or unset VIDSEARCH_API_URL to search a local index directly.",
            )
        if status in (401, 403):
            return BackendError("auth", f"The search API refused the request: {detail}", "Set VIDSEARCH_API_KEY to a key the server accepts.")
        if status in (400, 422):
            return BackendError("bad_query", detail)
        if status == 404:
            return BackendError("not_found", detail)
        if status == 503 and ("empty" in detail or "no index" in detail):
            return BackendError("empty", detail, "Index some videos first (Library page, or `vidsearch index PATH`).")
        return BackendError("unavailable", f"The search API answered {status}: {detail}")

    def _call(self, fn, *args, **kwargs):
        from vidsearch.client import ApiError

        try:
            return fn(*args, **kwargs)
        except ApiError as exc:
            raise self._error(exc) from None

    def search(self, req: SearchRequest) -> SearchResponse:
        resp = self._call(self.client.search, req.query, **req.model_dump(exclude={"query"}, exclude_none=True))
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

    def stats(self) -> LibraryStats:
        """Counts and hours from the video listing, the model from /readyz, and failures from the
        index jobs the server ran (the API has no endpoint for the index's whole failure list)."""
        videos, total = self.catalog()
        model = fingerprint = version = not_ready = None
        try:
            ready = self._call(self.client.ready)
            model, version = ready.get("model"), ready.get("index_version")
            fingerprint = ready.get("fingerprint")  # when the server reports it (the id, not just the model)
        except BackendError as exc:
            if exc.kind == "unreachable":
                raise
            not_ready = exc.message
        failures: dict[str, str] = {}
        for job in sorted(self._call(self.client.jobs), key=lambda j: j.created_at):
            for f in (job.summary or {}).get("failures", []):
                failures[f["path"]] = f["error"]
        return LibraryStats(
            videos=total,
            hours=round(sum(v.duration for v in videos) / 3600.0, 4),
            model=model,
            fingerprint=fingerprint,
            failed=len(failures),
            failures=[{"path": p, "error": e} for p, e in failures.items()],
            failures_note="from index jobs run through the API; `vidsearch status` on the server lists every failed file",
            index_version=version,
            not_ready=not_ready,
        )

    def channels(self) -> list[str]:
        return list(ALL_CHANNELS)  # the API does not list them; an unindexed one gets a clear 400

    def media(self, video: VideoInfo) -> str:
        return f"{self.browser_url}/v1/videos/{video.id}/media"

    def thumbnails(self, wanted: list[tuple[VideoInfo, float]], width: int = 320) -> list[str | None]:
        """URLs the browser fetches (and caches: the API sends max-age) from the API itself."""
        return [
            f"{self.browser_url}/v1/videos/{v.id}/thumbnail?t={min(max(t, 0.0), v.duration):.2f}&width={width}"
            for v, t in wanted
        ]

    def start_job(self, paths: list[str], kind: str) -> JobInfo:
        return self._call(self.client.create_job, paths, kind)

    def job(self, job_id: str) -> JobInfo:
        return self._call(self.client.job, job_id)

    def jobs(self) -> list[JobInfo]:
        return self._call(self.client.jobs)

    def can_start_jobs(self) -> str | None:
        if not self.config.api_key:
            return "Starting index jobs through the API needs a key: set VIDSEARCH_API_KEY (one of the server's VIDSEARCH_API_KEYS)."
        return None


# -- local mode ---------------------------------------------------------------------------------
class LocalBackend:
    """The index directory opened in this process (no server): the engine is loaded once, on the
    first search, and kept (the app caches this object); index jobs run as `vidsearch index`
    subprocesses through the same job runner the API uses."""

    def __init__(self, config: UiConfig, settings=None):
        from vidsearch.config import load_settings

        self.config = config
        self.settings = settings or load_settings(db=config.db)
        self._engine = None
        self._jobs = None
        self._lock = threading.Lock()
        self._jobs_lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._engine is not None

    # the engine is opened lazily and retried after a failure: an empty index may be filled by a job
    def engine(self):
        if self._engine is not None:
            return self._engine
        with self._lock:
            if self._engine is None:
                self._engine = self._open_engine()
        return self._engine

    def _open_engine(self):
        from vidsearch.fingerprint import FingerprintMismatch
        from vidsearch.search.engine import open_engine
        from vidsearch.store import StoreError

        try:
            from vidsearch.encoders.backbone import ModelLoadError
        except ImportError:  # pragma: no cover
            ModelLoadError = RuntimeError  # noqa: N806
        try:
            return open_engine(self.settings)
        except StoreError as exc:
            raise _store_error(exc) from None
        except (FingerprintMismatch, ModelLoadError) as exc:
            raise BackendError("unavailable", str(exc)) from None

    def _store(self):
        from vidsearch.store import Store, StoreError

        try:
            return Store.open(self.settings.db)
        except StoreError as exc:
            raise _store_error(exc) from None

    def search(self, req: SearchRequest) -> SearchResponse:
        from vidsearch.search.engine import SearchError

        engine = self.engine()
        try:
            return engine.search(req)
        except SearchError as exc:
            raise BackendError("bad_query", str(exc)) from None

    def catalog(self) -> tuple[list[VideoInfo], int]:
        import json

        from vidsearch.search.engine import video_info

        rows = self._store().videos().to_pylist()
        rows.sort(key=lambda r: (r["title"].lower(), r["video_id"]))
        for r in rows[:CATALOG_LIMIT]:
            r["metadata"] = json.loads(r["metadata"] or "{}")
        return [video_info(r) for r in rows[:CATALOG_LIMIT]], len(rows)

    def stats(self) -> LibraryStats:
        s = self._store().stats()
        version = self._engine.snapshot.version if self._engine is not None else None
        return LibraryStats(
            videos=s["videos"],
            hours=s["hours"],
            model=s["model"],
            fingerprint=s["fingerprint"],
            files=s["files"],
            failed=s["failed"],
            failures=s["failures"],
            index_version=version,
            not_ready=None if s["fingerprint"] else "The index has no videos yet.",
        )

    def channels(self) -> list[str]:
        try:
            engine = self.engine()
        except BackendError:
            return ["visual"]
        extra = set(engine.text_channels.sources()) if engine.text_channels else set()
        return ["visual", *sorted(extra)]

    def media(self, video: VideoInfo) -> str | None:
        path = Path(video.uri)
        return str(path) if path.is_file() else None

    def thumb_dir(self) -> Path:
        """`<db>/.thumbs`, shared with the API's cache (same file names); a user cache dir when the
        index directory is read-only."""
        primary = Path(self.settings.db) / ".thumbs"
        try:
            primary.mkdir(parents=True, exist_ok=True)
            if os.access(primary, os.W_OK):
                return primary
        except OSError:
            pass
        fallback = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vidsearch" / "thumbs"
        fallback.mkdir(parents=True, exist_ok=True)
        return fallback

    def thumbnails(self, wanted: list[tuple[VideoInfo, float]], width: int = 320) -> list[str | None]:
        """JPEG paths; the missing ones are cut in parallel (a page of results at once)."""
        from .thumbnails import frame_jpeg

        cache = self.thumb_dir()

        def one(item):
            video, t = item
            out = frame_jpeg(Path(video.uri), video.id, t, video.duration, cache, width)
            return str(out) if out is not None else None

        if len(wanted) <= 1:
            return [one(w) for w in wanted]
        with ThreadPoolExecutor(max_workers=min(4, len(wanted))) as pool:
            return list(pool.map(one, wanted))

    # -- jobs ----------------------------------------------------------------------------------
    def _job_manager(self):
        from vidsearch.search.jobs import JobManager

        with self._jobs_lock:
            if self._jobs is None:
                self._jobs = JobManager(self.settings, on_progress=self._refresh, model_flags=self._model_flags)
        return self._jobs

    def _refresh(self) -> None:
        if self._engine is not None:
            self._engine.refresh(wait=False)

    def _model_flags(self) -> list[str]:
        """Index jobs encode with the model the index was built with, not the default one."""
        from vidsearch.store import Store, StoreError

        try:
            fp = Store.open(self.settings.db).stored_fingerprint()
        except StoreError:
            fp = None
        if fp is None:  # a new index: the model the settings ask for
            s = self.settings
            named = [n for n in ("model", "pretrained", "checkpoint") if n in s.model_fields_set and getattr(s, n) is not None]
            return [part for n in named for part in (f"--{n}", str(getattr(s, n)))]
        from vidsearch.encoders.backbone import spec_from_fingerprint

        spec = spec_from_fingerprint(fp, self.settings.checkpoint)
        flags = ["--model", spec["model"]]
        if spec["pretrained"] is not None:
            flags += ["--pretrained", spec["pretrained"]]
        if spec["checkpoint"] is not None:
            flags += ["--checkpoint", str(spec["checkpoint"])]
        return flags

    def start_job(self, paths: list[str], kind: str) -> JobInfo:
        missing = [p for p in paths if not Path(p).exists()]
        if missing:
            raise BackendError("bad_query", f"path(s) not found: {', '.join(missing[:5])}")
        return self._job_manager().submit(kind, paths)

    def job(self, job_id: str) -> JobInfo:
        job = self._job_manager().get(job_id)
        if job is None:
            raise BackendError("not_found", f"no job with id {job_id}")
        return job

    def jobs(self) -> list[JobInfo]:
        return self._job_manager().list()

    def can_start_jobs(self) -> str | None:
        return None


def _store_error(exc: Exception) -> BackendError:
    text = str(exc)
    if "is empty" in text or "no index at" in text:
        return BackendError("empty", text, "Index some videos first: the Library page starts a job, or run `vidsearch index PATH`.")
    return BackendError("unavailable", text)
