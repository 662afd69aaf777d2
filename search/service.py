"""The HTTP search API (FastAPI, versioned under /v1, OpenAPI at /openapi.json).

Routers per resource (search, videos, jobs, health); auth and the engine are dependencies. Media is
served only for indexed videos, looked up by id: no path in a request ever reaches the file system.
Every malformed request gets a 4xx that says what is wrong.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import subprocess
import threading
import time
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, Histogram, generate_latest

from vidsearch.api_models import ErrorBody, JobInfo, JobRequest, SearchRequest, SearchResponse, VideoInfo, VideoList
from vidsearch.config import Settings
from vidsearch.fingerprint import FingerprintMismatch
from vidsearch.store import Store, StoreError

from .engine import SearchEngine, SearchError, open_engine, video_info
from .jobs import JobManager

log = logging.getLogger(__name__)
ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 403, 404, 422)}


class State:
    """What the routes share: settings, the engine (opened lazily: an empty index has no model yet)."""

    def __init__(self, settings: Settings, engine: SearchEngine | None = None):
        self.settings = settings
        self._engine = engine
        self._engine_lock = threading.Lock()
        self.engine_error: str | None = None
        self.jobs = JobManager(settings, on_progress=self.refresh, model_flags=self.model_flags)
        self.thumbs = Path(settings.db) / ".thumbs"
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "vidsearch_request_seconds", "Request latency", ["route", "method", "status"], registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )  # fmt: skip
        self.videos = Gauge("vidsearch_index_videos", "Videos visible to search", registry=self.registry)
        self.segments = Gauge("vidsearch_index_segments", "Segment vectors in the coarse index", registry=self.registry)

    def engine(self) -> SearchEngine | None:
        if self._engine is not None:
            return self._engine
        with self._engine_lock:
            if self._engine is None:
                try:
                    self._engine = open_engine(self.settings)
                    self.engine_error = None
                except (StoreError, FingerprintMismatch) as exc:
                    self.engine_error = str(exc)
                except Exception as exc:  # noqa: BLE001 - model load problems are reported by /readyz
                    self.engine_error = f"{type(exc).__name__}: {exc}"
                    log.exception("could not open the search engine")
        return self._engine

    def model_flags(self) -> list[str]:
        """Index jobs must encode with the model the index was built with."""
        from vidsearch.encoders.backbone import spec_from_fingerprint

        engine = self.engine()
        if engine is None:
            return self.jobs._settings_model_flags()
        spec = spec_from_fingerprint(engine.backbone.fingerprint, self.settings.checkpoint)
        flags = ["--model", spec["model"]]
        if spec["pretrained"] is not None:
            flags += ["--pretrained", spec["pretrained"]]
        if spec["checkpoint"] is not None:
            flags += ["--checkpoint", str(spec["checkpoint"])]
        if spec.get("merging", "off") != "off":
            flags += ["--token-merging", spec["merging"]]
        return flags

    def refresh(self) -> None:
        engine = self.engine()
        if engine is not None:
            engine.refresh(wait=False)

    def store(self) -> Store:
        engine = self.engine()
        if engine is not None:
            return engine.store
        try:
            return Store.open(self.settings.db)
        except StoreError as exc:
            raise HTTPException(503, str(exc)) from exc


def get_state(request: Request) -> State:
    return request.app.state.vidsearch


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _check_key(state: State, request: Request) -> None:
    keys = state.settings.api_keys
    if not keys:
        raise HTTPException(403, "writes are disabled: no API keys are configured on the server (VIDSEARCH_API_KEYS)")
    token = _bearer(request)
    if token is None:
        raise HTTPException(401, "missing API key: send `Authorization: Bearer <key>`", headers={"WWW-Authenticate": "Bearer"})
    if not any(secrets.compare_digest(token.encode(), k.encode()) for k in keys):
        raise HTTPException(403, "API key not accepted")


def require_write(request: Request, state: Annotated[State, Depends(get_state)]) -> None:
    _check_key(state, request)


def require_read(request: Request, state: Annotated[State, Depends(get_state)]) -> None:
    if state.settings.read_auth:
        _check_key(state, request)


def _links(request: Request, video_id: str, t: float | None = None) -> dict[str, str]:
    base = f"/v1/videos/{video_id}"
    links = {"self": base, "media": f"{base}/media"}
    if t is not None:
        links["player"] = f"{base}/media#t={t:.2f}"
        links["thumbnail"] = f"{base}/thumbnail?t={t:.2f}"
    return links


# -- search -------------------------------------------------------------------------------------
search_router = APIRouter(prefix="/v1", tags=["search"], dependencies=[Depends(require_read)])


@search_router.post("/search", response_model=SearchResponse, responses=ERRORS)
def search(req: SearchRequest, request: Request, state: Annotated[State, Depends(get_state)]) -> SearchResponse:
    """Videos (or moments) matching a sentence, best first, with the evidence for each."""
    engine = state.engine()
    if engine is None:
        return SearchResponse(query=req.query, group_by=req.group_by, results=[], index_version="empty", took_ms=0.0)
    try:
        resp = engine.search(req)
    except SearchError as exc:
        raise HTTPException(400, str(exc)) from exc
    for r in resp.results:
        r.links = _links(request, r.video.id, r.moments[0].start if r.moments else 0.0)
    return resp


# -- videos -------------------------------------------------------------------------------------
videos_router = APIRouter(prefix="/v1/videos", tags=["videos"])


def _video_row(state: State, video_id: str) -> dict:
    engine = state.engine()
    if engine is not None:
        row = engine.snapshot.videos.get(video_id)
        if row is not None:
            return row
    rows = state.store().video_rows(video_id)
    if rows:
        return rows[0]
    raise HTTPException(404, f"no indexed video with id {video_id}")


@videos_router.get("", response_model=VideoList, responses=ERRORS, dependencies=[Depends(require_read)])
def list_videos(
    state: Annotated[State, Depends(get_state)],
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> VideoList:
    """Indexed videos, in title order."""
    rows = sorted(state.store().video_rows(), key=lambda r: (r["title"].lower(), r["video_id"]))
    page = rows[offset : offset + limit]
    return VideoList(videos=[video_info(r) for r in page], total=len(rows), next_cursor=str(offset + limit) if offset + limit < len(rows) else None)


@videos_router.get("/{video_id}", response_model=VideoInfo, responses=ERRORS, dependencies=[Depends(require_read)])
def get_video(video_id: str, state: Annotated[State, Depends(get_state)]) -> VideoInfo:
    return video_info(_video_row(state, video_id))


@videos_router.delete("/{video_id}", responses={**ERRORS, 409: {"model": ErrorBody}}, dependencies=[Depends(require_write)])
def delete_video(video_id: str, state: Annotated[State, Depends(get_state)]) -> dict:
    """Remove a video from every table; searches stop returning it once the deletion commits."""
    _video_row(state, video_id)
    store = state.store()
    try:
        with store.write_lock():
            removed = store.delete_videos([video_id])
    except StoreError as exc:
        raise HTTPException(409, f"{exc}; try again when the running job finishes") from exc
    state.refresh()
    return {"deleted": video_id, "removed": removed}


@videos_router.get(
    "/{video_id}/media",
    responses={**ERRORS, 206: {"description": "partial content (range request)"}},
    response_class=FileResponse,
    dependencies=[Depends(require_read)],
)
def media(video_id: str, state: Annotated[State, Depends(get_state)]) -> FileResponse:
    """The video file, with HTTP range requests so a browser player can seek."""
    row = _video_row(state, video_id)
    path = Path(row["path"])
    if not path.is_file():
        raise HTTPException(404, f"the file of video {video_id} is no longer on the server; reindex")
    return FileResponse(path, media_type=_media_type(path), filename=path.name, content_disposition_type="inline")


def _media_type(path: Path) -> str:
    return {".mp4": "video/mp4", ".m4v": "video/mp4", ".webm": "video/webm", ".mkv": "video/x-matroska",
            ".mov": "video/quicktime", ".ogv": "video/ogg"}.get(path.suffix.lower(), "application/octet-stream")  # fmt: skip


@videos_router.get(
    "/{video_id}/thumbnail",
    responses={**ERRORS, 200: {"content": {"image/jpeg": {}}}},
    response_class=Response,
    dependencies=[Depends(require_read)],
)
def thumbnail(
    video_id: str,
    state: Annotated[State, Depends(get_state)],
    t: Annotated[float, Query(ge=0, le=1e7, allow_inf_nan=False, description="seconds from the start")] = 0.0,
    width: Annotated[int, Query(ge=16, le=1920)] = 320,
) -> Response:
    """A JPEG of the frame at `t` seconds (cached)."""
    row = _video_row(state, video_id)
    if t > row["duration"]:
        raise HTTPException(400, f"t={t} is past the end of the video ({row['duration']:.2f} s)")
    t = min(t, max(row["duration"] - 0.05, 0.0))
    key = hashlib.sha1(f"{video_id}:{t:.2f}:{width}".encode()).hexdigest()
    out = state.thumbs / f"{key}.jpg"
    if not out.is_file():
        state.thumbs.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp.jpg")
        proc = subprocess.run(
            ["ffmpeg", "-nostdin", "-v", "error", "-y", "-ss", f"{t:.3f}", "-i", row["path"], "-frames:v", "1",
             "-vf", f"scale={width}:-2", "-q:v", "4", str(tmp)],
            capture_output=True, timeout=60,
        )  # fmt: skip
        if proc.returncode != 0 or not tmp.is_file():
            raise HTTPException(404, f"no frame at t={t:.2f} in video {video_id}")
        tmp.replace(out)
    return Response(out.read_bytes(), media_type="image/jpeg", headers={"Cache-Control": "max-age=86400"})


# -- jobs ---------------------------------------------------------------------------------------
jobs_router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@jobs_router.post("", response_model=JobInfo, status_code=202, responses=ERRORS, dependencies=[Depends(require_write)])
def create_job(req: JobRequest, state: Annotated[State, Depends(get_state)]) -> JobInfo:
    """Index or reindex paths on the server, in the background; poll GET /v1/jobs/{id}."""
    missing = [p for p in req.paths if not Path(p).exists()]
    if missing:
        raise HTTPException(400, f"path(s) not found on the server: {', '.join(missing[:5])}")
    return state.jobs.submit(req.kind, req.paths)


@jobs_router.get("", response_model=list[JobInfo], responses=ERRORS, dependencies=[Depends(require_read)])
def list_jobs(state: Annotated[State, Depends(get_state)]) -> list[JobInfo]:
    return state.jobs.list()


@jobs_router.get("/{job_id}", response_model=JobInfo, responses=ERRORS, dependencies=[Depends(require_read)])
def get_job(job_id: str, state: Annotated[State, Depends(get_state)]) -> JobInfo:
    job = state.jobs.get(job_id)
    if job is None:
        raise HTTPException(404, f"no job with id {job_id}")
    return job


# -- health -------------------------------------------------------------------------------------
health_router = APIRouter(tags=["health"])


@health_router.get("/healthz")
def healthz() -> dict:
    """The process is up."""
    return {"status": "ok"}


@health_router.get("/readyz", responses={503: {"model": ErrorBody}})
def readyz(state: Annotated[State, Depends(get_state)]) -> dict:
    """The index is open and its model loaded, so searches will be answered."""
    engine = state.engine()
    if engine is None:
        raise HTTPException(503, state.engine_error or "index not ready")
    encoder = encoder_readiness(engine.backbone)
    if not encoder["ready"]:  # searches would fail: say which served model is not ready
        raise HTTPException(503, f"encoder not ready: {encoder}")
    snap = engine.snapshot
    return {"status": "ready", "index_version": snap.version, "videos": len(snap.ids),
            "model": engine.backbone.fingerprint.describe(), "encoder": encoder}  # fmt: skip


def encoder_readiness(backbone) -> dict:
    """Where queries are encoded and whether it can answer: a Triton backbone asks its server for the
    served models' state; a local one is ready once loaded."""
    check = getattr(backbone, "readiness", None)
    if check is not None:
        return check()
    return {"backend": "torch", "device": str(getattr(backbone, "device", "cpu")), "ready": True}


