"""The HTTP search API (FastAPI, versioned under /v1, OpenAPI at /openapi.json, docs at /docs).

One router per resource (search.py, videos.py, jobs.py, health.py); auth, the engine and the index
are typed dependencies (deps.py); the engine is opened by the lifespan, before the first request
(state.py). Every malformed request gets a 4xx that says what is wrong. The docs pages load their
scripts from this server (fastapi-offline), so /docs works on a closed network.
"""

from __future__ import annotations

import gc
import os
import secrets
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.utils import is_body_allowed_for_status_code
from fastapi_offline import FastAPIOffline
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from vidsearch.client import LOCAL_URL, AppTransport, VidsearchClient
from vidsearch.config import Settings
from vidsearch.search import SearchEngine

from . import exports, health, jobs, search, videos
from .bodies import SafeJSONResponse, is_json
from .deps import READINESS_PATH, DocsNeedAKey
from .exposure import view_of
from .limits import JsonTooLarge, body_limit, too_large_detail
from .methods import MethodsForEveryPath
from .state import ServerState
from .timing import LatencyMetrics

__all__ = ["create_app", "local_client"]


def create_app(settings: Settings, engine: SearchEngine | None = None, serving: bool = False) -> FastAPI:
    """The app for one index. `engine` serves a pre-opened engine (benchmarks, tests); `serving`: a
    long-lived server (`vidsearch serve`), which may spend start-up work on cheaper queries."""
    state = ServerState(settings, engine, serving=serving)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await run_in_threadpool(state.open)  # load the model and the snapshot before serving
        if serving:
            # the libraries', the model's and the index's objects (millions) stay for the process's life:
            # out of the collector's sight, a full collection no longer walks them, which paused every
            # request for ~0.6-0.9 s every ~10 s under load (bench/api_load.py)
            gc.collect()
            gc.freeze()
        try:
            yield
        finally:
            state.close()  # the search workers, if any (not awaited: an in-process app's lifespan may be
            # closed by the interpreter's exit, where an await here would fail)

    app = FastAPIOffline(
        title="vidsearch",
        version="1",
        description="Text-to-video search that finds the moment. Writes need `Authorization: Bearer <key>`.",
        lifespan=lifespan,
        max_body_size=body_limit(settings),  # 413 before a large body is read (limits.py)
        # a body with no Content-Type (`requests.post(url, data=json_text)`, curl --data-binary without -H)
        # is read as the JSON it is, on every route; one sent as another type is a 415 (`_not_json`)
        strict_content_type=False,
        # `/v1/videos/` was a 307 to `http://<the request's Host header>/v1/videos`: a redirect anyone could
        # point at another host; a path with a trailing slash is a 404, as any other path no route takes
        redirect_slashes=False,
    )
    app.state.vidsearch = state
    # FastAPI's middleware stack inside JsonTooLarge (limits.py): a 413 says in JSON what the limits are
    # (FastAPIOffline makes a FastAPI instance, so its stack builder is wrapped here, not in a subclass)
    # and the keys of what no route's dependencies check: the API's docs pages (behind a key under
    # read_auth) and /readyz (deps.DocsNeedAKey)
    build_stack = app.build_middleware_stack

    def build_middleware_stack():
        return JsonTooLarge(DocsNeedAKey(build_stack(), state), too_large_detail(settings))

    app.build_middleware_stack = build_middleware_stack
    for module in (search, videos, exports, jobs, health):
        app.include_router(module.router)

    app.add_middleware(MethodsForEveryPath, router=app.router)  # HEAD wherever GET; a 405's Allow lists every method
    app.add_middleware(LatencyMetrics, histogram=state.metrics.latency)  # (added last: outside, it sees HEAD as HEAD)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        if (refused := _not_json(request, exc)) is not None:
            return refused
        problems = []
        for e in exc.errors():
            if e.get("type") == "json_invalid":  # its loc is a character offset, not a field
                at = e.get("ctx", {}).get("error") or "invalid JSON"
                offset = next((p for p in e.get("loc", ()) if isinstance(p, int)), None)
                problems.append(f"the body is not valid JSON ({at}" + (f" at character {offset})" if offset is not None else ")"))
                continue
            where = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
            msg = str(e.get("msg")).removeprefix("Value error, ")  # a model's own check: its words alone (as api_models.validation_message)
            problems.append(f"{where}: {msg}" if where else msg)
        return SafeJSONResponse(status_code=422, content={"detail": "; ".join(problems) or "invalid request"})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        """Every error as FastAPI answers it, but without server paths for a reader without a key
        (exposure.py): `no index at /srv/idx: ...` is `no index at idx: ...` to them; and rendered
        whatever text it echoes (bodies.SafeJSONResponse: a client's lone surrogate in a detail was a 500)."""
        detail = view_of(state, request).text(exc.detail) if isinstance(exc.detail, str) else exc.detail
        if not is_body_allowed_for_status_code(exc.status_code):  # (as FastAPI's own handler)
            return Response(status_code=exc.status_code, headers=exc.headers)
        return SafeJSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)

    _document_app_answers(app)
    return app


