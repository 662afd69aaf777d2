"""The Streamlit UI, driven headless by `streamlit.testing.v1.AppTest` over a real index: the search
page in both modes (a local index opened in-process, and the search API over HTTP), the library page,
and every error state (empty index, no results, unreachable API, bad query, a bug) — each must show a
clear message and never a stack trace (`at.exception` stays empty).

The index is built with the random-weight tiny model, so which video ranks first is arbitrary: the
tests compare the page with what the same backend answers, never with a fixed title.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("streamlit")
pytest.importorskip("altair")

import streamlit as st  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from api_fixtures import API_KEY, LiveServer, free_port  # noqa: E402
from vidsearch.api_models import JobInfo, SearchRequest  # noqa: E402
from vidsearch.client import VidsearchClient  # noqa: E402
from vidsearch.config import load_settings  # noqa: E402
from vidsearch.server import create_app  # noqa: E402
from vidsearch.ui import backend as backends  # noqa: E402
from vidsearch.ui import cache  # noqa: E402
from vidsearch.ui.backend import Facets, LibraryStats, UiConfig  # noqa: E402
from vidsearch.ui.cards import fmt_time, player_start  # noqa: E402
from vidsearch.ui.highlight import highlight_html, query_terms, snippet  # noqa: E402
from vidsearch.ui.launch import APP, ui_command, ui_env  # noqa: E402
from vidsearch.ui.timeline import seek_target, timeline_chart  # noqa: E402

QUERY = "colour bars"
TITLES = {"The bars clip", "The pattern clip", "The rgb clip", "The hd clip"}
TIMEOUT = 90  # the first local-mode run loads the model


# -- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def library(shared_library):
    """The API tests' four clips, with a text file named .mp4 so the index has a failure to show."""
    settings, clips = shared_library
    return settings, clips, clips["broken"]


