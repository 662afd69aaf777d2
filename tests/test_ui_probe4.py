"""The UI probe's defects (round 4), checked in a real browser and on the helpers behind them.

- H1: after another moment of the same card is chosen, "Take this moment away" must take *that*
  moment (its bounds, share link and clip file), not the first one's.
- M1: a shared link whose times are `nan`, `inf` or text gets a short notice and the search box
  stays; a time past the video's end is brought back inside it, with a word saying so.
- M4: the player starts at or before the moment, never after it (Streamlit seeks in whole seconds).
- M2: the browser's Back and Forward move between searches.
- M5: while an indexing run holds the index (a first build, a `reindex --rebuild`), the search page
  says an index is being built instead of "the index is empty, index some videos" or a store error.
- M3, L2, L3, L4, L5: the timeline speaks the card's terms, a short moment stays visible on a long
  video, the uploader's limit is the server's, the duration filter never sends 0, messages have no
  API field names.

As in test_ui_browser.py, which card has two moments depends on the model (the random-weight tiny
one here), so the test asks the API for the same request and checks the page against its answer.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
sync_api = pytest.importorskip("playwright.sync_api")

from api_fixtures import LiveServer, ServerProcess, free_port  # noqa: E402
from test_ui import _clean_env, app, library, local_mode, no_trace, search  # noqa: E402, F401
from test_ui_browser import CHROMIUM, CHROMIUM_ARGS, WAIT_MS, streamlit_ui  # noqa: E402
from vidsearch.api_models import Curve, MomentOut, SearchResult, VideoInfo  # noqa: E402
from vidsearch.client import VidsearchClient  # noqa: E402
from vidsearch.server import create_app  # noqa: E402
from vidsearch.ui.cards import player_start  # noqa: E402
from vidsearch.ui.launch import ui_command, ui_env  # noqa: E402
from vidsearch.ui.takeaway import SharedLinkError, fit_to_video, parse_shared  # noqa: E402
from vidsearch.ui.timeline import timeline_chart  # noqa: E402

QUERIES = ("a test pattern on a screen", "a clock counting", "red", "colour bars")
needs_chromium = pytest.mark.skipif(not CHROMIUM.is_file(), reason="needs Debian's Chromium: apt-get install -y chromium")


# -- helpers ------------------------------------------------------------------------------------
def settle(page, ms: int = 600) -> None:
    """Until Streamlit's rerun is over (its status widget says "Running" meanwhile)."""
    page.wait_for_timeout(300)
    page.wait_for_function(
        "() => { const s = document.querySelector('[data-testid=stStatusWidget]'); return !s || !s.innerText.includes('Running') }",
        timeout=WAIT_MS,
    )
    page.wait_for_timeout(ms)


def main_text(page) -> str:
    return page.locator("[data-testid=stMain]").inner_text()


def search_box(page):
    box = page.locator(".st-key-query input")
    box.wait_for(timeout=WAIT_MS)
    return box


def two_moment_card(client: VidsearchClient):
    """(query, rank, result) of the first card with two moments that start apart, for the UI's default request."""
    for q in QUERIES:
        for rank, r in enumerate(client.search(q, top_k=10).results):
            if len(r.moments) >= 2 and abs(r.moments[0].start - r.moments[1].start) >= 0.5:
                return q, rank, r
    pytest.fail("no query gave a card with two moments")


@pytest.fixture(scope="module")
def api_ui(shared_library, tmp_path_factory):
    """The API over the shared library, the UI on it (API mode) and a browser, for the whole module."""
    settings, _ = shared_library
    log = tmp_path_factory.mktemp("ui-probe4") / "streamlit.log"
    with LiveServer(create_app(settings)) as api, VidsearchClient(api.url) as client:
        with streamlit_ui(api.url, log) as ui, sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                yield api, client, ui, browser
            finally:
                browser.close()


@pytest.fixture
def page(api_ui):
    context = api_ui[3].new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    try:
        yield context.new_page()
    finally:
        context.close()


