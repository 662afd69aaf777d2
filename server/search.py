"""`POST /v1/search`: videos (or moments) matching words, an example picture, a moment of an indexed
video ("more like this"), or any mix of them, best first, with the evidence for each.

The request is JSON (`SearchRequest`; a picture goes in `image` as base64, standard or URL-safe,
padded or not), or multipart/form-data for uploading the picture as a file: a part `image` (the
file) and optionally `request` (the same JSON, without `image`: a text field or a file) or a plain
`query` field, each part once. A multipart request is turned into the JSON request
before FastAPI validates it (`SearchRoute`), so both kinds meet the same model and the same errors.
A picture over `max_image_mb` is a 413, bytes that are not a picture a 415.
"""

from __future__ import annotations

import base64
import json
from contextlib import aclosing

import anyio

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser

from vidsearch.api_models import SearchRequest, SearchResponse
from vidsearch.search import ImageTooLarge, NotAnImage, SearchError
from vidsearch.search.examples import check_image_size, decode_base64_image

from .bodies import CheckedBody, refuse_lone_surrogates
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


class SearchRoute(CheckedBody):
    """Accepts multipart/form-data besides JSON: the form is rewritten as the JSON request (FastAPI's
    documented way to customise a route's request), then checked (bodies.CheckedBody) and validated
    like any JSON body. A body sent as any other type is the app's 415, as on every JSON route
    (app._not_json)."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def route(request: Request):
            if request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
                request = await _json_from_form(request)
            return await handler(request)

        return route


FORM_FIELDS = ("query", "image", "request")
FORM_PART_BYTES = 1 << 20  # a text part's limit (Starlette's): a query is 1000 characters, a `request` part a few kilobytes
# what the form parser reads before it stops with "Too many files/fields": room for every part at
# least twice, so a part sent twice or a wrong name is told as such (422), and far fewer than
# Starlette's 1000 (each file part is a spooled temporary file)
FORM_LIMITS = {"max_files": 8, "max_fields": 8, "max_part_size": FORM_PART_BYTES}
REQUEST_PART_BYTES = 256 << 10  # a SearchRequest without its picture is a few kilobytes (limits.BODY_LIMIT)
PARTS_HINT = "a multipart search has the parts `query`, `image` and `request` (the other SearchRequest fields, as JSON), each once"


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
    refuse_lone_surrogates(body, "request: ")
    return body


async def _json_from_form(request: Request) -> Request:
    """The multipart request as the JSON request it stands for (the picture base64 in `image`)."""
    form = await _read_form(request)
    try:
        body = await _form_body(form, int(request.app.state.vidsearch.settings.max_image_mb * 1e6))
    finally:
        await form.close()
    scope = dict(request.scope)
    scope["headers"] = [(k, v) for k, v in request.scope["headers"] if k not in (b"content-type", b"content-length")]
    scope["headers"].append((b"content-type", b"application/json"))
    rewritten = Request(scope, request.receive)
    rewritten._body = json.dumps(body).encode()  # read by FastAPI as the JSON body
    return rewritten


class _NotText(MultiPartException):
    """A text part whose bytes are not text in the form's charset."""


class _TextParts(MultiPartParser):
    """Starlette's multipart parser, but a text part that is not text in the form's charset (UTF-8 unless
    its Content-Type names another) is refused: Starlette read it as Latin-1, and a query of invalid
    UTF-8 was searched as the mojibake that made."""

    def on_part_end(self) -> None:
        part = self._current_part
        if part.file is None:
            try:
                bytes(part.data).decode(self._charset or "utf-8")
            except (UnicodeDecodeError, LookupError):
                raise _NotText(f"{part.field_name}: not {self._charset or 'utf-8'} text") from None
        super().on_part_end()


