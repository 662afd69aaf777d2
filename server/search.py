"""`POST /v1/search`: videos (or moments) matching words, an example picture, a moment of an indexed
video ("more like this"), or any mix of them, best first, with the evidence for each.

The request is JSON (`SearchRequest`; a picture goes in `image` as base64), or multipart/form-data
for uploading the picture as a file: a part `image` (the file) and optionally `request` (the same
JSON, without `image`) or a plain `query` field. A multipart request is turned into the JSON request
before FastAPI validates it (`SearchRoute`), so both kinds meet the same model and the same errors.
A picture over `max_image_mb` is a 413, bytes that are not a picture a 415.
"""

from __future__ import annotations

import base64
import json

import anyio

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.routing import APIRoute
from starlette.datastructures import UploadFile

from vidsearch.api_models import SearchRequest, SearchResponse
from vidsearch.search import ImageTooLarge, NotAnImage, SearchError
from vidsearch.search.examples import check_image_size, decode_base64_image

from .deps import ERRORS, INDEX_ERRORS, OptionalEngine, State, index_store, require_read
from .exposure import Viewer
from .presenting import search_response
from .search_processes import WorkerUnavailable

MULTIPART = {
    "requestBody": {
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "image": {"type": "string", "format": "binary", "description": "the example picture"},
                        "request": {"type": "string", "description": "a SearchRequest as JSON, without `image`"},
                        "query": {"type": "string", "maxLength": 1000, "description": "words (when `request` is not given)"},
                    },
                }
            }
        }
    }
}


