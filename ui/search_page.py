"""The search page: a query box (Enter searches), filters in the sidebar, results as cards, and the
player at the chosen moment.

Streamlit reruns this script on every interaction, so the page is written as "state in, page out":
the request is built from the widgets, its response comes from the cache (a click on a moment never
searches again), and which card plays what lives in `st.session_state`. The query is mirrored in the
URL (`?q=`), so a search can be shared or bookmarked, and the browser's Back and Forward move between
searches. While an indexing run writes to the index, the page says so (instead of "the index is
empty" or a store error) and answers from what is indexed so far.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re

import streamlit as st
from pydantic import ValidationError

from vidsearch.api_models import SearchRequest, SearchResponse, SearchResult

# absolute imports: Streamlit runs this file as a script, outside the package
from vidsearch.ui import cache
from vidsearch.ui.backend import Backend, BackendError, Facets
from vidsearch.ui.cards import PLAY, fmt_time, md_escape, player_start, render_card
from vidsearch.ui.messages import guarded, loading, show_error, show_indexing, validation_message
from vidsearch.ui.takeaway import SharedLinkError, fit_to_video, render_takeaway, shared_moment
from vidsearch.ui.query_inputs import example_inputs

log = logging.getLogger("vidsearch.ui")
PAGES = "pages"  # session key: the cursors of the pages shown for the current request
ANY = None  # the metadata filters' "any": not a value an index can hold (the string "any" can be one)
URL_QUERY = "url_q"  # session key: the `?q=` this page last wrote or read
QUERY_CUT = "query_cut"  # session key: the length of a query just cut to QUERY_MAX_CHARS
# the API's own limit on a query's length: the box stops there instead of the API refusing the search
QUERY_MAX_CHARS = next((m.max_length for m in SearchRequest.model_fields["query"].metadata if getattr(m, "max_length", None)), 1000)


def _sync_query_with_url() -> None:
    """The box takes the URL's `?q=` when the page opens, and when the URL changed since this page
    last wrote it: the browser's Back and Forward restore an earlier URL, and the box (which then
    wrote its own query back over it) must follow it instead."""
    given = st.query_params.get("q", "")
    url = given[:QUERY_MAX_CHARS]
    if "query" not in st.session_state or url != st.session_state.get(URL_QUERY, url):
        st.session_state.query = url
        if len(given) > QUERY_MAX_CHARS:
            st.session_state[QUERY_CUT] = len(given)
    st.session_state[URL_QUERY] = url


def _cut_long_query() -> None:
    """(The box's on_change, before the rerun.) A query over the API's limit is cut to it, and the
    page says so: with the box's own `max_chars`, the browser dropped a longer paste without a word
    and Enter searched the old text."""
    query = st.session_state.get("query") or ""
    if len(query) > QUERY_MAX_CHARS:
        st.session_state.query = query[:QUERY_MAX_CHARS]
        st.session_state[QUERY_CUT] = len(query)


def _remember_query(query: str) -> None:
    if query.strip():
        if st.query_params.get("q") != query:
            st.query_params["q"] = query
    elif "q" in st.query_params:
        del st.query_params["q"]
    st.session_state[URL_QUERY] = query if query.strip() else ""


def sidebar_options(be: Backend, facets: Facets) -> dict:
    """The request's fields other than the query, from the sidebar widgets. Defaults send nothing,
    so the server's own defaults (every channel, weight 1) apply."""
    options: dict = {}
    with st.sidebar:
        st.header("Filters")
        options["top_k"] = int(st.number_input("Results per page", min_value=1, max_value=50, value=10, key="per_page"))
        if st.toggle("One card per moment", key="by_moment", help="List the best moments across videos instead of the best videos."):
            options["group_by"] = "moment"
        if st.toggle("Show weak matches", key="weak", help="Also list results unlikely to be what you asked for (relevance under the threshold)."):
            options["min_relevance"] = 0.0

        with loading(be):
            available = cache.channels(be)
        chosen = st.multiselect(
            "Channels", available, default=[], key="channels", placeholder="all channels",
            help="Where a match may come from: the frames (visual), speech, on-screen text (ocr), subtitles, "
            "metadata. Empty: every channel the index has.",
        )  # fmt: skip
        if chosen:
            weights = {c: 1.0 for c in chosen}
            if len(chosen) > 1:
                with st.expander("Channel weights"):
                    for c in chosen:
                        weights[c] = st.slider(c, 0.0, 5.0, 1.0, 0.5, key=f"weight-{c}")
            options["channels"] = weights

        filters = duration_filter(facets)
        if facets.metadata:
            st.subheader("Metadata", anchor=False)
            meta = {}
            for name, values in facets.metadata.items():
                picked = st.selectbox(name, [ANY, *values], key=f"meta-{name}", format_func=lambda v: "any" if v is ANY else str(v))
                if picked is not ANY:
                    meta[name] = picked
            if meta:
                filters["metadata"] = meta
        if filters:
            options["filters"] = filters
    return options


def duration_step(top: float) -> float:
    """A step that gives the Duration slider about a hundred positions or fewer: whole seconds for
    short clips, coarser for long videos (1 s steps over 0-600 s needed the keyboard to pick 10 s)."""
    return next((step for step in (1.0, 5.0, 15.0, 30.0, 60.0, 300.0) if top / step <= 120), 600.0)


def duration_filter(facets: Facets) -> dict:
    """The Duration slider (0 to the library's longest video) -> the request's duration filters. The
    right end at 0 would ask for videos of at most 0 s, which the API refuses: it is said and left out."""
    if not facets.total or facets.max_duration <= 0:
        return {}
    step = duration_step(facets.max_duration)
    top = float(math.ceil(facets.max_duration / step) * step)
    lo, hi = st.slider("Duration (seconds)", 0.0, top, (0.0, top), step, key="duration", format="%d s",
                       help=f"The library's videos last {facets.min_duration:.0f} to {facets.max_duration:.0f} s.")  # fmt: skip
    filters: dict = {}
    if lo > 0:
        filters["min_duration"] = lo
    if 0 < hi < top:
        filters["max_duration"] = hi
    elif hi <= 0:
        st.caption("No video lasts 0 s: move the right end of Duration up (it is not applied meanwhile).")
    return filters


def _pages_for(request_key: str) -> list[str | None]:
    state = st.session_state.get(PAGES)
    if not state or state["key"] != request_key:
        state = {"key": request_key, "cursors": [None]}
        st.session_state[PAGES] = state
    return state["cursors"]


def _more(request_key: str, cursor: str) -> None:
    cursors = _pages_for(request_key)
    if cursor not in cursors:
        cursors.append(cursor)


def fetch(be: Backend, req: SearchRequest, request_key: str) -> tuple[list[SearchResult], SearchResponse]:
    """Every page asked for so far ("More results" adds one), each from the cache."""
    results: list[SearchResult] = []
    resp = None
    for cursor in _pages_for(request_key):
        with loading(be):
            resp = cache.search(be, req.model_copy(update={"cursor": cursor}))
        results += resp.results
    return results, resp


def _playing(request_key: str, results: list[SearchResult]) -> dict | None:
    """What plays: the chosen moment, or — for a new search — the best result's first moment, cued
    but not started (a new search should not start making noise)."""
    current = st.session_state.get(PLAY)
    if current and current["key"] == request_key and current["card"] < len(results):
        return current
    top = results[0]
    start = top.moments[0].start if top.moments else 0.0
    current = {"key": request_key, "card": 0, "video": top.video.id, "t": start, "auto": False}
    st.session_state[PLAY] = current
    return current


def shared(be: Backend) -> None:
    """A shared link (`?video=&t=&start=&end=`): that moment first, playing, with its take-away tools.
    A link that cannot be opened says why in a line; the search page under it stays."""
    try:
        moment = shared_moment()
    except SharedLinkError as err:
        st.warning(f"**This link's moment cannot be opened:** {err.param} = “{md_escape(err.raw[:40])}” is not a time in seconds. "
                   "Search for the video below instead.", icon=":material/link_off:")  # fmt: skip
        return
    if moment is None:
        return
    try:
        with loading(be):
            video = be.video(moment["video"])
            media, mimetype = cache.player_source(be, video)
    except ValueError:  # an id the client refuses to put in a URL (`?video=` empty): no video it could name
        err = BackendError("not_found", "This link names no video (its `video` is empty).", "Search for it below.")
        show_error(err)
        return
    except BackendError as err:
        if err.kind == "not_found":
            err = BackendError("not_found", "This link's video is not in the index (it may have been deleted or reindexed).", "Search for it below.")
        show_error(err)
        return
    moment, note = fit_to_video(moment, video.duration)
    with st.container(border=True, key="shared-moment"):
        st.subheader(f"Shared moment: {md_escape(video.title)} at {fmt_time(moment['t'])}", anchor=False)
        if note:
            st.caption(note)
        if media is not None:
            st.video(media, format=mimetype, start_time=player_start(moment["t"], video.duration))
        render_takeaway(be, "shared", video, moment["start"], moment["end"], moment["t"])


def _shared_or_say_why(be: Backend) -> None:
    """`shared`, and a failure it did not foresee in one line: a broken link must not cost the user
    the search box drawn after it (it took the whole page before)."""
    try:
        shared(be)
    except Exception as exc:  # noqa: BLE001 - logged for the operator, said briefly to the user
        log.exception("the shared link failed")
        st.error(f"**This link's moment cannot be opened** ({type(exc).__name__}). Search for the video below.", icon=":material/link_off:")


def no_results_text(query: str, examples: dict, last: SearchResponse | None) -> str:
    """Why a search found nothing, in the page's words: the API's message names its request field
    (`min_relevance`) and repeats the query, so only its number is kept."""
    asked = md_escape(query or " + ".join(examples))
    why = ""
    if last is not None and last.min_relevance is not None and last.message and "well enough" in last.message:
        best = re.search(r"relevance is (\d+%)", last.message)
        under = f"the best was {best.group(1)}, under" if best else "all under"
        why = f" Nothing matched well enough ({under} the {last.min_relevance:.0%} threshold)."
    tips = ["other words", "more channels", "looser filters"]
    if not st.session_state.get("weak"):  # not when it is on already
        tips.append("“Show weak matches” in the sidebar")
    return f"**No results** for “{asked}”.{why} Try {', '.join(tips[:-1])}, or {tips[-1]}."


def render() -> None:
    be = cache.backend()
    _shared_or_say_why(be)
    _sync_query_with_url()
    query = st.text_input(
        "Search the library",
        key="query",
        on_change=_cut_long_query,
        placeholder="what happens, what is said, or what is shown — then press Enter",
        help=f"Press Enter to search (at most {QUERY_MAX_CHARS:,} characters).",
    )
    if len(query) > QUERY_MAX_CHARS:  # typed in without Enter's callback (a test's input): cut here too
        query = query[:QUERY_MAX_CHARS]
    cut = st.session_state.pop(QUERY_CUT, None)
    if cut is not None:
        st.info(f"The query was cut to its first {QUERY_MAX_CHARS:,} characters (it had {cut:,}): a search takes at most {QUERY_MAX_CHARS:,}.",
                icon=":material/content_cut:")  # fmt: skip
    _remember_query(query)
    examples = example_inputs()
    with loading(be):
        building = cache.indexing(be)
    if building is not None:
        show_indexing(building)
    try:
        with loading(be):
            facets = cache.facets(be, changing=building is not None)
    except BackendError as err:
        if building is None:  # while a first build runs, the store's error is only "not yet"
            show_error(err)
        return
    if facets.total == 0:
        if building is None:
            show_error(BackendError("empty", "There are no videos to search yet.",
                                    "Index some videos on the Library page, or with `vidsearch index PATH`."))  # fmt: skip
        return
    options = sidebar_options(be, facets)
    if not query.strip() and not examples:
        st.caption(f"{facets.total} videos indexed ({be.config.describe()}). Type what you remember and press Enter, or drop a picture.")
        return
    try:
        req = SearchRequest(query=query if query.strip() else None, **examples, **options)
    except ValidationError as exc:
        st.warning(f"**This search cannot be run as asked.** {validation_message(exc)}", icon=":material/edit:")
        return
    # a digest: the request may hold a picture (megabytes), and the key rides in every button's args
    request_key = hashlib.sha256(req.model_dump_json(exclude={"cursor"}, exclude_none=True).encode()).hexdigest()
    try:
        results, last = fetch(be, req, request_key)
    except BackendError as err:
        if building is None or err.kind not in ("empty", "unavailable"):  # a rebuild's engine: "not yet", said above
            show_error(err)
        return
    if not results:
        st.info(no_results_text(query, examples, last), icon=":material/search_off:")
        return
    st.caption(f"{len(results)} result(s) · {last.took_ms:.0f} ms · index version {last.index_version}")
    playing = _playing(request_key, results)
    wanted = [(r.video, m.best if m.best is not None else m.start) for r in results for m in r.moments]  # where each moment is most relevant
    flat = cache.thumbnails(be, wanted)
    at = 0
    for rank, result in enumerate(results):
        n = len(result.moments)
        render_card(be, rank, result, query, flat[at : at + n], playing, request_key)
        at += n
    if last.next_cursor:
        st.button("More results", key="more", on_click=_more, args=(request_key, last.next_cursor))


if __name__ == "__main__":  # run by st.navigation as a page script
    guarded(render)
