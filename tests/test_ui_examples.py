"""'More like this' on a result card, driven headless (AppTest) in local mode: the next search is
built from that card's best moment, leaves the card's own video out, composes with the words still in
the box, and "Clear" goes back to the words alone. (Dropping a picture needs a real browser's file
chooser: tests/test_ui_examples_browser.py.)"""

from __future__ import annotations

import pytest

pytest.importorskip("streamlit")

from test_ui import QUERY, _clean_env, app, card_title, cards, library, local_mode, no_trace, search  # noqa: E402, F401
from vidsearch.api_models import LikeQuery, SearchRequest  # noqa: E402
from vidsearch.ui import cache  # noqa: E402


def test_more_like_this_searches_from_the_card_s_moment(local_mode, monkeypatch):
    at = search(app().run(), QUERY)
    no_trace(at)
    first = cards(at)[0]
    be = cache.backend()
    words = be.search(SearchRequest(query=QUERY))
    top = words.results[0]
    assert card_title(first) == top.video.title
    sent = []
    real_search = be.search
    monkeypatch.setattr(be, "search", lambda req: sent.append(req) or real_search(req))

    at.button(key="like-0").click().run()
    no_trace(at)
    m = top.moments[0]
    assert sent and sent[-1].like == LikeQuery(video_id=top.video.id, start=m.start, end=m.end) and sent[-1].query == QUERY
    shown = [card_title(c) for c in cards(at)]
    assert shown and top.video.title not in shown
    assert any("More like" in md.value for md in at.markdown)

    at.button(key="like-clear").click().run()
    no_trace(at)
    assert [card_title(c) for c in cards(at)] == [r.video.title for r in words.results]
    assert not any("More like" in md.value for md in at.markdown)
