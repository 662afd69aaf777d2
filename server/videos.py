"""`/v1/videos`: list, describe and delete indexed videos, stream their media, cut thumbnails."""

from __future__ import annotations

import base64
import bisect
import hashlib
import json
from pathlib import Path
from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.responses import FileResponse, RedirectResponse

from vidsearch import objectstore
from vidsearch.api_models import ErrorBody, VideoInfo, VideoList
from vidsearch.store import StoreError

from . import media as ffmpeg_media  # the module (a route below is named `media`)
from .deps import INDEX_ERRORS, IndexStore, State, VideoRow, require_media_read, require_read, require_write
from .exposure import Viewer
from .files import IndexedFileResponse, etag_matches
from .library import IndexedFile, PathRefused, open_indexed, resolved_roots
from .media import THUMB_WIDTHS, cached_thumbnail, ffmpeg_slot, media_type, thumbnail as cut_thumbnail, thumbnail_key
from .presenting import video_info

router = APIRouter(prefix="/v1/videos", tags=["videos"])


MAX_OFFSET = 10_000_000


CURSOR_TITLE = 256  # characters of the title the order reads (a cursor holds them; a manifest's titles can be long)


def sort_key(row: dict) -> tuple[str, str]:
    """The listing's order: title without regard to case (its first CURSOR_TITLE characters), then id
    (titles repeat)."""
    return (row["title"].lower()[:CURSOR_TITLE], row["video_id"])


def encode_cursor(row: dict) -> str:
    """A cursor holds the sort key of the last row a page held, not a position: a video deleted, added
    or renamed between two pages then neither repeats a row nor skips one, as an offset did."""
    return "k" + base64.urlsafe_b64encode(json.dumps(list(sort_key(row))).encode()).decode().rstrip("=")


def page_start(rows: list[dict], offset: int, cursor: str | None) -> int:
    """Where a page of `rows` (in `sort_key` order) starts: just after the row `cursor` names (a previous
    page's `next_cursor`), else at `offset`. A cursor this server did not make is a 400; a plain number
    is read as an offset (the cursors of servers before keyed cursors)."""
    if cursor is None:
        return offset
    if cursor.isascii() and cursor.isdigit() and int(cursor) <= MAX_OFFSET:
        return int(cursor)
    try:
        if not cursor.startswith("k"):
            raise ValueError(cursor)
        key = json.loads(base64.urlsafe_b64decode(cursor[1:] + "=" * (-len(cursor[1:]) % 4)))
        if not (isinstance(key, list) and len(key) == 2 and all(isinstance(k, str) for k in key)):
            raise ValueError(cursor)
    except ValueError:  # binascii.Error and JSONDecodeError are ValueErrors
        raise HTTPException(400, "cursor is not one this server gave: pass a page's `next_cursor` as it is") from None
    return bisect.bisect_right([sort_key(r) for r in rows], tuple(key))  # right after where the last row sorted


def videos_page(rows: list[dict], limit: int, offset: int = 0, cursor: str | None = None) -> tuple[list[dict], str | None]:
    """One page of `rows` in title order and the cursor of the next (None on the last page)."""
    rows = sorted(rows, key=sort_key)
    start = page_start(rows, offset, cursor)
    page = rows[start : start + limit]
    return page, encode_cursor(page[-1]) if page and start + limit < len(rows) else None


@router.get("", response_model=VideoList, responses=INDEX_ERRORS, dependencies=[Depends(require_read)])
def list_videos(
    store: IndexStore,
    view: Viewer,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="rows to skip (or follow `cursor`)")] = 0,
    cursor: Annotated[str | None, Query(max_length=1024, description="the previous page's `next_cursor`; wins over `offset`")] = None,
) -> VideoList:
    """Indexed videos, in title order; page by passing each answer's `next_cursor` as `cursor` (it
    names the page's last video, so deletions between pages neither skip nor repeat a video)."""
    rows = store.video_rows()
    page, next_cursor = videos_page(rows, limit, offset, cursor)
    return VideoList(videos=[view.video(video_info(r)) for r in page], total=len(rows), next_cursor=next_cursor)


@router.get("/{video_id}", response_model=VideoInfo, responses=INDEX_ERRORS, dependencies=[Depends(require_read)])
def get_video(row: VideoRow, view: Viewer) -> VideoInfo:
    return view.video(video_info(row))


@router.delete("/{video_id}", responses={**INDEX_ERRORS, 409: {"model": ErrorBody}}, dependencies=[Depends(require_write)])
def delete_video(row: VideoRow, store: IndexStore, state: State) -> dict:
    """Remove a video from every table; searches stop returning it once the deletion commits. A delete
    that finds it already gone (another delete of it went first) is a 404, as it would be a moment
    later: concurrent deletes of one video all said 200, the later ones with `removed: 0`."""
    video_id = row["video_id"]
    try:
        with store.write_lock():
            removed = store.delete_videos([video_id])
    except StoreError as exc:
        raise HTTPException(409, f"{exc}; try again when the running job finishes") from exc
    if not removed:
        raise HTTPException(404, f"no indexed video with id {video_id}")
    state.refresh(now=True)
    return {"deleted": video_id, "removed": removed}


def indexed_file(store, row: dict, state) -> IndexedFile:
    """The indexed video's file, opened and checked (library.py), or the HTTP error that says why not."""
    try:
        return open_indexed(store, row, resolved_roots(state.settings.library_roots))
    except PathRefused as exc:
        raise HTTPException(exc.status, str(exc)) from exc