async def _read_form(request: Request):
    """The parsed form (as `request.form()` parses it, text parts held to their charset: `_TextParts`);
    422 naming the parts a search has when it holds more parts than the parser reads (Starlette's 400
    "Too many files" said nothing of what to send), 422 for a text part that is not text, 413 for a
    text part over the parser's 1 MB (it was a 400), 400 when it cannot be parsed."""
    try:
        async with aclosing(request.stream()) as stream:
            form = await _TextParts(request.headers, stream, **FORM_LIMITS).parse()
    except _NotText as exc:
        raise HTTPException(422, f"{exc.message}: send the form's text parts in UTF-8") from exc
    except MultiPartException as exc:
        if exc.message.startswith("Too many"):
            raise HTTPException(422, f"too many form parts: {PARTS_HINT}") from exc
        if exc.message.startswith(("Part exceeded", "Field exceeded")):
            raise HTTPException(413, f"a text part is over {FORM_PART_BYTES >> 20} MB: send the picture as the `image` file part "
                                     "(curl -F image=@photo.jpg)") from exc  # fmt: skip
        raise HTTPException(400, f"the multipart form cannot be read: {exc.message}") from exc
    except StarletteHTTPException:  # the body limit's 413
        raise
    except Exception as exc:  # noqa: BLE001 - any malformed form is the client's error
        raise HTTPException(400, f"the multipart form cannot be read: {exc}") from exc
    if not form:  # the parser is lenient: a body cut short or with another boundary reads as no parts
        await form.close()
        raise HTTPException(400, "the multipart form cannot be read: it holds no complete part (cut short, or its boundary "
                                 "is not the Content-Type's); send `query`, `image` and/or `request` parts")  # fmt: skip
    return form


async def _form_body(form, max_bytes: int) -> dict:
    """The SearchRequest a form stands for: its `request` part, `query` and the picture as base64;
    422 for a part it does not have, a part sent twice (or `query` or `image` both as a part and in
    `request`), or one of the wrong kind; 413 past `max_image_mb` before the rest of the picture is
    read."""
    unknown = sorted(set(form.keys()) - set(FORM_FIELDS))
    if unknown:  # `like`, `top_k` sent as fields were dropped silently: they belong in `request`
        raise HTTPException(422, f"unknown form part(s) {', '.join(unknown)}: {PARTS_HINT}")
    repeated = sorted(name for name in FORM_FIELDS if len(form.getlist(name)) > 1)
    if repeated:  # one of them silently won
        raise HTTPException(422, f"form part(s) {', '.join(repeated)} sent more than once: send each part once")
    body = await _request_part(form.get("request"))
    query = form.get("query")
    if isinstance(query, UploadFile):  # was dropped silently
        raise HTTPException(422, "query: must be a text field (curl -F 'query=red car'), not a file")
    if query is not None:
        if body.get("query") not in (None, query):  # the `request` part's query silently won
            raise HTTPException(422, "query: given both as a form part and in the `request` part; send it once")
        body["query"] = query
    upload = form.get("image")
    if isinstance(upload, UploadFile):
        if body.get("image") is not None:  # the file part silently won
            raise HTTPException(422, "image: given both as a file part and in the `request` part; send it once")
        data = await upload.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise HTTPException(413, f"image is over the limit of {max_bytes / 1e6:.1f} MB (max_image_mb)")
        body["image"] = base64.b64encode(data).decode()
    elif upload is not None:
        raise HTTPException(422, "image: must be a file part (curl -F image=@photo.jpg)")
    return body


def _standard_base64(req: SearchRequest) -> SearchRequest:
    """The request with its `image` in standard, padded base64, as the decoder reads it: JavaScript's
    and JWT-style encoders send base64url (`-`, `_`) and leave the padding off, which was refused
    ("Incorrect padding", "Only base64 data is allowed") for a picture that is fine. Whitespace goes
    too (line-wrapped base64), as the decoder drops it."""
    if req.image is None:
        return req
    header, comma, data = req.image.partition(",") if req.image.startswith("data:") else ("", "", req.image)
    data = "".join(data.split())
    if "-" in data or "_" in data:
        data = data.translate(URL_SAFE)
    if (missing := -len(data) % 4) in (1, 2):  # (3 missing: no base64 ends so, and the decoder says why)
        data += "=" * missing
    image = header + comma + data
    return req if image == req.image else req.model_copy(update={"image": image})


URL_SAFE = str.maketrans("-_", "+/")


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
        req = _standard_base64(req)  # here, off the event loop: ~15 ms for a 10 MB picture
        check_image_size(decode_base64_image(req.image), int(engine.settings.max_image_mb * 1e6))
        return state.responses(engine, req, lambda: search_response(engine, req))
    return state.responses.compute(key, lambda: search_response(engine, req))