# -- H1 -----------------------------------------------------------------------------------------
@pytest.mark.slow
@needs_chromium
def test_take_away_follows_the_moment_being_played(api_ui, page):
    api, client, ui, _browser = api_ui
    query, rank, result = two_moment_card(client)
    first, second = result.moments[:2]
    page.goto(ui.url)
    box = search_box(page)
    box.fill(query)
    box.press("Enter")
    card = page.locator(f".st-key-card-{rank}")
    sync_api.expect(card.locator("h3")).to_have_text(f"{rank + 1}. {result.video.title}", timeout=WAIT_MS)

    def share_link() -> str:
        code = card.locator("[data-testid=stCode]")
        if not code.count() or not code.first.is_visible():
            card.get_by_text("Take this moment away").click()
            settle(page, 300)
        return card.locator("[data-testid=stCode]").first.inner_text()

    page.locator(f".st-key-moment-{rank}-0 button").first.click()
    settle(page)
    assert f"start={first.start:.2f}&end={first.end:.2f}" in share_link()

    page.locator(f".st-key-moment-{rank}-1 button").first.click()
    settle(page, 1000)
    link = share_link()
    assert f"t={second.start:.2f}&start={second.start:.2f}&end={second.end:.2f}" in link, link
    captions = card.locator("[data-testid=stExpander] [data-testid=stCaptionContainer]").all_inner_texts()
    assert f"{second.start:.1f}–{second.end:.1f} s" in " ".join(captions), captions
    with page.expect_download(timeout=WAIT_MS) as download:
        card.locator("[class*='st-key-clip-'] button").first.click()
    name = download.value.suggested_filename
    assert name.endswith(f"_{second.start:.1f}-{second.end:.1f}.mp4"), (name, second)


# -- M1 and M4: shared links ----------------------------------------------------------------------
@pytest.mark.slow
@needs_chromium
def test_shared_links_with_bad_times_keep_the_search_page(api_ui, page):
    api, client, ui, _browser = api_ui
    video = client.search("colour bars", top_k=10).results[0].video
    for times in ("t=nan&start=nan&end=nan", "t=inf&start=1&end=inf", "t=abc"):
        page.goto(f"{ui.url}/?video={video.id}&{times}")
        search_box(page)
        settle(page)
        text = main_text(page)
        assert "Something went wrong" not in text, (times, text)
        assert "cannot be opened" in text and "not a time" in text, (times, text)
        assert page.locator(".st-key-query input").is_visible()

    page.goto(f"{ui.url}/?video={video.id}&t=500&start=499&end=510")
    search_box(page)
    settle(page)
    text = main_text(page)
    assert "past the end" in text, text
    shared = page.locator(".st-key-shared-moment")
    sync_api.expect(shared.locator("h3")).to_contain_text(f"Shared moment: {video.title}", timeout=WAIT_MS)
    assert "8:20" not in shared.locator("h3").inner_text()  # 500 s is not shown as a time of this video


@pytest.mark.slow
@needs_chromium
def test_the_player_starts_at_or_before_the_moment(api_ui, page):
    api, client, ui, _browser = api_ui
    video = client.search("colour bars", top_k=10).results[0].video
    t = 1.6  # rounded to the nearest second, the player started 0.4 s late
    page.goto(f"{ui.url}/?video={video.id}&t={t:.2f}&start={t:.2f}&end={t + 1:.2f}")
    selector = ".st-key-shared-moment video"
    page.wait_for_function(
        "sel => { const v = document.querySelector(sel); return v !== null && v.readyState >= 1 && v.currentTime > 0 }",
        arg=selector,
        timeout=WAIT_MS,
    )
    current = page.locator(selector).evaluate("v => v.currentTime")
    assert t - 1.0 < current <= t, current


# -- M2: Back and Forward ----------------------------------------------------------------------------
@pytest.mark.slow
@needs_chromium
def test_back_and_forward_move_between_searches(api_ui, page):
    """Each search is a history entry (`?q=`); Back used to leave the box on the last search, which
    then wrote itself back over the URL the browser had restored."""
    ui = api_ui[2]
    page.goto(ui.url)
    for query in ("colour bars", "a clock counting"):
        box = search_box(page)
        box.fill(query)
        box.press("Enter")
        page.wait_for_url(f"**?q={query.replace(' ', '+')}", timeout=WAIT_MS)
        page.locator(".st-key-card-0 h3").wait_for(timeout=WAIT_MS)
        settle(page, 300)
    page.go_back()
    sync_api.expect(page.locator(".st-key-query input")).to_have_value("colour bars", timeout=WAIT_MS)
    settle(page)
    assert page.url.endswith("?q=colour+bars"), page.url
    page.go_forward()
    sync_api.expect(page.locator(".st-key-query input")).to_have_value("a clock counting", timeout=WAIT_MS)


