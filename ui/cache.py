"""The app's caches, in one place. Streamlit reruns the whole page script on every click, so anything
slow is cached here and a rerun costs almost nothing:

- the backend (the API client, over HTTP or in-process with the loaded model and index) lives for
  the process;
- search responses are keyed by the full request and the index version, so choosing a moment, paging
  back or moving a slider that does not change the request never encodes the query again (and in
  local mode the engine keeps its own query-vector cache underneath), while a version another process
  committed is answered from within seconds;
- facets and library stats are read at most every few seconds (facets every few seconds while an
  indexing run writes to the index, which then changes under the page);
- whether an indexing run is writing to the index is looked at on every rerun (a lock probe, and
  the API's job list every couple of seconds); when a run ends, the answers it left partial are
  forgotten;
- local-mode thumbnails (JPEG bytes from the in-process API) are remembered;
- in local mode the played file's bytes are kept (Streamlit would fetch the whole file again on every
  rerun, then serve it from memory with range requests); files too big for that are refused with
  a pointer to API mode, which streams from disk.

Errors are never cached (Streamlit does not cache a call that raised), so a fixed problem — a
started server, a filled index — shows up on the next rerun.
"""

from __future__ import annotations

import hashlib
import time

import streamlit as st

from vidsearch.api_models import JobInfo, SearchRequest, SearchResponse, VideoInfo

from . import backend as backends
from .backend import Backend, BackendError, Facets, Indexing, LibraryStats, UiConfig

LOCAL_MEDIA_MAX_BYTES = 1 << 30  # larger files are played through `vidsearch serve` instead
SEARCH_TTL = 60.0  # how long an answer is kept (the index version is part of its key: search())
FACETS_TTL = 30.0
STATS_TTL = 5.0
JOBS_TTL = 2.0
_was_indexing: dict[str, bool] = {}  # per backend: whether the last look found an indexing run


def config() -> UiConfig:
    """Read on every rerun: it is a few environment variables (and the TOML file when there is one)."""
    return UiConfig.from_env()


@st.cache_resource(show_spinner=False)
def _backend(cfg: UiConfig) -> Backend:
    return backends.open_backend(cfg)


def backend() -> Backend:
    return _backend(config())


def key_of(be: Backend) -> str:
    """A cache key for the backend's identity (the API key only as a hash)."""
    c = be.config
    secret = hashlib.sha256((c.api_key or "").encode()).hexdigest()[:12]
    return f"{c.mode}|{c.api_url}|{c.db}|{secret}|{c.public_api_url}"


@st.cache_data(ttl=SEARCH_TTL, max_entries=256, show_spinner=False)
def _search(_be: Backend, be_key: str, request_json: str, index_version: str | None) -> SearchResponse:
    return _be.search(SearchRequest.model_validate_json(request_json))


def search(be: Backend, req: SearchRequest) -> SearchResponse:
    """The answer, cached per request and per index version: a version committed by another process
    (`vidsearch index` in a shell) is served within a few seconds (the status the version is read from
    is cached STATS_TTL; asking it makes the server look for a new version), not after SEARCH_TTL."""
    return _search(be, key_of(be), req.model_dump_json(exclude_none=True), index_version(be))


def index_version(be: Backend) -> str | None:
    """The version the backend answers from (None when it cannot say)."""
    try:
        return stats(be).index_version
    except BackendError:
        return None


@st.cache_data(ttl=FACETS_TTL, max_entries=16, show_spinner=False)
def _facets(_be: Backend, be_key: str, epoch: int) -> Facets:
    videos, total = _be.catalog()
    return Facets.of(videos, total)


