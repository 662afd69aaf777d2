"""The library page: what is indexed (counts, hours, the model fingerprint), which files failed and
why, and starting an index or reindex job whose progress updates live.

The progress panel is a Streamlit fragment that reruns itself every second while its job runs, so
only that panel refreshes (the page stays usable), and it stops polling once the job is done — then
the caches are cleared and the whole page reruns once, to show the new counts.
"""

from __future__ import annotations

import time

import pandas as pd
import streamlit as st

# absolute imports: Streamlit runs this file as a script, outside the package
from vidsearch.api_models import JobInfo
from vidsearch.ui import cache
from vidsearch.ui.backend import Backend, BackendError, LibraryStats
from vidsearch.ui.cards import md_escape
from vidsearch.ui.messages import guarded, loading, show_error, show_indexing

JOB = "job_id"  # session key: the job started from this page
JOB_DONE = "job_done"  # session key: the finished job whose end was already acted on
POLL_SECONDS = 1.0
STATE_ICON = {"queued": ":material/schedule:", "running": ":material/autorenew:", "succeeded": ":material/check_circle:", "failed": ":material/cancel:"}


def overview(stats: LibraryStats) -> None:
    cols = st.columns(4)
    cols[0].metric("Videos", stats.videos)
    cols[1].metric("Hours", f"{stats.hours:.2f}", help=f"{stats.hours * 3600:.0f} seconds of video")
    cols[2].metric("Files", "n/a" if stats.files is None else stats.files, help="paths seen, including copies and failures")
    cols[3].metric("Failed files", "n/a" if stats.failed is None else stats.failed)
    lines = [f"**Model:** {md_escape(stats.model) if stats.model else 'none yet'}"]
    if stats.fingerprint:
        lines.append(f"**Fingerprint:** `{stats.fingerprint}`")
    if stats.index_version:
        lines.append(f"**Index version:** `{stats.index_version}`")
    st.markdown("  \n".join(lines))
    if stats.not_ready:
        st.info(f"**Searches cannot be answered yet.** {stats.not_ready}", icon=":material/inbox:")


def indexed_videos(be: Backend) -> None:
    """Every indexed video: title, id, file and duration (searchable by the table's own filter)."""
    st.subheader("Indexed videos", anchor=False)
    try:
        with loading(be):
            videos, total = cache.catalog(be)
    except BackendError as err:
        show_error(err)
        return
    if not videos:
        st.caption("None yet.")
        return
    rows = [{"title": v.title, "id": v.id, "file": v.uri, "duration (s)": round(v.duration, 1)} for v in videos]
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", key="videos-table")
    if total > len(videos):
        st.caption(f"Showing {len(videos)} of {total} videos.")


def failures(stats: LibraryStats) -> None:
    st.subheader("Failed files", anchor=False)
    if not stats.failures:
        st.caption("None.")
    else:
        _problems(stats.failures, "problem")
    if stats.warnings:
        st.subheader("Indexed with warnings", anchor=False)
        st.caption("These files are searchable; the part named was lost (a damaged stretch, a truncated end, a text channel).")
        _problems(stats.warnings, "warning")
    if stats.excluded:
        st.subheader("Deleted from the index", anchor=False)
        st.caption("Kept out when their folder is indexed again; index a file by name (or with `--restore`) to bring it back.")
        st.dataframe(pd.DataFrame({"file": stats.excluded}), hide_index=True, width="stretch")


def _problems(rows: list[dict], label: str) -> None:
    st.dataframe(
        pd.DataFrame(rows, columns=["path", "error"]),
        hide_index=True,
        width="stretch",
        column_config={"path": st.column_config.TextColumn("file"), "error": st.column_config.TextColumn(label)},
    )


