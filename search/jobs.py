"""Index and reindex jobs for the HTTP service, run as `vidsearch index|reindex` subprocesses.

A subprocess, not a thread: the search service never imports the indexer (DESIGN.md), a job
survives the client that asked for it, a crash in a decoder cannot take the server down, and the
indexer's own write lock keeps one writer per index. Jobs run one at a time, in order; their state
is kept in `<db>/.jobs/<id>.json` so it outlives a server restart.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from vidsearch.api_models import JobInfo
from vidsearch.config import Settings

POLL_SECONDS = 0.25


def encoder_flags(s: Settings) -> list[str]:
    """The server's encoder backend and device, passed on to its index jobs: flags given to `serve`
    are not in the environment the job inherits."""
    flags = ["--device", s.device] if "device" in s.model_fields_set else []
    if s.encoder_backend == "triton" and s.triton_url:
        flags += ["--encoder-backend", "triton", "--triton-url", s.triton_url]
    return flags


class JobManager:
    def __init__(
        self,
        settings: Settings,
        on_progress: Callable[[], None] | None = None,
        model_flags: Callable[[], list[str]] | None = None,
    ):
        self.settings = settings
        self.on_progress = on_progress or (lambda: None)
        self.model_flags = model_flags or self._settings_model_flags
        self.dir = Path(settings.db) / ".jobs"
        self._jobs: dict[str, JobInfo] = {}
        self._lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue()
        self._load()
        self._worker = threading.Thread(target=self._run_forever, daemon=True)
        self._worker.start()

    def _load(self) -> None:
        if not self.dir.is_dir():
            return
        for f in self.dir.glob("*.json"):
            try:
                job = JobInfo.model_validate_json(f.read_text())
            except ValueError:
                continue
            if job.state in ("queued", "running"):  # the server that ran it is gone
                job = job.model_copy(update={"state": "failed", "error": "the server stopped before the job finished; submit it again (indexing resumes where it stopped)", "finished_at": time.time()})
            self._jobs[job.id] = job

    def _save(self, job: JobInfo) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f"{job.id}.tmp"
        tmp.write_text(job.model_dump_json())
        os.replace(tmp, self.dir / f"{job.id}.json")

    def _update(self, job_id: str, **changes) -> JobInfo:
        with self._lock:
            job = self._jobs[job_id].model_copy(update=changes)
            self._jobs[job_id] = job
        self._save(job)
        return job

    def submit(self, kind: str, paths: list[str]) -> JobInfo:
        job = JobInfo(id=uuid.uuid4().hex[:12], kind=kind, paths=paths, state="queued", created_at=time.time())
        with self._lock:
            self._jobs[job.id] = job
        self._save(job)
        self._queue.put(job.id)
        return job

    def get(self, job_id: str) -> JobInfo | None:
        with self._lock:
            return self._jobs.get(job_id)

    def list(self) -> list[JobInfo]:
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: -j.created_at)

    def _settings_model_flags(self) -> list[str]:
        s, flags = self.settings, []
        for name in ("model", "pretrained", "checkpoint"):
            value = getattr(s, name)
            if value is not None and name in s.model_fields_set:
                flags += [f"--{name}", str(value)]
        return flags

    def _command(self, job: JobInfo, progress_file: Path) -> list[str]:
        """The index command, with the model the index was built with (not the default one)."""
        return [sys.executable, "-m", "vidsearch.cli", job.kind, *job.paths, "--db", str(self.settings.db),
                "--json", "--progress-file", str(progress_file), *self.model_flags(), *encoder_flags(self.settings)]  # fmt: skip

    def _run_forever(self) -> None:
        while True:
            job_id = self._queue.get()
            try:
                self._run(job_id)
            except Exception as exc:  # noqa: BLE001 - a job runner bug must not kill the runner
                self._update(job_id, state="failed", error=f"job runner error: {exc}", finished_at=time.time())

    def _run(self, job_id: str) -> None:
        job = self._update(job_id, state="running")
        progress_file = self.dir / f"{job_id}.progress"
        cmd = self._command(job, progress_file)
        with open(self.dir / f"{job_id}.log", "w") as log:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
            out_chunks: list[str] = []
            reader = threading.Thread(target=lambda: out_chunks.append(proc.stdout.read()), daemon=True)
            reader.start()
            while proc.poll() is None:
                time.sleep(POLL_SECONDS)
                self._read_progress(job_id, progress_file)
                self.on_progress()
            reader.join()
        self._read_progress(job_id, progress_file)
        out = "".join(out_chunks).strip()
        if proc.returncode == 0:
            summary = json.loads(out.splitlines()[-1]) if out else {}
            self._update(job_id, state="succeeded", summary=summary, finished_at=time.time())
        else:
            lines = (self.dir / f"{job_id}.log").read_text(errors="replace").strip().splitlines()
            reason = lines[-1] if lines else f"exit code {proc.returncode}"
            self._update(job_id, state="failed", error=reason.removeprefix("error: "), finished_at=time.time())
        self.on_progress()

    def _read_progress(self, job_id: str, path: Path) -> None:
        try:
            progress = json.loads(path.read_text())
        except (OSError, ValueError):
            return
        self._update(job_id, progress=progress)