# -- M5: an index being built -----------------------------------------------------------------------
@pytest.mark.slow
@needs_chromium
def test_search_says_an_index_is_being_built(api_ui, tmp_path, tiny_backbone):
    """A first `vidsearch index` run (the folder made, its write lock held, no table yet), then a
    `reindex --rebuild` (the tables made again, empty, the lock still held), then the run's end."""
    from vidsearch.store import Store, index_write_lock

    browser = api_ui[3]
    db = tmp_path / "db"
    db.mkdir()
    port = free_port()
    env = ui_env(None, db, settings={"model": "tiny", "pretrained": "none", "speech": "false", "ocr": "false"})
    ui = ServerProcess("streamlit", ui_command("127.0.0.1", port), f"http://127.0.0.1:{port}", "/_stcore/health",
                       tmp_path / "streamlit.log", env=env, is_ready=lambda r: r.text == "ok")  # fmt: skip
    with ui:
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        try:
            page = context.new_page()
            with index_write_lock(db):
                page.goto(ui.url)
                search_box(page)
                sync_api.expect(page.get_by_text("being built", exact=False).first).to_be_visible(timeout=WAIT_MS)
                text = main_text(page)
                assert "no meta table" not in text and "Search is unavailable" not in text, text
                assert "Index some videos" not in text, text

                Store.open(db, tiny_backbone.fingerprint, create=True)  # what `rebuild` leaves: tables, no videos yet
                page.goto(ui.url + "/?q=colour+bars")
                sync_api.expect(page.get_by_text("0 videos in it so far", exact=False).first).to_be_visible(timeout=WAIT_MS)
                settle(page)
                text = main_text(page)
                assert "being built" in text and search_box(page).is_visible(), text
                assert "Index some videos" not in text and "The index is empty" not in text, text

            # the run is over (the lock is free): an index with no videos is called empty again
            page.goto(ui.url + "/?q=colour+bars")
            sync_api.expect(page.get_by_text("The index is empty", exact=False).first).to_be_visible(timeout=WAIT_MS)
            assert "being built" not in main_text(page)
        finally:
            context.close()


# -- the helpers behind the fixes -------------------------------------------------------------------
def test_player_start_never_starts_after_the_moment():
    assert player_start(1.501, 12) == 1 and player_start(6.8, 20) == 6 and player_start(2.0, 10) == 2
    assert player_start(9.9, 9.5) == 9 and player_start(-1, 5) == 0
    assert player_start(float("nan"), 5) == 0 and player_start(float("inf"), 5) == 5


def test_shared_link_times_are_checked_and_fitted_to_the_video():
    assert parse_shared({"video": "v", "t": "2", "start": "1", "end": "3"}) == {"video": "v", "t": 2.0, "start": 1.0, "end": 3.0}
    assert parse_shared({"q": "x"}) is None
    for bad in ({"t": "nan"}, {"t": "1", "end": "inf"}, {"start": "abc"}, {"t": "-inf"}):
        with pytest.raises(SharedLinkError) as err:
            parse_shared({"video": "v", **bad})
        assert "not a time" in str(err.value)
    fitted, note = fit_to_video({"video": "v", "t": 500.0, "start": 499.0, "end": 510.0}, 12.0)
    assert 0 <= fitted["start"] < fitted["end"] <= 12.0 and fitted["start"] <= fitted["t"] <= fitted["end"]
    assert note and "past the end" in note
    same, note = fit_to_video({"video": "v", "t": 2.0, "start": 1.0, "end": 3.0}, 12.0)
    assert same == {"video": "v", "t": 2.0, "start": 1.0, "end": 3.0} and note is None


def _result(duration: float, moments: list[tuple[float, float, float | None]]) -> SearchResult:
    n = int(duration) + 1
    return SearchResult(
        video=VideoInfo(id="v", title="t", uri="/x.mp4", duration=duration),
        score=1.0,
        relevance=0.69,
        relevance_label="good",
        moments=[MomentOut(start=s, end=e, score=0.03, relevance=r) for s, e, r in moments],
        curve=Curve(times=[float(i) for i in range(n)], values=[-0.18 + 0.26 * math.sin(i / 7) ** 2 for i in range(n)]),
    )


