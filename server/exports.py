"""Moments people take away: `GET /v1/videos/{id}/clip` (the moment as a playable file) and
`POST /v1/export` (moments as an OpenTimelineIO or CMX 3600 edit decision list).

A router of its own, beside videos.py: cutting (clips.py) and timeline writing
(`vidsearch.timeline_export`) are their own jobs, and the routes only check ranges and ids.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Response
from fastapi.responses import FileResponse

from vidsearch import objectstore
from vidsearch.api_models import ErrorBody
from vidsearch.timeline_export import FORMATS, ExportRequest, export_timeline

from .clips import ClipError, check_range, cut_clip
from .deps import ERRORS, IndexStore, State, VideoRow, index_store, require_media_read, require_read
from .videos import indexed_file

router = APIRouter(prefix="/v1", tags=["moments"])

Seconds = Query(..., ge=0, le=1e7, allow_inf_nan=False, description="seconds from the start (player time)")


@router.get(
    "/videos/{video_id}/clip",
    responses={**ERRORS, 200: {"content": {"video/mp4": {}}}, 409: {"model": ErrorBody}},
    response_class=FileResponse,
    dependencies=[Depends(require_media_read)],  # like media: a signed URL works in a browser under --read-auth
)
def clip(row: VideoRow, store: IndexStore, state: State, start: Annotated[float, Seconds], end: Annotated[float, Seconds]) -> FileResponse:
    """The moment [start, end] as a playable file: stream copy when a keyframe sits at `start`,
    re-encoded otherwise (header `X-Clip-Method`: copy | encode); at most 300 s long. Cut from the
    file only while it is still the one indexed (409 otherwise), as media is served."""
    try:
        start, end = check_range(start, end, float(row["duration"]))
    except ClipError as exc:
        raise HTTPException(400, str(exc)) from exc
    suffix = Path(row["path"]).suffix
    try:
        if objectstore.is_uri(row["path"]):
            cut = cut_clip(objectstore.presign(row["path"], seconds=300), row["video_id"], start, end, state.thumbs, suffix=suffix)
        else:
            with indexed_file(store, row, state) as f:
                cut = cut_clip(f.proc_path, row["video_id"], start, end, state.thumbs, suffix=suffix, pass_fds=(f.fd,))
    except ClipError as exc:
        raise HTTPException(422, str(exc)) from exc
    stem = re.sub(r"[^\w.-]+", "_", row["title"])[:80] or row["video_id"]
    return FileResponse(cut.path, media_type=cut.media_type, filename=f"{stem}_{start:.2f}-{end:.2f}{cut.path.suffix}",
                        content_disposition_type="inline", headers={"X-Clip-Method": cut.method})  # fmt: skip


@router.post("/export", dependencies=[Depends(require_read)], responses={**ERRORS, 200: {"content": {t: {} for t in FORMATS.values()}}}, response_class=Response)
def export(req: ExportRequest, state: State) -> Response:
    """Moments (adjusted as the user likes: padding, bounds) as an edit decision list: OpenTimelineIO
    JSON (`format: otio`) or CMX 3600 (`format: edl`), each moment one clip of the video's file."""
    engine = state.engine()
    known = engine.snapshot.videos if engine is not None else {}
    videos = {}
    for vid in {i.video_id for i in req.items}:
        row = known.get(vid) or next(iter(index_store(state).video_rows(vid)), None)
        if row is None:
            raise HTTPException(404, f"no indexed video with id {vid}")
        if any(i.start >= row["duration"] for i in req.items if i.video_id == vid):
            raise HTTPException(400, f"a moment of video {vid} starts past its end ({row['duration']:.2f} s)")
        videos[vid] = {"title": row["title"], "uri": row["path"], "duration": row["duration"]}
    body = export_timeline(req, videos)
    name = f"moments.{req.format}"
    return Response(body, media_type=FORMATS[req.format], headers={"Content-Disposition": f'attachment; filename="{name}"'})
