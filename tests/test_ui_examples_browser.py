"""Search by example in a real browser: a picture dropped into the search box's uploader brings the
API's best video for that picture as the first card; "more like this" on that card searches from its
moment (composed with the picture still in the box) and leaves the source video out.

As in test_ui_browser.py, the expected answers come from the API itself for the same requests, so
the test holds whatever the model ranks first."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
sync_api = pytest.importorskip("playwright.sync_api")

from api_fixtures import LiveServer  # noqa: E402
from media import ffmpeg  # noqa: E402
from test_ui_browser import CHROMIUM, CHROMIUM_ARGS, WAIT_MS, streamlit_ui  # noqa: E402
from vidsearch.client import VidsearchClient  # noqa: E402
from vidsearch.server import create_app  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.is_file(), reason="needs Debian's Chromium: apt-get install -y chromium"),
]


def card_titles(page) -> list[str]:
    return page.locator("[class*='st-key-card-'] h3").all_inner_texts()


def test_browser_image_query_and_more_like_this(shared_library, tmp_path):
    settings, clips = shared_library
    artifacts = Path(os.environ.get("VIDSEARCH_TEST_ARTIFACTS") or tmp_path / "artifacts")
    artifacts.mkdir(parents=True, exist_ok=True)
    picture = tmp_path / "frame.png"
    ffmpeg("-ss", "2", "-i", str(clips["rgb"]), "-frames:v", "1", str(picture))

    with LiveServer(create_app(settings)) as api, VidsearchClient(api.url) as client:
        by_image = client.search(image=picture, top_k=10)  # the UI's default request for a dropped picture
        top = by_image.results[0]
        moment = top.moments[0]
        like = {"video_id": top.video.id, "start": moment.start, "end": moment.end}
        by_like = client.search(image=picture, like=like, top_k=10)
        with streamlit_ui(api.url, artifacts / "streamlit-examples.log") as ui, sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(ui.url)
                upload = page.locator(".st-key-image input[type=file]")
                upload.wait_for(state="attached", timeout=WAIT_MS)
                upload.set_input_files(str(picture))
                sync_api.expect(page.locator(".st-key-card-0 h3")).to_have_text(f"1. {top.video.title}", timeout=WAIT_MS)

                page.locator(".st-key-like-0 button").first.click()
                want = by_like.results[0].video.title
                sync_api.expect(page.locator(".st-key-card-0 h3")).to_have_text(f"1. {want}", timeout=WAIT_MS)
                sync_api.expect(page.locator(".st-key-like-clear button").first).to_be_visible(timeout=WAIT_MS)  # the chosen moment, clearable
                # the first card changes before the rest are drawn: wait for the whole list
                sync_api.expect(page.locator("[class*='st-key-card-'] h3")).to_have_count(len(by_like.results), timeout=WAIT_MS)
                titles = card_titles(page)
                assert len(titles) == len(by_like.results) and not any(top.video.title in t for t in titles), titles
                page.screenshot(path=str(artifacts / "ui-more-like.png"))
            finally:
                browser.close()
