"""`/v1/jobs`: index or reindex paths on the server in the background, follow them, cancel them.

Job paths must lie under the server's library roots (`library.check_job_paths`); the indexer gets the
resolved paths. Job records name server paths: they are read with a key, like writes."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException

from vidsearch.api_models import ErrorBody, JobInfo, JobRequest

from .deps import ERRORS, State, require_key, require_write
from .library import PathRefused, check_job_paths, resolved_roots
from .limits import BODY_LIMIT

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], max_body_size=BODY_LIMIT)  # paths: kilobytes


@router.post("", response_model=JobInfo, status_code=202, responses={**ERRORS, 413: {"model": ErrorBody, "description": "the body is over the jobs' limit"}},
             dependencies=[Depends(require_write)])  # fmt: skip
def create_job(req: JobRequest, state: State) -> JobInfo:
    """Index or reindex paths on the server, in the background; poll GET /v1/jobs/{id}. Paths are
    absolute and lie under one of the server's library roots (403 otherwise; 403 too when it has none)."""
    try:
        paths = check_job_paths(req.paths, resolved_roots(state.settings.library_roots))
    except PathRefused as exc:
        raise HTTPException(exc.status, str(exc)) from exc
    return state.jobs.submit(req.kind, paths)


@router.get("", response_model=list[JobInfo], responses=ERRORS, dependencies=[Depends(require_key)])
def list_jobs(state: State) -> list[JobInfo]:
    return state.jobs.list()


@router.get("/{job_id}", response_model=JobInfo, responses=ERRORS, dependencies=[Depends(require_key)])
def get_job(job_id: str, state: State) -> JobInfo:
    job = state.jobs.get(job_id)
    if job is None:
        raise HTTPException(404, f"no job with id {job_id}")
    return job


@router.delete("/{job_id}", response_model=JobInfo, responses=ERRORS, dependencies=[Depends(require_write)])
def cancel_job(job_id: str, state: State) -> JobInfo:
    """Cancel a queued job, or stop a running one at its next step (what it committed stays, and a later
    job resumes from there); a finished job is returned as it is."""
    job = state.jobs.cancel(job_id)
    if job is None:
        raise HTTPException(404, f"no job with id {job_id}")
    return job
