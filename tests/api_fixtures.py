"""A small indexed library and a live server for the API tests."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import uvicorn

from media import make_clip
from vidsearch.config import Settings, load_settings
from vidsearch.indexer.pipeline import IndexRun, open_store_for

API_KEY = "test-key-123"


def build_library(root: Path, backbone) -> tuple[Settings, dict[str, Path]]:
    """Four clips with titles and metadata (a manifest), indexed with the tiny model."""
    media = root / "media"
    clips = {
        "bars": make_clip(media / "bars.mp4", seconds=8, source="smptebars", audio_hz=None),
        "pattern": make_clip(media / "pattern.mp4", seconds=6, source="testsrc2", audio_hz=440),
        "rgb": make_clip(media / "rgb.mp4", seconds=4, source="rgbtestsrc", audio_hz=None),
        "hd": make_clip(media / "hd.mp4", seconds=10, source="smptehdbars", audio_hz=None),
    }
    manifest = root / "library.jsonl"
    manifest.write_text(
        "".join(
            json.dumps({"video": f"media/{name}.mp4", "title": f"The {name} clip", "metadata": {"kind": "bars" if "bars" in name else "other", "n": i}})
            + "\n"
            for i, name in enumerate(clips)
        )
    )
    settings = load_settings(None, db=root / "db", model="tiny", pretrained="none", api_keys=[API_KEY], refresh_seconds=0.2, speech=False, ocr=False)
    IndexRun(open_store_for(settings, backbone), backbone, settings).run([manifest])
    return settings, clips


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """uvicorn on a free loopback port, in a thread; stopped by the test that started it."""

    def __init__(self, app):
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.server.started, "server did not start"
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
