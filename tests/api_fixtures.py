"""A small indexed library and live servers (in a thread, or a command in its own process) for the
API, UI and end-to-end tests."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

import uvicorn

from media import make_clip
from vidsearch.config import Settings, load_settings
from vidsearch.indexer.pipeline import IndexRun, open_store_for

API_KEY = "test-key-123"


def build_library(root: Path, backbone, with_failure: bool = False) -> tuple[Settings, dict[str, Path]]:
    """Four clips with titles and metadata (a manifest), indexed with the tiny model; with a text file
    named .mp4 beside them (`clips["broken"]`) when the index should have a failure to show. `root` is
    the settings' one library root."""
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
    paths = [manifest]
    if with_failure:
        clips["broken"] = root / "broken" / "notes.mp4"
        clips["broken"].parent.mkdir()
        clips["broken"].write_text("this is not a video\n")
        paths.append(clips["broken"].parent)
    settings = load_settings(None, db=root / "db", model="tiny", pretrained="none", api_keys=[API_KEY], refresh_seconds=0.2, speech=False, ocr=False,
                             library_roots=[root])  # fmt: skip
    IndexRun(open_store_for(settings, backbone), backbone, settings).run(paths)
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


class ServerProcess:
    """A server command in its own process, as users start it, serving at `url`; ready once `url +
    health` answers as `is_ready` wants; stopped by the test that started it (terminate, then kill),
    its output in `log`."""

    def __init__(self, name: str, command: list[str], url: str, health: str, log: Path, env: dict | None = None,
                 timeout: float = 60.0, is_ready: Callable[[httpx.Response], bool] = lambda r: r.status_code == 200):  # fmt: skip
        self.name, self.url, self.log_path, self.timeout, self.is_ready = name, url, log, timeout, is_ready
        self.health_url = url + health
        self._log = open(log, "w")
        self.proc = subprocess.Popen(command, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def __enter__(self) -> ServerProcess:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._log.flush()
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
            try:
                if self.is_ready(httpx.get(self.health_url, timeout=2)):
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"{self.name} did not start within {self.timeout:.0f} s")

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # pragma: no cover
            self.proc.kill()
            self.proc.wait()
        self._log.close()