def _takes_multipart(route) -> bool:
    """Whether a route documents a multipart form besides JSON (POST /v1/search: search.SearchRoute)."""
    return "multipart/form-data" in ((getattr(route, "openapi_extra", None) or {}).get("requestBody", {}).get("content", {}))


def _not_json(request: Request, exc: RequestValidationError) -> JSONResponse | None:
    """A 415 saying how to send JSON, for a body that failed its route's model because it was sent as
    another type (`curl -d` alone sends a form; `text/plain`): FastAPI hands such a body to the model
    as bytes, which failed with "Input should be a valid dictionary", which never said why. One check
    for every JSON-body route (search, export, jobs), here where all their validation errors meet."""
    kind = request.headers.get("content-type", "")
    if not kind or is_json(kind) or not any(e.get("loc") == ("body",) and isinstance(e.get("input"), bytes) for e in exc.errors()):
        return None
    route = request.scope.get("route")
    form = ", or multipart/form-data with `query`, `image` and/or `request` parts" if _takes_multipart(route) else ""
    detail = (f"the body is sent as {kind.split(';')[0].strip()}: send it as JSON with `Content-Type: application/json` "
              f"(curl: -H 'Content-Type: application/json'; `-d` alone sends a form){form}")  # fmt: skip
    return JSONResponse(status_code=415, content={"detail": detail})


ERROR_BODY = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
UNSUPPORTED = {"description": "the body is not sent as JSON (Content-Type)", "content": ERROR_BODY}
WRONG_KEY = {"description": "a key the server does not know (deps.DocsNeedAKey)", "content": ERROR_BODY}


def _document_app_answers(app: FastAPI) -> None:
    """OpenAPI lists the 415 on every route that takes a JSON body (`_not_json` answers it for all of
    them, outside their own declarations), and the 401 /readyz gives a key it does not know."""
    make = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = make()
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    if "application/json" in operation.get("requestBody", {}).get("content", {}):
                        operation.setdefault("responses", {}).setdefault("415", UNSUPPORTED)
            for operation in schema.get("paths", {}).get(READINESS_PATH, {}).values():
                operation.setdefault("responses", {}).setdefault("401", WRONG_KEY)
        return app.openapi_schema

    app.openapi = openapi


def local_client(settings: Settings, timeout: float = 600.0) -> VidsearchClient:
    """The API without a socket: this app, in this process, behind the same client a server's
    users have (the UI's local mode, `vidsearch search --db`). The app starts, and loads the model,
    on the first request.

    Writes need a key, as over HTTP; this client gets one of its own, made here and known only to
    this process (the app is reachable through nothing else), so the local user may start jobs
    without the server's keys being configured. For the same reason its jobs may index anything the
    local user names (the whole file system is its library root unless `library_roots` narrows it), as
    `vidsearch index` does.
    """
    key = secrets.token_urlsafe(24)
    roots = settings.library_roots or [Path(os.sep)]
    app = create_app(settings.model_copy(update={"api_keys": [*settings.api_keys, key], "library_roots": roots}))
    return VidsearchClient(LOCAL_URL, api_key=key, timeout=timeout, transport=AppTransport(app))