def test_timeline_speaks_the_cards_terms_and_keeps_short_moments_visible():
    spec = timeline_chart(_result(600.0, [(29.0, 30.0, 0.69), (437.0, 438.0, None)]), playing=29.0).to_dict()
    datasets = spec["datasets"].values()
    rects = next(rows for rows in datasets if rows and "start" in rows[0])
    widths = [r["shown_end"] - r["shown_start"] for r in rects]
    assert min(widths) >= 600.0 / 100 - 1e-9, widths  # about 4 px of a 450 px chart: visible
    assert "relevance 69%" in rects[0]["moment"] and "0.030" not in rects[0]["moment"]
    curve = next(rows for rows in datasets if rows and "match" in rows[0])
    assert min(r["match"] for r in curve) >= 0.0 and max(r["match"] for r in curve) <= 1.0  # no negative "relevance"
    text = str(spec)
    assert "'title': 'relevance'" not in text and "score" not in text


def test_uploader_limit_duration_filter_and_messages(monkeypatch):
    """L3, L4, L5 without a browser: the uploader's limit is the settings' max_image_mb, the API's
    413 and bare 404 are said in words, the Duration slider never sends max_duration 0, and a
    search that found nothing names neither the API's field nor the query twice."""
    from streamlit.testing.v1 import AppTest

    from vidsearch.api_models import SearchResponse
    from vidsearch.client import ApiError
    from vidsearch.ui.backend import Backend, UiConfig
    from vidsearch.ui.search_page import QUERY_MAX_CHARS, duration_step, no_results_text

    be = Backend(UiConfig(api_url="http://api.invalid", db=Path(".")))
    too_big = be._error(ApiError(413, "the request body is too large: ... (room for a base64 picture of 10 MB: max_image_mb)"))
    assert too_big.kind == "bad_query" and "max_image_mb" not in too_big.message and "limit is 10 MB" in too_big.message
    assert "Not Found" not in be._error(ApiError(404, "Not Found")).message

    def uploader():
        from vidsearch.ui.query_inputs import example_inputs

        example_inputs()

    monkeypatch.setenv("VIDSEARCH_MAX_IMAGE_MB", "3")
    at = AppTest.from_function(uploader).run()
    assert not at.exception
    (box,) = at.get("file_uploader")
    assert box.proto.max_upload_size_mb == 3

    def duration():
        import streamlit as st

        from vidsearch.ui.backend import Facets
        from vidsearch.ui.search_page import duration_filter

        st.session_state["sent"] = duration_filter(Facets(total=2, min_duration=4.0, max_duration=600.0))

    at = AppTest.from_function(duration).run()
    (slider,) = at.slider
    assert slider.max == 600.0 and slider.step == duration_step(600.0) == 5.0
    slider.set_range(0.0, 0.0).run()
    assert "max_duration" not in at.session_state["sent"] and any("0 s" in c.value for c in at.caption)
    slider.set_range(0.0, 10.0).run()
    assert at.session_state["sent"] == {"max_duration": 10.0}

    dropped = SearchResponse(query="q", group_by="video", results=[], min_relevance=0.13, index_version="1", took_ms=1.0,
                             message="nothing in the library matches 'q' well enough: the best result's relevance is 4%, "
                                     "under the threshold of 13% (set min_relevance lower to see weaker matches)")  # fmt: skip
    text = no_results_text("q", {}, dropped)
    assert "min_relevance" not in text and text.count("“q”") == 1 and "4%" in text and "13%" in text
    assert QUERY_MAX_CHARS == 1000  # the API's limit on a query, which the box keeps to


def test_query_box_keeps_to_the_api_limit(local_mode):
    """The box keeps to the API's 1000 characters (the API refused a longer query with its field's
    name, and the URL carried all of it); a longer `?q=` link is cut to the limit, and the page says so
    (the box no longer has max_chars: the browser dropped a longer paste without a word)."""
    at = app()
    at.query_params["q"] = "x" * 1500
    at.run()
    no_trace(at)
    box = at.text_input(key="query")
    assert box.value == "x" * 1000 and any("it had 1,500" in i.value for i in at.info)
    at = search(at, "colour bars " * 83)  # 996 characters: searched, nothing said about its length
    no_trace(at)
    assert not [w.value for w in at.warning if "characters" in w.value]
