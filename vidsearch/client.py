"""A small typed Python client for the vidsearch HTTP API.

    from vidsearch.client import VidsearchClient
    with VidsearchClient("http://127.0.0.1:8080") as vs:
        for r in vs.search("a dog catches a red frisbee").results:
            print(r.video.title, r.moments[0].start if r.moments else None)
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from .api_models import JobInfo, SearchRequest, SearchResponse, VideoInfo, VideoList


class ApiError(RuntimeError):
    """The server answered with an error; `status` and `detail` say which and why."""

    def __init__(self, status: int, detail: str):
        self.status, self.detail = status, detail
        super().__init__(f"HTTP {status}: {detail}")


class VidsearchClient:
    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 60.0):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def __enter__(self) -> VidsearchClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kw) -> httpx.Response:
        try:
            resp = self._http.request(method, path, **kw)
        except httpx.TransportError as exc:
            raise ApiError(0, f"cannot reach the search API at {self.base_url}: {exc}") from exc
        if resp.status_code >= 400:
            try:
                detail = resp.json().get("detail", resp.text)
            except ValueError:
                detail = resp.text
            raise ApiError(resp.status_code, str(detail))
        return resp

    def search(self, query: str, **options: Any) -> SearchResponse:
        """`options` are SearchRequest fields: top_k, group_by, channels, filters, min_score, cursor."""
        body = SearchRequest(query=query, **options).model_dump(exclude_none=True, mode="json")
        return SearchResponse.model_validate(self._call("POST", "/v1/search", json=body).json())

    def videos(self, limit: int = 100, offset: int = 0) -> VideoList:
        return VideoList.model_validate(self._call("GET", "/v1/videos", params={"limit": limit, "offset": offset}).json())

    def video(self, video_id: str) -> VideoInfo:
        return VideoInfo.model_validate(self._call("GET", f"/v1/videos/{video_id}").json())

    def delete_video(self, video_id: str) -> dict:
        return self._call("DELETE", f"/v1/videos/{video_id}").json()

    def media_url(self, video_id: str) -> str:
        return f"{self.base_url}/v1/videos/{video_id}/media"

    def thumbnail(self, video_id: str, t: float = 0.0, width: int = 320) -> bytes:
        return self._call("GET", f"/v1/videos/{video_id}/thumbnail", params={"t": t, "width": width}).content

    def create_job(self, paths: list[str], kind: str = "index") -> JobInfo:
        return JobInfo.model_validate(self._call("POST", "/v1/jobs", json={"kind": kind, "paths": paths}).json())

    def job(self, job_id: str) -> JobInfo:
        return JobInfo.model_validate(self._call("GET", f"/v1/jobs/{job_id}").json())

    def jobs(self) -> list[JobInfo]:
        return [JobInfo.model_validate(j) for j in self._call("GET", "/v1/jobs").json()]

    def wait_for_job(self, job_id: str, timeout: float = 600.0, poll: float = 0.5) -> JobInfo:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job.state in ("succeeded", "failed") or time.monotonic() > deadline:
                return job
            time.sleep(poll)

    def ready(self) -> dict:
        return self._call("GET", "/readyz").json()

    def healthy(self) -> bool:
        try:
            return self._call("GET", "/healthz").status_code == 200
        except ApiError:
            return False
