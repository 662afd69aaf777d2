"""`/v1/videos`: list, describe and delete indexed videos, stream their media, cut thumbnails."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Response
from fastapi.responses import FileResponse, RedirectResponse

from vidsearch import objectstore
from vidsearch.api_models import ErrorBody, VideoInfo, VideoList
from vidsearch.store import StoreError

from .deps import ERRORS, IndexStore, State, VideoRow, require_read, require_write
from .media import media_type, thumbnail as cut_thumbnail
from .presenting import video_info

router = APIRouter(prefix="/v1/videos", tags=["videos"])


@router.get("", response_model=VideoList, responses=ERRORS, dependencies=[Depends(require_read)])
def list_videos(
    store: IndexStore,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> VideoList:
    """Indexed videos, in title order."""
    rows = sorted(store.video_rows(), key=lambda r: (r["title"].lower(), r["video_id"]))
    page = rows[offset : offset + limit]
    return VideoList(videos=[video_info(r) for r in page], total=len(rows), next_cursor=str(offset + limit) if offset + limit < len(rows) else None)


@router.get("/{video_id}", response_model=VideoInfo, responses=ERRORS, dependencies=[Depends(require_read)])
def get_video(row: VideoRow) -> VideoInfo:
    return video_info(row)


@router.delete("/{video_id}", responses={**ERRORS, 409: {"model": ErrorBody}}, dependencies=[Depends(require_write)])
def delete_video(row: VideoRow, store: IndexStore, state: State) -> dict:
    """Remove a video from every table; searches stop returning it once the deletion commits."""
    video_id = row["video_id"]
    try:
        with store.write_lock():
            removed = store.delete_videos([video_id])
    except StoreError as exc:
        raise HTTPException(409, f"{exc}; try again when the running job finishes") from exc
    state.refresh(now=True)
    return {"deleted": video_id, "removed": removed}


@router.get(
    "/{video_id}/media",
    responses={**ERRORS, 206: {"description": "partial content (range request)"},
               307: {"description": "a video in object storage: its presigned URL (range requests go there)"}},
    response_class=FileResponse,
    dependencies=[Depends(require_read)],
)
def media(row: VideoRow) -> Response:
    """The video file, with HTTP range requests so a browser player can seek. A video in object storage
    is a 307 redirect to a presigned URL valid for an hour: the store answers the range requests itself,
    so the bytes never pass through this server (which would cost its bandwidth and a worker per player)."""
    if objectstore.is_uri(row["path"]):
        return RedirectResponse(objectstore.presign(row["path"], seconds=3600), status_code=307)
    path = Path(row["path"])
    if not path.is_file():
        raise HTTPException(404, f"the file of video {row['video_id']} is no longer on the server; reindex")
    return FileResponse(path, media_type=media_type(path), filename=path.name, content_disposition_type="inline")


@router.get(
    "/{video_id}/thumbnail",
    responses={**ERRORS, 200: {"content": {"image/jpeg": {}}}},
    response_class=Response,
    dependencies=[Depends(require_read)],
)
def thumbnail(
    row: VideoRow,
    state: State,
    t: Annotated[float, Query(ge=0, le=1e7, allow_inf_nan=False, description="seconds from the start")] = 0.0,
    width: Annotated[int, Query(ge=16, le=1920)] = 320,
) -> Response:
    """A JPEG of the frame at `t` seconds (cached)."""
    if t > row["duration"]:
        raise HTTPException(400, f"t={t} is past the end of the video ({row['duration']:.2f} s)")
    jpeg = cut_thumbnail(Path(row["path"]), row["video_id"], t, row["duration"], state.thumbs, width)
    if jpeg is None:
        raise HTTPException(404, f"no frame at t={t:.2f} in video {row['video_id']}")
    return Response(jpeg.read_bytes(), media_type="image/jpeg", headers={"Cache-Control": "max-age=86400"})
