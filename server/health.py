"""Health and metrics: liveness, readiness, Prometheus metrics, and the index's status.

/healthz is an async route: it answers on the event loop, never queued behind sync routes for one
of anyio's worker threads (a flood of clip requests once held all 40, and a liveness probe with a
few seconds' timeout would have restarted a server that was only busy). /readyz may open the index
or ask a Triton server, so it stays a sync route. Both answer HEAD, as load balancers' checks send
(GET's headers, no body; left out of the OpenAPI document, which lists GET's answers).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from vidsearch.api_models import ErrorBody, FileProblem, IndexStatus
from vidsearch.index_lock import writer_busy

from .deps import IndexStore, State, key_accepted, require_read
from .exposure import Viewer

router = APIRouter(tags=["health"])


@router.head("/healthz", include_in_schema=False)
@router.get("/healthz")
async def healthz() -> dict:
    """The process is up (answered on the event loop: see the module docstring)."""
    return {"status": "ok"}


@router.head("/readyz", include_in_schema=False)
@router.get("/readyz", responses={503: {"model": ErrorBody}})
def readyz(request: Request, state: State) -> dict:
    """The index is open, its model loaded and the encoder answering (a Triton server's models ready),
    so searches will be answered. Under --read-auth a reader without a key gets the state only."""
    detailed = not state.settings.read_auth or key_accepted(state, request)
    engine = state.engine()
    if engine is None:
        raise HTTPException(503, (state.engine_error or "index not ready") if detailed else "not ready")
    encoder = encoder_readiness(engine.backbone)
    if not encoder["ready"]:  # searches would fail: say which served model is not ready
        raise HTTPException(503, f"encoder not ready: {encoder}" if detailed else "not ready")
    if not detailed:
        return {"status": "ready"}
    snap = engine.snapshot
    out = {"status": "ready", "index_version": snap.version, "videos": len(snap.ids),
           "model": engine.backbone.fingerprint.describe(), "encoder": encoder,
           "query_runtime": engine.query_runtime}  # fmt: skip
    if state.processes is not None:  # `search_processes`: threads answer until the workers are ready
        out["search_processes"] = state.processes.status()
    return out


def encoder_readiness(backbone) -> dict:
    """Where queries are encoded and whether it can answer: a Triton backbone asks its server for the
    served models' state; a local one is ready once loaded."""
    check = getattr(backbone, "readiness", None)
    if check is not None:
        return check()
    return {"backend": "torch", "device": str(getattr(backbone, "device", "cpu")), "ready": True}


@router.get("/metrics", response_class=Response, responses={c: {"model": ErrorBody} for c in (401, 403)}, dependencies=[Depends(require_read)])
def metrics(state: State) -> Response:
    """Prometheus metrics: request latency histograms, index size (with a key under --read-auth)."""
    engine = state.loaded_engine
    if engine is not None:
        state.metrics.videos.set(len(engine.snapshot.ids))
        state.metrics.segments.set(engine.snapshot.coarse.n_live if engine.snapshot.coarse is not None else 0)
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/index", response_model=IndexStatus, responses={c: {"model": ErrorBody} for c in (401, 403, 503)}, dependencies=[Depends(require_read)])
def index_status(store: IndexStore, state: State, view: Viewer) -> IndexStatus:
    """What is indexed (counts, hours, the model, every failed file and why) and whether searches are answered."""
    s = store.stats()
    engine = state.engine()
    if engine is not None:  # a version committed by another process (`vidsearch index` in a shell) goes live soon
        engine.refresh_soon()  # without a search to ask (the UI keys its cached answers by this version)
    return IndexStatus(
        videos=s["videos"],
        files=s["files"],
        failed=s["failed"],
        hours=s["hours"],
        model=s["model"],
        fingerprint=s["fingerprint"],
        channels=sorted(engine.channels()) if engine is not None else [],
        index_version=engine.snapshot.version if engine is not None else None,
        ready=engine is not None,
        not_ready=None if engine is not None else view.text(state.engine_error or "the index has no videos yet"),
        failures=view.problems([FileProblem(**f) for f in s["failures"]]),
        warnings=view.problems([FileProblem(path=w["path"], error=w["warning"]) for w in s["warnings"]]),
        excluded=[view.path(p) for p in s["excluded"]],
        indexing=writer_busy(state.settings.db),
    )