class SearchRoute(APIRoute):
    """Accepts multipart/form-data besides JSON: the form is rewritten as the JSON request (FastAPI's
    documented way to customise a route's request), then validated like any JSON body."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def route(request: Request):
            kind = request.headers.get("content-type", "").lower()
            if kind.startswith("multipart/form-data"):
                request = await _json_from_form(request)
            elif not kind:  # `requests.post(url, data=json_text)`, curl --data-binary without -H: read it as the JSON it is
                scope = {**request.scope, "headers": [*request.scope["headers"], (b"content-type", b"application/json")]}
                request = Request(scope, request.receive)
            elif not _is_json(kind):
                raise HTTPException(415, f"the body is sent as {kind.split(';')[0].strip()}: send the SearchRequest JSON with "
                                         "`Content-Type: application/json` (curl: -H 'Content-Type: application/json'; `-d` alone "
                                         "sends a form), or multipart/form-data with `query`, `image` and/or `request` parts")  # fmt: skip
            return await handler(request)

        return route


def _is_json(content_type: str) -> bool:
    """application/json or a +json type: what FastAPI parses as JSON (any other type reaches the model
    as bytes, and failed with "Input should be a valid dictionary", which never said why)."""
    kind = content_type.split(";")[0].strip()
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


FORM_FIELDS = ("query", "image", "request")
REQUEST_PART_BYTES = 256 << 10  # a SearchRequest without its picture is a few kilobytes (limits.BODY_LIMIT)


async def _request_part(part) -> dict:
    """The `request` part: a text field, or a file part (`curl -F request=@req.json`), as a JSON
    object; 422 saying why when it is none."""
    if part is None:
        return {}
    if isinstance(part, UploadFile):
        raw = await part.read(REQUEST_PART_BYTES + 1)
        if len(raw) > REQUEST_PART_BYTES:
            raise HTTPException(413, f"request: the part is over {REQUEST_PART_BYTES >> 10} KB (send the picture as the `image` part)")
        try:
            part = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise HTTPException(422, f"request: not UTF-8 text ({exc})") from exc
    try:
        body = json.loads(part)
    except json.JSONDecodeError as exc:
        raise HTTPException(422, f"request: not valid JSON ({exc})") from exc
    if not isinstance(body, dict):
        raise HTTPException(422, "request: must be a JSON object (a SearchRequest)")
    return body


async def _json_from_form(request: Request) -> Request:
    """The multipart request as the JSON request it stands for (the picture base64 in `image`);
    a 413 past `max_image_mb` before the rest of the picture is read."""
    max_bytes = int(request.app.state.vidsearch.settings.max_image_mb * 1e6)
    try:
        form = await request.form(max_files=1, max_fields=8)
    except Exception as exc:  # noqa: BLE001 - any malformed form is the client's error
        raise HTTPException(400, f"the multipart form cannot be read: {exc}") from exc
    if not form:  # the parser is lenient: a body cut short or with another boundary reads as no parts
        await form.close()
        raise HTTPException(400, "the multipart form cannot be read: it holds no complete part (cut short, or its boundary "
                                 "is not the Content-Type's); send `query`, `image` and/or `request` parts")  # fmt: skip
    unknown = sorted(set(form.keys()) - set(FORM_FIELDS))
    if unknown:  # `like`, `top_k` sent as fields were dropped silently: they belong in `request`
        await form.close()
        raise HTTPException(422, f"unknown form part(s) {', '.join(unknown)}: a multipart search has `query`, `image` and "
                                 "`request` (the other SearchRequest fields, as JSON)")  # fmt: skip
    repeated = sorted(name for name in FORM_FIELDS if len(form.getlist(name)) > 1)
    if repeated:  # one of them silently won
        await form.close()
        raise HTTPException(422, f"form part(s) {', '.join(repeated)} sent more than once: send each part once")
    body = await _request_part(form.get("request"))
    if isinstance(form.get("query"), str):
        if body.get("query") not in (None, form["query"]):  # the `request` part's query silently won
            await form.close()
            raise HTTPException(422, "query: given both as a form part and in the `request` part; send it once")
        body["query"] = form["query"]
    upload = form.get("image")
    if isinstance(upload, UploadFile):
        data = await upload.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise HTTPException(413, f"image is over the limit of {max_bytes / 1e6:.1f} MB (max_image_mb)")
        body["image"] = base64.b64encode(data).decode()
    elif upload is not None:
        raise HTTPException(422, "image: must be a file part (curl -F image=@photo.jpg)")
    await form.close()
    scope = dict(request.scope)
    scope["headers"] = [(k, v) for k, v in request.scope["headers"] if k not in (b"content-type", b"content-length")]
    scope["headers"].append((b"content-type", b"application/json"))
    rewritten = Request(scope, request.receive)
    rewritten._body = json.dumps(body).encode()  # read by FastAPI as the JSON body
    return rewritten


router = APIRouter(prefix="/v1", tags=["search"], dependencies=[Depends(require_read)], route_class=SearchRoute)


@router.post("/search", response_model=SearchResponse, responses={**INDEX_ERRORS, 413: ERRORS[400], 415: ERRORS[400]}, openapi_extra=MULTIPART)
async def search(req: SearchRequest, engine: OptionalEngine, view: Viewer, state: State) -> Response:
    """Videos (or moments) matching words, a picture and/or a moment (`like`), best first, with the
    evidence for each; `inputs` in the response says which inputs made the query."""
    if engine is None:
        return await anyio.to_thread.run_sync(_no_engine, req, state, view)
    try:
        # a repeated request is answered here, on the event loop (~0.1 ms); a new one waits for one of
        # `search_threads` threads, in arrival order (state.search_slots): under load the answers
        # come out in turn instead of every request's thread fighting all the others for the cores
        key = state.responses.key(engine, req) if req.image is None else None
        resp = state.responses.get(engine, key) if key is not None else None
        if resp is None and key is not None and (pool := state.search_pool()) is not None:
            resp = await _answer_in_worker(pool, engine, req, state, key)
        if resp is None:
            resp = await anyio.to_thread.run_sync(_answer, engine, req, state, key, limiter=state.search_slots())
    except ImageTooLarge as exc:
        raise HTTPException(413, str(exc)) from exc
    except NotAnImage as exc:
        raise HTTPException(415, str(exc)) from exc
    except SearchError as exc:
        raise HTTPException(400, str(exc)) from exc
    # new result objects, not changed ones: the response may be the cache's (response_cache.py)
    resp.results = [r if (v := view.video(r.video)) is r.video else r.model_copy(update={"video": v}) for r in resp.results]
    # serialised by pydantic in one pass: FastAPI would dump the model, validate it again and encode
    # the dict with `json` (~1.5 ms for ten results with their curves, on every request)
    return Response(resp.model_dump_json(), media_type="application/json")


def _no_engine(req: SearchRequest, state, view) -> Response:
    """A search with no engine open: 503 as every read of the index when there is none at the server's
    --db (deps.index_store), or when it holds videos that cannot be searched (the model did not load);
    an index with no videos yet answers no results, with `message` saying why (as /v1/videos lists none)."""
    store = index_store(state)
    if store.indexed_ids():
        raise HTTPException(503, f"searches cannot be answered yet: {state.engine_error or 'the index is not open'} (GET /readyz says when they can)")
    empty = SearchResponse(query=req.query or "", group_by=req.group_by, results=[], index_version="empty", took_ms=0.0,
                           message=view.text(state.engine_error) or "nothing is indexed yet")  # fmt: skip
    return Response(empty.model_dump_json(), media_type="application/json")


async def _answer_in_worker(pool, engine, req: SearchRequest, state, key: tuple) -> SearchResponse | None:
    """A new word or `like` search computed by a search process (search_processes.py) on the server's
    live version, kept in the response cache; None when the pool broke (answered here instead)."""
    engine.refresh_soon()  # the workers plan the searches: this engine still looks for new versions
    # the text is encoded here, with the other requests' texts in one pass (see search_processes.py)
    vectors = await anyio.to_thread.run_sync(engine.query_vectors, req.query) if req.query is not None else None
    try:
        resp = await pool.answer(req, engine.snapshot.version, vectors)
    except WorkerUnavailable:
        return None
    return state.responses.compute(key, lambda: resp)


def _answer(engine, req: SearchRequest, state, key: tuple | None) -> SearchResponse:
    """A search computed on a worker thread and kept in the response cache. `key`: the request's
    cache key, already looked up on the event loop; None for a picture, which is checked first (one
    answered before may be refused now) and hashed and looked up here, off the loop."""
    if key is None:
        check_image_size(decode_base64_image(req.image), int(engine.settings.max_image_mb * 1e6))
        return state.responses(engine, req, lambda: search_response(engine, req))
    return state.responses.compute(key, lambda: search_response(engine, req))