MEDIA_ROUTE = dict(
    responses={**INDEX_ERRORS, 206: {"description": "partial content (range request)"}, 304: {"description": "not modified (If-None-Match)"},
               307: {"description": "a video in object storage: its presigned URL (range requests go there)"},
               409: {"model": ErrorBody}, 416: {"model": ErrorBody, "description": "range not satisfiable (it starts past the end of the file)"}},  # fmt: skip
    response_class=FileResponse,
    dependencies=[Depends(require_media_read)],
)


@router.head("/{video_id}/media", operation_id="media_head", **MEDIA_ROUTE)
@router.get("/{video_id}/media", **MEDIA_ROUTE)
def media(row: VideoRow, store: IndexStore, state: State) -> Response:
    """The video file as it was indexed, with HTTP range requests so a browser player can seek, ETags
    (304) and HEAD; 409 when the file changed since it was indexed (reindex)."""
    if objectstore.is_uri(row["path"]):
        # object storage: a presigned URL valid for an hour answers the player's range requests itself,
        # so the bytes never pass through this server (its bandwidth, a worker per player)
        return RedirectResponse(objectstore.presign(row["path"], seconds=3600), status_code=307)
    f = indexed_file(store, row, state)
    return IndexedFileResponse(f, media_type=media_type(Path(row["path"])))


THUMBNAIL_ROUTE = dict(
    responses={**INDEX_ERRORS, 200: {"content": {"image/jpeg": {}}}, 304: {"description": "not modified (If-None-Match)"},
               409: {"model": ErrorBody}},  # fmt: skip
    response_class=Response,
    dependencies=[Depends(require_media_read)],
)


@router.head("/{video_id}/thumbnail", operation_id="thumbnail_head", **THUMBNAIL_ROUTE)  # as media and clips answer HEAD
@router.get("/{video_id}/thumbnail", **THUMBNAIL_ROUTE)
async def thumbnail(
    request: Request,
    row: VideoRow,
    store: IndexStore,
    state: State,
    t: Annotated[float, Query(ge=0, le=1e7, allow_inf_nan=False, description="seconds from the start (rounded to 0.1 s)")] = 0.0,
    width: Annotated[int, Query(ge=16, le=1920, description=f"pixels; served at the next of {list(THUMB_WIDTHS)}")] = 320,
) -> Response:
    """A JPEG of the frame at `t` seconds (cached), with an ETag (304 on If-None-Match) and HEAD.

    An async route, as clips are (exports.py): a new thumbnail waits for an ffmpeg slot on the event
    loop (media.ffmpeg_slot), and only its cut runs in a worker thread. As a sync route each request
    held one of anyio's 40 threads while it waited, and a burst of 115 thumbnails held them all:
    /v1/videos/{id} took 5.3 s. HEAD answers from the cache, and makes nothing: a thumbnail not cut
    yet gets the headers without a length or an ETag."""
    if t > row["duration"]:
        raise HTTPException(400, f"t={t} is past the end of the video ({row['duration']:.2f} s)")
    t, width = thumbnail_key(t, width, row["duration"], row.get("fps"))
    jpeg = await anyio.to_thread.run_sync(_cached_thumbnail, row, store, state, t, width)
    if jpeg is None and request.method == "HEAD":
        head = Response(media_type="image/jpeg")
        del head.headers["content-length"]  # not "0": its length is unknown until it is cut
        return head
    for _ in range(2):  # a thumbnail another request cut (and then trimmed from the cache at once) is cut here
        if jpeg is not None:
            break
        made, jpeg = await ffmpeg_media.one_cut((str(state.thumbs), row["video_id"], t, width), lambda: _cut_in_a_slot(row, store, state, t, width))
        if made:
            break
        jpeg = await anyio.to_thread.run_sync(_cached_thumbnail, row, store, state, t, width)  # another request's cut
    if jpeg is None:
        raise HTTPException(404, f"no frame at t={t:.2f} in video {row['video_id']}")
    return jpeg_response(request, jpeg)


async def _cut_in_a_slot(row: dict, store, state, t: float, width: int) -> bytes | None:
    async with ffmpeg_slot(ffmpeg_media.THUMB_WAIT):
        return await anyio.to_thread.run_sync(_cut_thumbnail, row, store, state, t, width)


def _cached_thumbnail(row: dict, store, state, t: float, width: int) -> bytes | None:
    """(In a worker thread.) The thumbnail cut before, or None: checked against the indexed file first,
    as a cut is (409 when it changed)."""
    if not objectstore.is_uri(row["path"]):
        indexed_file(store, row, state).close()
    return cached_thumbnail(row["video_id"], t, width, state.thumbs)


def _cut_thumbnail(row: dict, store, state, t: float, width: int) -> bytes | None:
    """(In a worker thread, holding an ffmpeg slot.) The thumbnail cut from the indexed file."""
    if objectstore.is_uri(row["path"]):
        return cut_thumbnail(row["path"], row["video_id"], t, width, state.thumbs)
    with indexed_file(store, row, state) as f:
        return cut_thumbnail(f, row["video_id"], t, width, state.thumbs)


def jpeg_response(request: Request, jpeg: bytes) -> Response:
    """The thumbnail with an ETag of its bytes: a browser revalidating a result card gets a 304 with no
    body (the frame is the same until the video is reindexed), and HEAD gets GET's headers alone."""
    headers = {"Cache-Control": "max-age=86400", "ETag": f'"{hashlib.sha1(jpeg).hexdigest()[:20]}"'}
    match = request.headers.get("if-none-match")
    if match is not None and etag_matches(match, headers["ETag"]):
        return Response(status_code=304, headers=headers)
    if request.method == "HEAD":
        return Response(media_type="image/jpeg", headers={**headers, "Content-Length": str(len(jpeg))})
    return Response(jpeg, media_type="image/jpeg", headers=headers)