def facets(be: Backend, changing: bool = False) -> Facets:
    """`changing`: an indexing run is adding videos, so read them again every few seconds rather
    than keep the count of the run's start (0 during a rebuild) for FACETS_TTL."""
    return _facets(be, key_of(be), int(time.monotonic() // STATS_TTL) if changing else 0)


@st.cache_data(ttl=FACETS_TTL, max_entries=16, show_spinner=False)
def _catalog(_be: Backend, be_key: str) -> tuple[list[VideoInfo], int]:
    return _be.catalog()


def catalog(be: Backend) -> tuple[list[VideoInfo], int]:
    """The indexed videos (at most the backend's catalog limit) and how many there are."""
    return _catalog(be, key_of(be))


@st.cache_data(ttl=STATS_TTL, max_entries=16, show_spinner=False)
def _stats(_be: Backend, be_key: str) -> LibraryStats:
    return _be.stats()


def stats(be: Backend) -> LibraryStats:
    return _stats(be, key_of(be))


@st.cache_data(ttl=JOBS_TTL, max_entries=16, show_spinner=False)
def _running_job(_be: Backend, be_key: str) -> JobInfo | None:
    if _be.can_start_jobs() is not None:  # the API lists jobs to a key only: cannot tell
        return None
    try:
        return next((j for j in _be.jobs() if j.state in ("queued", "running")), None)
    except BackendError:
        return None


@st.cache_data(ttl=JOBS_TTL, max_entries=16, show_spinner=False)
def _writing(_be: Backend, be_key: str) -> bool:
    return _be.writing()


def indexing(be: Backend) -> Indexing | None:
    """The indexing run writing to the index now, or None: the index's write lock (a run in a shell
    too; through the API's `indexing` in API mode) or a queued or running job of the API. When a run has ended since the last look, the
    facets and answers read from the partial index are forgotten (for every session: the cache is
    the process's)."""
    key = key_of(be)
    job = _running_job(be, key)
    # the local lock is one flock, looked at on every run (a cached answer outlived the run's end); the
    # API is asked at most every JOBS_TTL
    busy = job is not None or (be.writing() if be.config.mode == "local" else _writing(be, key))
    if _was_indexing.get(key) and not busy:
        clear_data()
    _was_indexing[key] = busy
    if not busy:
        return None
    try:
        videos: int | None = stats(be).videos
    except BackendError:  # a first build has no tables yet
        videos = None
    return Indexing(videos, job.progress.done if job else None, job.progress.total if job else None)


@st.cache_data(ttl=FACETS_TTL, max_entries=16, show_spinner=False)
def _channels(_be: Backend, be_key: str) -> list[str]:
    return _be.channels()


def channels(be: Backend) -> list[str]:
    return _channels(be, key_of(be))


@st.cache_data(max_entries=512, show_spinner=False)
def _thumbnails(_be: Backend, be_key: str, wanted: tuple[tuple[str, str, float, float], ...], width: int) -> list[bytes | None]:
    videos = [(VideoInfo(id=vid, title="", uri=uri, duration=dur), t) for vid, uri, dur, t in wanted]
    return _be.thumbnails(videos, width)


def thumbnails(be: Backend, wanted: list[tuple[VideoInfo, float]], width: int = 320) -> list[str | bytes | None]:
    if be.config.mode == "api":  # URLs: nothing to compute; the browser and the API cache the bytes
        return be.thumbnails(wanted, width)
    key = tuple((v.id, v.uri, float(v.duration), round(float(t), 2)) for v, t in wanted)
    return _thumbnails(be, key_of(be), key, width)


@st.cache_resource(max_entries=2, show_spinner=False)
def _media_bytes(_be: Backend, be_key: str, video_id: str, size: int) -> tuple[bytes, str]:
    return _be.media_bytes(VideoInfo(id=video_id, title="", uri="", duration=0.0))


def player_source(be: Backend, video: VideoInfo) -> tuple[str | bytes | None, str]:
    """What `st.video` gets, and its media type: the API's media URL (the browser asks the API, which
    says the type), or the file's bytes with the type the API gives them (local mode)."""
    if be.config.mode == "api":
        return be.media_url(video), "video/mp4"
    size = be.media_size(video)
    if size is None:
        return None, "video/mp4"
    if size > LOCAL_MEDIA_MAX_BYTES:
        raise BackendError(
            "unavailable",
            f"This video is {size / 2**30:.1f} GiB, too big to play through the UI in local mode.",
            "Run `vidsearch serve` and start the UI with `--api URL`: the API streams files from disk.",
        )
    return _media_bytes(be, key_of(be), video.id, size)


def clear_data() -> None:
    """After this UI changed the index (a job finished): forget responses, facets and stats."""
    for fn in (_search, _facets, _stats, _channels):
        fn.clear()
