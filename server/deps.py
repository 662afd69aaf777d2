"""The routes' typed dependencies: the shared state, the engine (503 when the index is not ready),
the index for reading, an indexed video by id, and the read and write keys (and signed URLs for a
browser's media and thumbnail requests).

Each answers its own error once, here, so a route that declares `engine: ReadyEngine` or
`row: VideoRow` never checks for a missing engine or an unknown id itself.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from vidsearch.api_models import ErrorBody
from vidsearch.index_lock import writer_busy
from vidsearch.search import SearchEngine
from vidsearch.signing import verify
from vidsearch.store import Store, StoreError

from .state import ServerState

__all__ = ["DOCS_PATHS", "READINESS_PATH", "DocsNeedAKey", "ERRORS", "INDEX_ERRORS", "OptionalEngine", "ReadyEngine", "State", "VideoRow", "IndexStore", "key_accepted", "require_key", "require_media_read", "require_read", "require_write"]

ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 403, 404, 422)}
INDEX_ERRORS = {**ERRORS, 503: {"model": ErrorBody, "description": "no index at the server's --db yet, or it cannot be opened"}}
"""Routes that read the index: ERRORS, and 503 while there is none to read."""


async def get_state(request: Request) -> ServerState:
    return request.app.state.vidsearch


State = Annotated[ServerState, Depends(get_state)]


async def optional_engine(state: State) -> SearchEngine | None:
    # the open engine at once, on the event loop; opening one (model load, a retry) on a thread
    engine = state.loaded_engine
    return engine if engine is not None else await run_in_threadpool(state.engine)


OptionalEngine = Annotated[SearchEngine | None, Depends(optional_engine)]


async def ready_engine(engine: OptionalEngine, state: State) -> SearchEngine:
    if engine is None:
        raise HTTPException(503, state.engine_error or "index not ready")
    return engine


ReadyEngine = Annotated[SearchEngine, Depends(ready_engine)]


def index_store(state: State) -> Store:
    try:
        return state.store()
    except StoreError as exc:
        # a first `vidsearch index` (or a rebuild) has made no tables yet: say so, not only "no index"
        busy = "; an indexing run is writing it now" if writer_busy(state.settings.db) else ""
        raise HTTPException(503, f"{exc}{busy}") from exc


IndexStore = Annotated[Store, Depends(index_store)]


def video_row(video_id: str, state: State) -> dict:
    """The `videos` row of an indexed video (from the snapshot when there is one), or 404."""
    engine = state.engine()
    if engine is not None:
        row = engine.snapshot.videos.get(video_id)
        if row is not None:
            return row
    rows = index_store(state).video_rows(video_id)
    if rows:
        return rows[0]
    raise HTTPException(404, f"no indexed video with id {video_id}")


VideoRow = Annotated[dict, Depends(video_row)]


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


# what a server with no keys says it refuses (it has none to accept): not "writes" for a read
WRITES, READS, RECORDS = "writes are disabled", "reads need a key (read_auth) and none can be accepted", "job records need a key and none can be accepted"


def _check_key(state: ServerState, request: Request, refused: str = WRITES) -> None:
    """A key, always: 403 `refused` where the server has none to accept, 401 without one, 403 for one
    it does not know. (Under read_auth a server with no keys serves nobody: `vidsearch serve` refuses to
    start so; an app built otherwise says why on each read.)"""
    if not state.settings.api_keys:
        raise HTTPException(403, f"{refused}: no API keys are configured on the server (--api-key, VIDSEARCH_API_KEYS)")
    token = _bearer(request)
    if token is None:
        raise HTTPException(401, "missing API key: send `Authorization: Bearer <key>`", headers={"WWW-Authenticate": "Bearer"})
    if not key_accepted(state, request):
        raise HTTPException(403, "API key not accepted")


def key_accepted(state: ServerState, request: Request) -> bool:
    """Whether the request carries one of the server's keys (what it may see: `exposure.py`)."""
    token = _bearer(request)
    return token is not None and any(secrets.compare_digest(token.encode(), k.encode()) for k in state.settings.api_keys)


def require_write(request: Request, state: State) -> None:
    _check_key(state, request)


def require_key(request: Request, state: State) -> None:
    """A read of what only operators see (job records): a key, always."""
    _check_key(state, request, RECORDS)


def _refuse_a_wrong_key(state: ServerState, request: Request) -> None:
    """An open read that carries a key the server does not know: 401, not an anonymous answer. A
    client configured with a mistyped or revoked key would otherwise be served as anonymous, silently
    (relative paths, no job records), and learn of it only when a write failed."""
    if state.settings.api_keys and _bearer(request) is not None and not key_accepted(state, request):
        # (a server with no keys has nothing to compare with: a token meant for another server, or a
        # proxy's, is no mistake of this one's caller)
        raise HTTPException(401, "API key not accepted: send one of the server's keys, or no Authorization header to read "
                                 "anonymously", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})  # fmt: skip


async def require_read(request: Request, state: State) -> None:
    if state.settings.read_auth:
        _check_key(state, request, READS)
    else:
        _refuse_a_wrong_key(state, request)


def require_media_read(
    request: Request,
    video_id: str,
    state: State,
    exp: Annotated[int | None, Query(ge=0, le=10**11, description="signed URL: expiry, UNIX seconds (vidsearch.signing)")] = None,
    sig: Annotated[str | None, Query(max_length=128, description="signed URL: HMAC-SHA256 under an API key of `<video id>:<exp>`")] = None,
) -> None:
    """A read of one video's media or thumbnails: a key in the header, or, for a browser's `<video>`
    and `<img>` (which cannot send headers), a URL signed with a key (`vidsearch.signing`)."""
    if not state.settings.read_auth:
        _refuse_a_wrong_key(state, request)
        return
    if sig is None or exp is None:
        _check_key(state, request, READS)
        return
    problem = verify(state.settings.api_keys, video_id, exp, sig)
    if problem is not None:
        raise HTTPException(403, problem)


DOCS_PATHS = ("/openapi.json", "/docs", "/redoc")  # the API's description and its two viewers
READINESS_PATH = "/readyz"  # open to every reader (a load balancer's check), and checks no key itself
CHECKED_AT_THE_DOOR = (*DOCS_PATHS, READINESS_PATH)  # the paths DocsNeedAKey looks at


class DocsNeedAKey:
    """Keys for what FastAPI serves outside the routes' dependencies (the API's description and docs
    pages) and for /readyz, which reads the key itself only to say more: under `read_auth` the docs
    need a key; everywhere else, as on every open read, a key the server does not know is a 401 (a
    client with a mistyped or revoked key would otherwise be told all is well: "ready", and the API's
    description). /healthz never looks at a key: liveness is the process being up. Other requests
    pass at the cost of one prefix test."""

    def __init__(self, app, state: ServerState):
        self.app, self.state = app, state

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(CHECKED_AT_THE_DOOR):
            request = Request(scope)
            try:
                if self.state.settings.read_auth and scope["path"].startswith(DOCS_PATHS):
                    _check_key(self.state, request, READS)
                else:
                    _refuse_a_wrong_key(self.state, request)
            except HTTPException as exc:
                await JSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)(scope, receive, send)
                return
        await self.app(scope, receive, send)