@pytest.fixture(scope="module")
def server(library):
    settings, _, _ = library
    with LiveServer(create_app(settings)) as live:
        yield live


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in ("VIDSEARCH_API_URL", "VIDSEARCH_DB", "VIDSEARCH_API_KEY", "VIDSEARCH_PUBLIC_API_URL", "VIDSEARCH_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    st.cache_data.clear()  # responses are keyed by backend and request; start each test cold
    yield


@pytest.fixture
def local_mode(monkeypatch, library):
    monkeypatch.setenv("VIDSEARCH_DB", str(library[0].db))
    return library


@pytest.fixture
def api_mode(monkeypatch, server):
    monkeypatch.setenv("VIDSEARCH_API_URL", server.url)
    return server


def app() -> AppTest:
    return AppTest.from_file(str(APP), default_timeout=TIMEOUT)


def search(at: AppTest, query: str) -> AppTest:
    return at.text_input(key="query").input(query).run()


def walk(node):
    for child in getattr(node, "children", {}).values():
        yield child
        yield from walk(child)


def of_type(node, kind: str) -> list:
    return [e for e in walk(node) if getattr(e, "type", None) == kind]


def block(at: AppTest, key: str):
    found = [e for e in walk(at.main) if getattr(e, "key", None) == key]
    assert found, f"no block {key}"
    return found[0]


def cards(at: AppTest) -> list:
    found, rank = [], 0
    while True:
        match = [e for e in walk(at.main) if getattr(e, "key", None) == f"card-{rank}"]
        if not match:
            return found
        found.append(match[0])
        rank += 1


def card_title(card) -> str:
    return of_type(card, "subheader")[0].value.split(". ", 1)[1]


def texts(at: AppTest, kind: str) -> list[str]:
    return [e.value for e in of_type(at.main, kind)]


def no_trace(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


# -- pure helpers -------------------------------------------------------------------------------
def test_highlight_marks_query_words_and_escapes_everything_else():
    out = highlight_html("The dogs <b>caught</b> a red Frisbee & ran", "a dog catches the red frisbee")
    assert out == "The <mark>dogs</mark> &lt;b&gt;caught&lt;/b&gt; a <mark>red</mark> <mark>Frisbee</mark> &amp; ran"
    assert query_terms("the a of") == ["the", "a", "of"]  # a query of stop words still highlights
    assert highlight_html("<script>", "") == "&lt;script&gt;"
    long = "filler " * 100 + "revenue grew " + "filler " * 100
    cut = snippet(long, "revenue", width=80)
    assert "revenue" in cut and cut.startswith("…") and cut.endswith("…") and len(cut) <= 82


def test_timeline_chart_layers_and_seek_target():
    from vidsearch.api_models import Curve, MomentOut, SearchResult, VideoInfo

    result = SearchResult(
        video=VideoInfo(id="v", title="t", uri="/x.mp4", duration=10.0),
        score=1.0,
        moments=[MomentOut(start=2.0, end=4.0, score=0.9), MomentOut(start=7.0, end=8.0, score=0.5)],
        curve=Curve(times=[0.5 * i for i in range(21)], values=[0.1 * (i % 5) for i in range(21)]),
    )
    spec = timeline_chart(result, playing=2.0).to_dict()
    marks = [layer["mark"]["type"] if isinstance(layer["mark"], dict) else layer["mark"] for layer in spec["layer"]]
    assert marks == ["rect", "line", "point", "rule"]  # moments, curve, click targets, playhead
    params = spec.get("params", []) + [p for layer in spec["layer"] for p in layer.get("params", [])]
    assert any(p.get("name") == "seek" for p in params)  # a click picks the nearest time
    assert seek_target({"selection": {"seek": [{"t": 3.5}]}}, result) == 2.0  # inside a moment: its start
    assert seek_target({"selection": {"seek": [{"t": 5.5}]}}, result) == 5.5
    assert seek_target({"selection": {"seek": []}}, result) is None
    assert timeline_chart(result.model_copy(update={"curve": None})) is None


def test_time_formatting_and_player_start():
    assert fmt_time(3.46) == "0:03.5" and fmt_time(725) == "12:05.0" and fmt_time(3723) == "1:02:03"
    assert player_start(2.4, 10) == 2 and player_start(2.6, 10) == 2 and player_start(9.9, 9.5) == 9  # never after the moment (p22 M4)


def test_facets_offer_metadata_fields_and_duration_range():
    from vidsearch.api_models import VideoInfo

    videos = [VideoInfo(id=str(i), title="t", uri="u", duration=d, metadata={"kind": k, "n": i, "same": 1, "obj": {"a": 1}})
              for i, (d, k) in enumerate([(4.0, "a"), (8.0, "b"), (6.0, "a")])]  # fmt: skip
    f = Facets.of(videos)
    assert (f.total, f.min_duration, f.max_duration) == (3, 4.0, 8.0)
    assert f.metadata["kind"] == ["a", "b"] and f.metadata["n"] == [0, 1, 2] and "obj" not in f.metadata


def test_launch_command_and_environment(tmp_path):
    cmd = ui_command("127.0.0.1", 8765)
    assert cmd[1:4] == ["-m", "streamlit", "run"] and cmd[4] == str(APP) and Path(cmd[4]).is_file()
    flags = dict(zip(cmd[5::2], cmd[6::2]))
    assert flags["--server.headless"] == "true" and flags["--server.address"] == "127.0.0.1"
    assert flags["--server.port"] == "8765" and flags["--browser.gatherUsageStats"] == "false"
    env = ui_env("http://api:8080", tmp_path, "k", base={"VIDSEARCH_API_URL": "http://old", "PATH": "/bin"})
    assert env["VIDSEARCH_API_URL"] == "http://api:8080" and env["VIDSEARCH_DB"] == str(tmp_path)
    assert env["VIDSEARCH_API_KEY"] == "k" and env["PATH"] == "/bin"
    local = ui_env(None, tmp_path, None, base={"VIDSEARCH_API_URL": "http://from-a-shell"})
    assert local["VIDSEARCH_API_URL"] == ""  # the command line chose local mode


# -- search page, local mode ---------------------------------------------------------------------
def test_search_page_local_mode_cards_player_and_timeline(local_mode, monkeypatch):
    at = app().run()
    no_trace(at)
    assert "4 videos indexed" in " ".join(texts(at, "caption"))
    be = cache.backend()
    assert be.config.mode == "local" and be.client.in_process  # the API, without a socket
    expected = be.search(SearchRequest(query=QUERY))

    calls = []
    real_search = be.search
    monkeypatch.setattr(be, "search", lambda req: calls.append(req) or real_search(req))
    search(at, QUERY)
    no_trace(at)
    shown = cards(at)
    assert [card_title(c) for c in shown] == [r.video.title for r in expected.results]
    assert {card_title(c) for c in shown} == TITLES
    first, top = shown[0], expected.results[0]
    badges = of_type(first, "markdown")[0].value
    assert "no relevance figure" in badges and all(name in badges for name in top.channel_scores)  # uncalibrated: no score shown
    assert len(of_type(first, "image")) == len(top.moments)  # a thumbnail per moment, cut by ffmpeg
    # the best result is cued at its first moment, not started; its timeline is under it
    (video,) = of_type(at.main, "video")
    assert video.proto.start_time == player_start(top.moments[0].start, top.video.duration)
    assert not video.proto.autoplay
    assert of_type(first, "vega_lite_chart")
    assert len(calls) == 1

    # choosing another result's moment plays *that* video from the moment; no new search
    rank, result = next(((i, r) for i, r in enumerate(expected.results) if i > 0 and r.moments), (None, None))
    moment = result.moments[-1]
    at.button(key=f"moment-{rank}-{len(result.moments) - 1}").click().run()
    no_trace(at)
    (video,) = of_type(at.main, "video")
    assert video.proto.start_time == player_start(moment.start, result.video.duration) and video.proto.autoplay
    assert of_type(block(at, f"card-{rank}"), "video") and not of_type(block(at, "card-0"), "video")
    assert len(calls) == 1, "a rerun must not search (or encode the query) again"


def test_local_player_explains_files_it_cannot_play(local_mode, monkeypatch):
    monkeypatch.setattr(cache, "LOCAL_MEDIA_MAX_BYTES", 1000)
    at = search(app().run(), QUERY)
    no_trace(at)
    assert not of_type(at.main, "video")
    assert any("too big to play" in w.value and "vidsearch serve" in w.value for w in at.warning)
    assert of_type(block(at, "card-0"), "vega_lite_chart")  # the timeline still shows where it matches


def test_filters_paging_and_no_results(local_mode):
    at = search(app().run(), QUERY)
    assert at.sidebar.selectbox(key="meta-kind").options == ["any", "bars", "other"]
    at.sidebar.selectbox(key="meta-kind").set_value("bars").run()
    assert [card_title(c) for c in cards(at)] == ["The bars clip"]

    at.sidebar.selectbox(key="meta-kind").set_value("any").run()
    at.sidebar.slider(key="duration").set_range(7.0, 10.0).run()
    assert {card_title(c) for c in cards(at)} == {"The bars clip", "The hd clip"}

    at.sidebar.selectbox(key="meta-kind").set_value("bars").run()
    at.sidebar.slider(key="duration").set_range(0.0, 7.0).run()
    no_trace(at)
    assert not cards(at)
    assert any("No results" in i.value for i in at.info)

    at.sidebar.selectbox(key="meta-kind").set_value("any").run()
    at.sidebar.slider(key="duration").set_range(0.0, 10.0).run()
    at.sidebar.number_input(key="per_page").set_value(3).run()
    assert len(cards(at)) == 3
    at.button(key="more").click().run()
    no_trace(at)
    assert len(cards(at)) == 4 and {card_title(c) for c in cards(at)} == TITLES
    assert not [b for b in at.button if b.key == "more"]


def test_bad_query_is_explained(local_mode):
    """A query over the API's limit is cut to it and the page says so (the box's own max_chars made the
    browser drop a longer paste without a word, and Enter searched the old text; a longer `?q=` is cut
    too: test_ui_probe4)."""
    at = app().run()
    no_trace(at)
    at.text_input(key="query").input("a red ball " * 300).run()
    no_trace(at)
    assert at.text_input(key="query").value == ("a red ball " * 300)[:1000]
    assert any("cut to its first 1,000 characters (it had 3,300)" in i.value for i in at.info), [i.value for i in at.info]
    at.text_input(key="query").input("a red ball").run()
    assert not any("cut to" in i.value for i in at.info)  # said once, for the query that was cut


def test_channels_offered_are_the_index_s_and_an_unknown_one_is_explained(api_mode, monkeypatch):
    at = app().run()
    assert at.sidebar.multiselect(key="channels").options == ["visual", "metadata"]  # what this index has
    monkeypatch.setattr(cache, "channels", lambda be: ["visual", "speech"])  # as a page open before a reindex would
    at = app().run()
    at.sidebar.multiselect(key="channels").select("speech").run()
    search(at, QUERY)
    no_trace(at)
    assert not cards(at)
    (warning,) = at.warning
    assert "speech" in warning.value and "not in this index" in warning.value


def test_a_bug_shows_a_message_not_a_trace(local_mode, monkeypatch):
    at = app().run()
    be = cache.backend()

    def broken(req):
        raise RuntimeError("something inside broke")

    monkeypatch.setattr(be, "search", broken)
    search(at, "a query nobody asked before")
    no_trace(at)
    assert any("Something went wrong" in e.value and "something inside broke" in e.value for e in at.error)


# -- search page, API mode ----------------------------------------------------------------------
def test_search_page_api_mode_uses_api_urls_for_media_and_thumbnails(api_mode):
    with VidsearchClient(api_mode.url) as client:
        expected = client.search(QUERY, top_k=10)
    at = search(app().run(), QUERY)
    no_trace(at)
    assert [card_title(c) for c in cards(at)] == [r.video.title for r in expected.results]
    top = expected.results[0]
    (video,) = of_type(at.main, "video")
    assert video.proto.url == f"{api_mode.url}/v1/videos/{top.video.id}/media"  # the browser asks the API
    assert video.proto.start_time == player_start(top.moments[0].start, top.video.duration)
    thumbs = [url for img in of_type(block(at, "card-0"), "image") for url in img.value]
    assert thumbs and all(u.startswith(f"{api_mode.url}/v1/videos/{top.video.id}/thumbnail?t=") for u in thumbs)


def test_unreachable_api_is_explained_on_both_pages(monkeypatch):
    monkeypatch.setenv("VIDSEARCH_API_URL", f"http://127.0.0.1:{free_port()}")
    at = search(app().run(), QUERY)
    no_trace(at)
    assert any("Cannot reach the search API" in e.value and "vidsearch serve" in e.value for e in at.error)
    at.switch_page("library_page.py").run()
    no_trace(at)
    assert any("Cannot reach the search API" in e.value for e in at.error)


def test_empty_index_is_explained_in_both_modes(tmp_path, monkeypatch):
    monkeypatch.setenv("VIDSEARCH_DB", str(tmp_path / "nothing-here"))
    at = search(app().run(), QUERY)
    no_trace(at)
    assert any("The index is empty" in i.value and "vidsearch index" in i.value for i in at.info)
    at.switch_page("library_page.py").run()
    no_trace(at)
    assert any("The index is empty" in i.value for i in at.info)
    assert at.text_area(key="job_paths")  # the way out: start an index job from here

    empty_settings = load_settings(None, db=tmp_path / "empty-db")
    with LiveServer(create_app(empty_settings)) as live:
        monkeypatch.setenv("VIDSEARCH_API_URL", live.url)
        at = search(app().run(), QUERY)
        no_trace(at)
        assert any("The index is empty" in i.value for i in at.info)


# -- library page -------------------------------------------------------------------------------
def test_library_page_local_mode_counts_model_and_failures(local_mode):
    settings, _, broken = local_mode
    at = app().run()
    at.switch_page("library_page.py").run()
    no_trace(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Videos"] == "4" and metrics["Failed files"] == "1" and float(metrics["Hours"]) >= 0.0
    stats = cache.backend().stats()
    assert any(stats.fingerprint in m.value and "tiny" in m.value for m in at.markdown)
    videos, table = at.dataframe  # the indexed videos, then the failed files
    assert str(broken) in table.value["path"].tolist() and table.value["error"].iloc[0]
    listed = videos.value
    assert set(listed["title"]) == TITLES and len(set(listed["id"])) == 4
    assert all(f.endswith(".mp4") and f.startswith(str(settings.db.parent)) for f in listed["file"])


def test_library_page_api_mode_and_job_errors(api_mode, monkeypatch, shared_library):
    at = app().run()
    at.switch_page("library_page.py").run()
    no_trace(at)
    assert {m.label: m.value for m in at.metric}["Videos"] == "4"
    assert any("tiny" in m.value for m in at.markdown)
    assert any("VIDSEARCH_API_KEY" in i.value for i in at.info)  # no key: the form says why it is off

    monkeypatch.setenv("VIDSEARCH_API_KEY", API_KEY)
    at = app().run()
    at.switch_page("library_page.py").run()
    missing = str(shared_library[0].library_roots[0] / "no-such-folder")  # under the server's library root
    at.text_area(key="job_paths").input(missing)  # a form: values go in with the submit
    at.button[[b.label for b in at.button].index("Start")].click().run()
    no_trace(at)
    assert any("not found" in w.value and missing in w.value for w in at.warning)
    assert any(w.value.startswith("**This job cannot be started.**") for w in at.warning)  # not "this search"
    at.text_area(key="job_paths").input("/etc")  # outside the roots: the key is fine, the path is not
    at.button[[b.label for b in at.button].index("Start")].click().run()
    no_trace(at)
    refused = [w.value for w in at.warning if "outside the server's library roots" in w.value]
    assert refused and not any("VIDSEARCH_API_KEY" in w for w in refused), [w.value for w in at.warning]


class FakeJobs:
    """A backend whose index job moves through its states on each poll (a real job runs the indexer
    in a subprocess for ~20 s here; the real job runner is covered by the API tests)."""

    def __init__(self):
        self.config = UiConfig(api_url="http://fake-jobs.invalid", db=Path("/nowhere"))
        self.polls = 0
        self.started: list[tuple[list[str], str]] = []

    def _job(self, state: str, done: int, **extra) -> JobInfo:
        return JobInfo(id="job1", kind="index", paths=["/videos"], state=state, created_at=1.0,
                       progress={"total": 3, "done": done, "frames": done * 10}, **extra)  # fmt: skip

    def catalog(self):  # the search page, shown first, finds an empty library
        return [], 0

    def stats(self) -> LibraryStats:
        return LibraryStats(videos=4 + (3 if self.polls >= 3 else 0), hours=0.01, model="tiny", fingerprint="abc")

    def start_job(self, paths, kind):
        self.started.append((paths, kind))
        return self._job("queued", 0)

    def job(self, job_id):
        self.polls += 1
        if self.polls == 1:
            return self._job("queued", 0)
        if self.polls == 2:
            return self._job("running", 1)
        return self._job("succeeded", 3, summary={"indexed": 3, "skipped": 0, "failed": 0, "removed": 0, "failures": []})

    def jobs(self):
        return []

    def can_start_jobs(self):
        return None


def test_job_progress_updates_until_done(monkeypatch):
    fake = FakeJobs()
    monkeypatch.setenv("VIDSEARCH_API_URL", fake.config.api_url)
    monkeypatch.setattr(backends, "open_backend", lambda cfg: fake)
    try:
        at = app().run()
        at.switch_page("library_page.py").run()
        assert {m.label: m.value for m in at.metric}["Videos"] == "4"
        at.text_area(key="job_paths").input("/videos\n")
        at.radio(key="job_kind").set_value("index")
        at.button[[b.label for b in at.button].index("Start")].click().run()
        no_trace(at)
        assert fake.started == [(["/videos"], "index")]
        assert "queued" in at.get("progress")[0].proto.text
        at.run()  # what the fragment's timer does every second
        (bar,) = at.get("progress")
        assert "running" in bar.proto.text and "1/3 videos" in bar.proto.text and bar.proto.value == 33
        at.run()
        no_trace(at)
        assert not at.get("progress") and any("3 indexed" in s.value for s in at.success)
        assert {m.label: m.value for m in at.metric}["Videos"] == "7"  # caches cleared: new counts
    finally:
        st.cache_resource.clear()


def test_an_index_version_committed_elsewhere_is_answered_from_within_seconds():
    """The search cache is keyed by the index version (read from the status, cached STATS_TTL): after
    `vidsearch index` in a shell commits, the same query is answered again instead of from a 60 s old
    answer of the previous version."""
    from vidsearch.api_models import SearchResponse

    class Versions:
        config = UiConfig(api_url="http://fake-versions.invalid", db=Path("/nowhere"))
        version, searches = "v1", 0

        def stats(self) -> LibraryStats:
            return LibraryStats(videos=1, hours=0.01, model="tiny", fingerprint="abc", index_version=self.version)

        def search(self, req):
            self.searches += 1
            return SearchResponse(query=req.query, group_by="video", results=[], index_version=self.version, took_ms=1.0)

    be = Versions()
    try:
        req = SearchRequest(query="a red ball")
        assert cache.search(be, req).index_version == "v1" and cache.search(be, req).index_version == "v1"
        assert be.searches == 1  # the repeat came from the cache
        be.version = "v2"  # committed by another process
        cache._stats.clear()  # what STATS_TTL (5 s) does
        assert cache.search(be, req).index_version == "v2" and be.searches == 2
    finally:
        st.cache_data.clear()


def test_choosing_a_moment_again_seeks_again(monkeypatch):
    """Streamlit seeks only when `start_time` changes: a moment chosen again after it had played (or
    after the player was dragged) did nothing. Each choice in a row of the same second alternates
    the start by a second; another moment, card or video starts the count again."""
    from vidsearch.ui import cards

    state: dict = {}
    monkeypatch.setattr(cards.st, "session_state", state)
    starts = []
    for t in (3.6, 3.0, 3.6, 3.9, 7.1, 3.6):
        cards.play(0, "v", t, "req")
        starts.append(cards.replay_start(cards.player_start(t, 12.0), state[cards.PLAY]["n"]))
    assert starts == [3, 2, 3, 2, 7, 3]  # each repeat of second 3 is a change the player seeks to
    cards.play(1, "v", 3.6, "req")
    assert state[cards.PLAY]["n"] == 0  # another card
    assert cards.replay_start(0, 1) == 0  # the first second cannot start earlier


def test_card_shows_matching_text_with_query_words_marked():
    def script():
        import streamlit as st

        from vidsearch.api_models import MomentOut, SearchResult, SpanHit, VideoInfo
        from vidsearch.ui.backend import UiConfig
        from vidsearch.ui.cards import render_card

        class Media:
            config = UiConfig(api_url="http://x", db=".")

            def media(self, video):
                return "http://x/v1/videos/v/media"

        result = SearchResult(
            video=VideoInfo(id="v", title="Quarterly *results*", uri="/v.mp4", duration=30.0),
            score=0.5,
            channel_scores={"speech": 0.8, "visual": 0.1},
            moments=[MomentOut(start=12.0, end=15.0, score=0.8)],
            spans=[SpanHit(source="speech", start=12.2, end=14.0, text="and the revenue grew <fast>", score=0.8),
                   SpanHit(source="ocr", start=20.0, end=21.0, text="REVENUE 2024", score=0.4)],
        )  # fmt: skip
        render_card(Media(), 0, result, "where she says the revenue grew", ["http://x/t.jpg"], None, "k")
        st.session_state.setdefault("seen", True)

    at = AppTest.from_function(script).run()
    no_trace(at)
    html = [m.value for m in at.markdown if "vs-span" in m.value]
    assert len(html) == 2
    assert "<mark>revenue</mark> <mark>grew</mark> &lt;fast&gt;" in html[0] and "said" in html[0]
    assert "<mark>REVENUE</mark> 2024" in html[1] and "on screen" in html[1]
    assert "Quarterly \\*results\\*" in at.subheader[0].value  # titles are not markdown
    badges = at.markdown[0].value
    assert badges.index("speech") < badges.index("visual")  # strongest evidence first
    at.button(key="span-0-0").click().run()
    assert at.session_state["play"]["t"] == 12.2 and at.session_state["play"]["video"] == "v"


@pytest.mark.slow
def test_sigterm_stops_the_ui_and_its_streamlit(tmp_path):
    """A service manager stops `vidsearch ui` with SIGTERM, sent to that process alone: Streamlit,
    its child, must stop too instead of keeping the port."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import httpx

    port = free_port()
    health = f"http://127.0.0.1:{port}/_stcore/health"
    cmd = [sys.executable, "-m", "vidsearch.cli", "ui", "--api", f"http://127.0.0.1:{free_port()}", "--port", str(port)]
    ui = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    children: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(health, timeout=1).text == "ok":
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            raise AssertionError("the UI did not start")
        children = [int(p) for p in Path(f"/proc/{ui.pid}/task/{ui.pid}/children").read_text().split()]
        assert children, "Streamlit runs as a child of `vidsearch ui`"
        ui.send_signal(signal.SIGTERM)
        ui.wait(timeout=30)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in children):
            time.sleep(0.2)
        assert not [pid for pid in children if Path(f"/proc/{pid}").exists()], "Streamlit outlived `vidsearch ui`"
        with pytest.raises(httpx.HTTPError):
            httpx.get(health, timeout=1)
    finally:
        for pid in children:  # on failure, do not leave a server behind
            if Path(f"/proc/{pid}").exists():
                os.kill(pid, signal.SIGKILL)
        if ui.poll() is None:
            ui.kill()


@pytest.mark.slow
def test_library_page_lists_failed_warned_and_deleted_files(zoo, zoo_index, tmp_path, monkeypatch):
    """The media zoo's index (a copy, with one file deleted): the page shows every failed file with its
    reason, the files indexed with a lost part, and the deleted file kept out of later runs."""
    import shutil

    from vidsearch.store import Store

    db = tmp_path / "db"
    shutil.copytree(zoo_index[0], db)
    deleted = str(zoo.files["hevc_mp4"].path)
    Store.open(db).delete_paths([deleted])
    monkeypatch.setenv("VIDSEARCH_DB", str(db))
    at = app().run()
    at.switch_page("library_page.py").run()
    no_trace(at)
    tables = [t.value for t in at.dataframe]
    failed = next(t for t in tables if "error" in t.columns and str(zoo.files["empty"].path) in t["path"].tolist())
    assert "empty file" in failed.set_index("path").loc[str(zoo.files["empty"].path), "error"]
    warned = next(t for t in tables if "error" in t.columns and str(zoo.files["corrupt_middle"].path) in t["path"].tolist())
    assert "could not be decoded" in warned.set_index("path").loc[str(zoo.files["corrupt_middle"].path), "error"]
    excluded = next(t for t in tables if list(t.columns) == ["file"])  # the videos table has a file column too
    assert excluded["file"].tolist() == [deleted]
    assert any("Deleted from the index" in s.value for s in at.subheader)


# -- relevance, taking moments away, shared links --------------------------------------------------------------
@pytest.fixture
def calibrated_local(local_mode, monkeypatch, tmp_path, tiny_backbone):
    """Local mode with a calibration for the library's random-weight model that trusts only the first
    place of the fused ranking (98%; the second 27%, under the 0.5 threshold)."""
    from vidsearch.search.relevance import FEATURES, Calibration

    coef = tuple(10.0 if f == "inv_rank" else 0.0 for f in FEATURES)
    cal = Calibration(tiny_backbone.fingerprint.id, "test", FEATURES, (0.0,) * len(FEATURES), (1.0,) * len(FEATURES), coef, -6.0, 0.5)
    monkeypatch.setenv("VIDSEARCH_CALIBRATION", str(cal.save(tmp_path / "cal.json")))
    st.cache_resource.clear()  # the backend (and its in-process app) is kept per UI config: make one that reads it
    yield local_mode
    st.cache_resource.clear()


def test_relevance_is_shown_as_people_read_it_and_weak_matches_on_request(calibrated_local):
    at = search(app().run(), QUERY)
    no_trace(at)
    shown = cards(at)
    assert len(shown) == 1 and "98% · strong match" in of_type(shown[0], "markdown")[0].value
    at.sidebar.toggle(key="weak").set_value(True).run()
    no_trace(at)
    assert len(cards(at)) == 4 and "27% · weak match" in of_type(cards(at)[1], "markdown")[0].value


def test_the_played_moment_can_be_taken_away_and_shared(local_mode):
    at = search(app().run(), QUERY)
    no_trace(at)
    first = block(at, "card-0")
    assert [b.label for b in of_type(first, "download_button")] == ["Clip", "OTIO", "EDL"]
    (link,) = [c.value for c in of_type(first, "code")]
    top = cache.backend().search(SearchRequest(query=QUERY)).results[0]
    assert f"?video={top.video.id}&t=" in link and f"&start={top.moments[0].start:.2f}" in link
    (bounds,) = of_type(first, "slider")  # the moment's bounds, to widen or narrow before taking it away
    assert len(bounds.value) == 2 and bounds.value[0] < bounds.value[1] <= top.video.duration


def test_a_shared_link_opens_the_moment(local_mode):
    top = cache.backend().search(SearchRequest(query=QUERY)).results[0]
    at = app()
    at.query_params.update({"video": top.video.id, "t": "2.00", "start": "1.00", "end": "3.00"})
    at.run()
    no_trace(at)
    shared = block(at, "shared-moment")
    assert f"Shared moment: {top.video.title} at 0:02.0" in of_type(shared, "subheader")[0].value
    (video,) = of_type(shared, "video")
    assert video.proto.start_time == 2
    assert of_type(shared, "slider")[0].value == (1.0, 3.0)


def test_a_shared_link_without_a_video_says_so(local_mode):
    """`?video=&t=3` showed "cannot be opened (ValueError)" with a traceback in the log."""
    at = app()
    at.query_params.update({"video": "", "t": "3"})
    at.run()
    no_trace(at)
    assert any("names no video" in e.value for e in at.error), [e.value for e in at.error]


def test_markdown_shortcodes_and_pillows_limit_are_said_as_text():
    """A title with `:material/home:` showed a house icon (a backslash before the colon does not stop
    Streamlit's icons); a picture past Pillow's own pixel limit was "too large" with no limit named."""
    from vidsearch.ui.backend import picture_too_large
    from vidsearch.ui.cards import md_escape

    assert ":material/" not in md_escape(":material/home: at 10:30") and "home" in md_escape(":material/home:")
    said = picture_too_large("image is too large: Image size (400000000 pixels) exceeds limit of 178956970 pixels, could be "
                             "decompression bomb DOS attack.; the limit is 89,478,485 pixels")  # fmt: skip
    assert said == "This picture is too large to search with: it has 400,000,000 pixels, and the limit is 89,478,485 pixels."
