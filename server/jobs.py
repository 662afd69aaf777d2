"""`/v1/jobs`: index or reindex paths on the server in the background, follow them, cancel them.

Job paths must lie under the server's library roots (`library.check_job_paths`); the indexer gets the
resolved paths. Job records name server paths: they are read with a key, like writes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query

from vidsearch.api_models import ErrorBody, JobInfo, JobRequest

from .bodies import CheckedBody
from .deps import ERRORS, State, require_key, require_write
from .library import PathRefused, check_job_paths, resolved_roots
from .limits import BODY_LIMIT

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], max_body_size=BODY_LIMIT, route_class=CheckedBody)  # paths: kilobytes

# the codes each route can answer (a key is always needed: 401 without one, 403 for a wrong one or none
# configured), not every code an API may send: a client generated from the description handles these
KEYED = {code: ERRORS[code] for code in (401, 403)}
JobState = JobInfo.model_fields["state"].annotation  # the Literal of the states a job is in


@router.post("", response_model=JobInfo, status_code=202, responses={**KEYED, 400: ERRORS[400], 413: {"model": ErrorBody, "description": "the body is over the jobs' limit"}, 422: ERRORS[422]},
             dependencies=[Depends(require_write)])  # fmt: skip
def create_job(req: JobRequest, state: State) -> JobInfo:
    """Index or reindex paths on the server, in the background; poll GET /v1/jobs/{id}. Paths are
    absolute and lie under one of the server's library roots (403 otherwise; 403 too when it has none)."""
    try:
        paths = check_job_paths(req.paths, resolved_roots(state.settings.library_roots))
    except PathRefused as exc:
        raise HTTPException(exc.status, str(exc)) from exc
    return state.jobs.submit(req.kind, paths)


@router.get("", response_model=list[JobInfo], responses={**KEYED, 422: ERRORS[422]}, dependencies=[Depends(require_key)])
def list_jobs(
    state: State,
    limit: Annotated[int, Query(ge=1, le=1000, description="at most this many jobs, the newest")] = 50,
    job_state: Annotated[JobState | None, Query(alias="state", description="only the jobs in this state")] = None,
) -> list[JobInfo]:
    """Jobs, newest first. Finished jobs are kept for a while (the newest 200), queued and running ones
    until they end."""
    return state.jobs.list(state=job_state, limit=limit)


@router.get("/{job_id}", response_model=JobInfo, responses={**KEYED, 404: ERRORS[404]}, dependencies=[Depends(require_key)])
def get_job(job_id: str, state: State) -> JobInfo:
    job = state.jobs.get(job_id)
    if job is None:
        raise HTTPException(404, f"no job with id {job_id}")
    return job


@router.delete("/{job_id}", response_model=JobInfo, responses={**KEYED, 404: ERRORS[404]}, dependencies=[Depends(require_write)])
def cancel_job(job_id: str, state: State) -> JobInfo:
    """Cancel a queued job, or stop a running one at its next step (what it committed stays, and a later
    job resumes from there); a finished job is returned as it is."""
    job = state.jobs.cancel(job_id)
    if job is None:
        raise HTTPException(404, f"no job with id {job_id}")
    return job
