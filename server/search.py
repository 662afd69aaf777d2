"""`POST /v1/search`: videos (or moments) matching a sentence, best first, with the evidence for each."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException

from vidsearch.api_models import SearchRequest, SearchResponse
from vidsearch.search import SearchError

from .deps import ERRORS, OptionalEngine, require_read
from .exposure import Viewer
from .presenting import search_response

router = APIRouter(prefix="/v1", tags=["search"], dependencies=[Depends(require_read)])


@router.post("/search", response_model=SearchResponse, responses=ERRORS)
def search(req: SearchRequest, engine: OptionalEngine, view: Viewer) -> SearchResponse:
    """Videos (or moments) matching a sentence, best first, with the evidence for each."""
    if engine is None:  # nothing indexed yet (or no model): no results, and /readyz says why
        return SearchResponse(query=req.query, group_by=req.group_by, results=[], index_version="empty", took_ms=0.0)
    try:
        resp = search_response(engine, req)
    except SearchError as exc:
        raise HTTPException(400, str(exc)) from exc
    for r in resp.results:
        r.video = view.video(r.video)
    return resp
