"""`/v1/jobs`: index or reindex paths on the server in the background, and follow them."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException

from vidsearch.api_models import JobInfo, JobRequest

from .deps import ERRORS, State, require_read, require_write

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.post("", response_model=JobInfo, status_code=202, responses=ERRORS, dependencies=[Depends(require_write)])
def create_job(req: JobRequest, state: State) -> JobInfo:
    """Index or reindex paths on the server, in the background; poll GET /v1/jobs/{id}."""
    missing = [p for p in req.paths if not Path(p).exists()]
    if missing:
        raise HTTPException(400, f"path(s) not found on the server: {', '.join(missing[:5])}")
    return state.jobs.submit(req.kind, req.paths)


@router.get("", response_model=list[JobInfo], responses=ERRORS, dependencies=[Depends(require_read)])
def list_jobs(state: State) -> list[JobInfo]:
    return state.jobs.list()


@router.get("/{job_id}", response_model=JobInfo, responses=ERRORS, dependencies=[Depends(require_read)])
def get_job(job_id: str, state: State) -> JobInfo:
    job = state.jobs.get(job_id)
    if job is None:
        raise HTTPException(404, f"no job with id {job_id}")
    return job