@health_router.get("/metrics", response_class=Response)
def metrics(state: Annotated[State, Depends(get_state)]) -> Response:
    """Prometheus metrics: request latency histograms, index size."""
    engine = state._engine
    if engine is not None:
        state.videos.set(len(engine.snapshot.ids))
        state.segments.set(engine.snapshot.coarse.n_live if engine.snapshot.coarse is not None else 0)
    return Response(generate_latest(state.registry), media_type=CONTENT_TYPE_LATEST)


# -- the app ------------------------------------------------------------------------------------
def create_app(settings: Settings, engine: SearchEngine | None = None) -> FastAPI:
    app = FastAPI(
        title="vidsearch",
        version="1",
        description="Text-to-video search that finds the moment. Writes need `Authorization: Bearer <key>`.",
    )
    app.state.vidsearch = State(settings, engine)
    for router in (search_router, videos_router, jobs_router, health_router):
        app.include_router(router)

    @app.middleware("http")
    async def measure(request: Request, call_next):
        t0 = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        app.state.vidsearch.latency.labels(path, request.method, str(response.status_code)).observe(time.perf_counter() - t0)
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for e in exc.errors():
            where = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
            problems.append(f"{where}: {e.get('msg')}" if where else str(e.get("msg")))
        return JSONResponse(status_code=422, content={"detail": "; ".join(problems) or "invalid request"})

    return app
