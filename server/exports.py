"""Moments people take away: `GET /v1/videos/{id}/clip` (the moment as a playable file) and
`POST /v1/export` (moments as an OpenTimelineIO or CMX 3600 edit decision list).

A router of its own, beside videos.py: cutting (clips.py) and timeline writing
(`vidsearch.timeline_export`) are their own jobs, and the routes only check ranges and ids.

`clip` is an async route: a clip cut before is served at once, and a new cut waits for an ffmpeg
slot on the event loop (media.ffmpeg_slot), not in a worker thread. As a sync route, each waiting
or cutting request held one of anyio's 40 threads, which every other sync route needs too.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import anyio.from_thread
import anyio.to_thread
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.responses import FileResponse

from vidsearch import objectstore
from vidsearch.api_models import ErrorBody
from vidsearch.timeline_export import FORMATS, ExportError, ExportRequest, export_timeline

from .bodies import CheckedBody
from .clips import Clip, ClipError, NoFrames, cached_clip, check_range, cut_clip, uncut_media_type
from .deps import INDEX_ERRORS, IndexStore, State, VideoRow, index_store, require_media_read, require_read
from .exposure import Viewer
from .files import IndexedFileResponse, content_disposition
from .library import IndexedFile
from .media import Abandoned, ffmpeg_slot, one_cut
from .videos import indexed_file

router = APIRouter(prefix="/v1", tags=["moments"], route_class=CheckedBody)  # POST /v1/export's body

Seconds = Query(..., ge=0, le=1e7, allow_inf_nan=False, description="seconds from the start (player time)")


CLIP_ROUTE = dict(
    responses={**INDEX_ERRORS, 200: {"content": {"video/mp4": {}}}, 206: {"description": "partial content (range request)"},
               304: {"description": "not modified (If-None-Match)"}, 409: {"model": ErrorBody},
               416: {"model": ErrorBody, "description": "range not satisfiable (a byte range past the clip's end)"},
               503: {"model": ErrorBody, "description": "no index yet; or every ffmpeg slot stayed busy (Retry-After)"}},  # fmt: skip
    response_class=FileResponse,
    dependencies=[Depends(require_media_read)],  # like media: a signed URL works in a browser under --read-auth
)
CLIENT_GONE = 499  # nginx's "client closed request": what the latency metrics record for an abandoned cut


@router.head("/videos/{video_id}/clip", operation_id="clip_head", **CLIP_ROUTE)  # as media answers HEAD
@router.get("/videos/{video_id}/clip", **CLIP_ROUTE)
async def clip(request: Request, row: VideoRow, store: IndexStore, state: State, start: Annotated[float, Seconds],
               end: Annotated[float, Seconds]) -> Response:  # fmt: skip
    """The moment [start, end] as a playable file: stream copy when a keyframe sits at `start`,
    re-encoded otherwise (header `X-Clip-Method`: copy | encode); at most 300 s long. Cut from the
    file only while it is still the one indexed (409 otherwise), as media is served. A new cut waits
    a few seconds at most for the server's ffmpeg (503 with Retry-After past that) and is stopped if
    the client leaves; a start inside the last frame's interval is moved back to that frame. HEAD
    answers from a clip cut before and never cuts one."""
    try:
        start, end = check_range(start, end, float(row["duration"]), fps=row.get("fps"))
    except ClipError as exc:
        raise HTTPException(400, str(exc)) from exc
    for _ in range(2):  # a clip trimmed from the cache between its cut and its opening is cut again
        sent = await anyio.to_thread.run_sync(_cached, row, store, state, start, end)
        if sent is None and request.method == "HEAD":
            return _uncut_head(row)
        if sent is None:  # cut here, or (one_cut) wait for another request's cut of it and read the cache next turn
            try:
                _, sent = await one_cut((str(state.thumbs), row["video_id"], start, end), lambda: _cut_in_a_slot(request, row, store, state, start, end))
            except Abandoned:  # nobody is there to answer
                return Response(status_code=CLIENT_GONE)
        if sent is not None:
            break
    else:
        raise HTTPException(503, "the clip cache is being filled faster than clips can be sent; try again")
    cut, fd = sent
    try:
        stem = re.sub(r"[^\w.-]+", "_", row["title"] or "")[:80] or row["video_id"]
        clip_file = IndexedFile(fd, os.fstat(fd), f"{stem}_{cut.start:.2f}-{cut.end:.2f}{cut.path.suffix}")
        return IndexedFileResponse(clip_file, media_type=cut.media_type, headers={"X-Clip-Method": cut.method})
    except BaseException:
        os.close(fd)  # the response would have closed it once sent
        raise


async def _cut_in_a_slot(request: Request, row: dict, store, state, start: float, end: float) -> tuple[Clip, int] | None:
    async with ffmpeg_slot():
        return await anyio.to_thread.run_sync(_cut, row, store, state, start, end, _client_gone(request))


def _uncut_head(row: dict) -> Response:
    """HEAD for a clip not cut yet: the headers a GET would send that are known without cutting it (HEAD
    made the whole clip: 0.47 s and a 209 KB cache file for a 15 s clip). No length, no ETag; the type
    where the cut does not decide it (clips.uncut_media_type)."""
    head = Response(headers={"Accept-Ranges": "bytes"}, media_type=uncut_media_type(Path(row["path"]).suffix))
    del head.headers["content-length"]  # not "0": its length is unknown until it is cut
    return head


def _cached(row: dict, store, state, start: float, end: float) -> tuple[Clip, int] | None:
    """(In a worker thread.) A clip cut before, opened, or None: checked against the indexed file
    first, as a cut is (409 when it changed)."""
    if not objectstore.is_uri(row["path"]):
        indexed_file(store, row, state).close()
    cut = cached_clip(row["video_id"], start, end, state.thumbs, Path(row["path"]).suffix)
    return _opened(cut) if cut is not None else None


def _cut(row: dict, store, state, start: float, end: float, stop: Callable[[], bool]) -> tuple[Clip, int] | None:
    """(In a worker thread, holding an ffmpeg slot.) The clip cut, opened; None when the cache lost it
    before it could be opened. Not begun for a client that left while it waited for the slot."""
    if stop():
        raise Abandoned("the client went away")
    suffix = Path(row["path"]).suffix
    try:
        if objectstore.is_uri(row["path"]):
            cut = cut_clip(objectstore.presign(row["path"], seconds=300), row["video_id"], start, end, state.thumbs, suffix=suffix, stop=stop)
        else:
            with indexed_file(store, row, state) as f:
                cut = cut_clip(f.proc_path, row["video_id"], start, end, state.thumbs, suffix=suffix, pass_fds=(f.fd,), stop=stop)
    except NoFrames as exc:  # as a thumbnail of that stretch: nothing there to show
        raise HTTPException(404, str(exc)) from exc
    except ClipError as exc:
        raise HTTPException(422, str(exc)) from exc
    return _opened(cut)


def _opened(cut: Clip) -> tuple[Clip, int] | None:
    """The clip and a descriptor to send it from (a later trim of the cache cannot cut it short);
    None when it was trimmed from the cache first."""
    try:
        return cut, os.open(cut.path, os.O_RDONLY)
    except FileNotFoundError:
        return None


def _client_gone(request: Request) -> Callable[[], bool]:
    """For the cutting thread: whether the client has closed its connection (asked on the event loop,
    where the connection is)."""
    return lambda: anyio.from_thread.run(request.is_disconnected)


@router.post("/export", dependencies=[Depends(require_read)], response_class=Response,
             responses={**INDEX_ERRORS, 200: {"content": {t: {} for t in FORMATS.values()}}, 413: {"model": ErrorBody, "description": "the body is over the server's limit"}})  # fmt: skip
def export(req: ExportRequest, state: State, view: Viewer) -> Response:
    """Moments (adjusted as the user likes: padding, bounds) as an edit decision list: OpenTimelineIO
    JSON (`format: otio`) or CMX 3600 (`format: edl`, at an SMPTE rate: 23.976, 24, 25, 29.97, 30,
    47.952, 48, 50, 59.94 or 60 fps), each moment one clip of the video's file. The file is named as
    the other reads name it (exposure.py): relative to its library root without a key, a `file://` URL
    with one."""
    engine = state.engine()
    known = engine.snapshot.videos if engine is not None else {}
    videos = {}
    for vid in {i.video_id for i in req.items}:
        row = known.get(vid) or next(iter(index_store(state).video_rows(vid)), None)
        if row is None:
            raise HTTPException(404, f"no indexed video with id {vid}")
        if any(i.start >= row["duration"] for i in req.items if i.video_id == vid):
            raise HTTPException(400, f"a moment of video {vid} starts past its end ({row['duration']:.2f} s)")
        videos[vid] = {"title": row["title"], "uri": view.path(row["path"]), "duration": row["duration"]}
    try:
        body = export_timeline(req, videos)
    except ExportError as exc:  # what the writer refuses to write (a rate, a range): the request's
        raise HTTPException(400, str(exc)) from exc
    disposition = content_disposition("attachment", f"moments.{req.format}")
    return Response(body, media_type=FORMATS[req.format], headers={"Content-Disposition": disposition})