def job_form(be: Backend) -> None:
    st.subheader("Index or reindex", anchor=False)
    blocked = be.can_start_jobs()
    if blocked:
        st.info(blocked, icon=":material/key:")
    where = "on the API's machine" if be.config.mode == "api" else "on this machine"
    with st.form("job"):
        text = st.text_area(f"Folders, video files or manifest.jsonl files {where}, one per line", key="job_paths")
        kind = st.radio(
            "Kind", ["index", "reindex"], key="job_kind", horizontal=True,
            captions=["add new and changed files", "also drop files that are gone"],
        )  # fmt: skip
        submitted = st.form_submit_button("Start", type="primary", disabled=bool(blocked))
    if not submitted:
        return
    paths = [line.strip() for line in text.splitlines() if line.strip()]
    if not paths:
        st.warning("Name at least one folder, file or manifest.", icon=":material/edit:")
        return
    try:
        job = be.start_job(paths, kind)
    except BackendError as err:  # a path the server refuses or cannot find is about this job, not a search or a key
        show_error(err, title="This job cannot be started" if err.kind in ("bad_query", "refused") else None)
        return
    st.session_state[JOB] = job.id
    st.session_state.pop(JOB_DONE, None)


def show_job(job: JobInfo) -> None:
    total, done, frames = job.progress.total, job.progress.done, job.progress.frames
    label = f"{STATE_ICON.get(job.state, '')} {job.kind} job `{job.id}`: {job.state}"
    if job.state in ("queued", "running"):
        st.progress(min(done / total, 1.0) if total else 0.0, text=f"{label} — {done}/{total} videos, {frames} frames")
    elif job.state == "succeeded":
        s = job.summary or {}
        st.success(
            f"{label} — {s.get('indexed', 0)} indexed, {s.get('skipped', 0)} unchanged, {s.get('linked', 0)} linked, "
            f"{s.get('failed', 0)} failed, {s.get('removed', 0)} removed."
        )
        for f in (s.get("failures") or [])[:20]:
            st.caption(f"✗ {md_escape(f['path'])}: {md_escape(f['error'])}")
    else:
        st.error(f"{label} — {job.error or 'no reason given'}")


def job_panel(be: Backend, job_id: str) -> None:
    try:
        job = be.job(job_id)
    except BackendError as err:
        show_error(err)
        return
    show_job(job)
    if job.state in ("succeeded", "failed", "cancelled") and st.session_state.get(JOB_DONE) != job_id:
        st.session_state[JOB_DONE] = job_id
        cache.clear_data()  # new videos: new facets, stats and answers
        st.rerun()  # the whole page, once: fresh counts, and the panel stops polling


def recent_jobs(be: Backend) -> None:
    try:
        jobs = be.jobs()[:10]
    except BackendError as err:
        show_error(err)
        return
    if not jobs:
        return
    st.subheader("Recent jobs", anchor=False)
    rows = [
        {
            "job": j.id, "kind": j.kind, "state": j.state,
            "videos": f"{j.progress.done}/{j.progress.total}",
            "paths": ", ".join(j.paths), "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(j.created_at)),
            "error": j.error or "",
        }
        for j in jobs
    ]  # fmt: skip
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")


def render() -> None:
    be = cache.backend()
    st.title("Library", anchor=False)
    st.caption(be.config.describe())
    try:
        with loading(be):
            stats = cache.stats(be)
    except BackendError as err:
        if err.kind in ("unreachable", "auth"):
            show_error(err)
            return
        building = cache.indexing(be)  # a first build: the index is not there *yet*, and the job shows below
        if building is not None:
            show_indexing(building)
        else:
            show_error(err)
        stats = None
    if stats is not None:
        overview(stats)
        indexed_videos(be)
        failures(stats)
    job_form(be)
    job_id = st.session_state.get(JOB)
    if job_id:
        running = st.session_state.get(JOB_DONE) != job_id
        st.fragment(job_panel, run_every=POLL_SECONDS if running else None)(be, job_id)
    if be.can_start_jobs() is None:  # job records are read with a key, like writes
        recent_jobs(be)


if __name__ == "__main__":  # run by st.navigation as a page script
    guarded(render)
