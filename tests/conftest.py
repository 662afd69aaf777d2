"""Shared fixtures: media is generated once per session; the tiny backbone is loaded once."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("LANCE_LOG", "error")

from media import (  # noqa: E402
    have_ffmpeg,
    make_audio_only,
    make_clip,
    make_library,
    make_truncated,
    make_two_colour_clip,
)

if not have_ffmpeg():  # pragma: no cover
    pytest.exit("ffmpeg/ffprobe are required (apt-get install -y ffmpeg)", returncode=2)


@pytest.fixture(scope="session")
def tiny_backbone():
    from vidsearch.encoders.backbone import load_backbone

    return load_backbone("tiny", pretrained="none")


@pytest.fixture(scope="session")
def awkward_library(tmp_path_factory) -> dict[str, Path]:
    """One of every kind of awkward input the indexer must survive, made with ffmpeg."""
    root = tmp_path_factory.mktemp("awkward")
    lib = {
        "normal": make_clip(root / "normal.mp4", seconds=6, source="testsrc2"),
        "no_audio": make_clip(root / "no audio.mp4", seconds=3, source="smptebars", audio_hz=None),
        "non_ascii": make_clip(root / "clip é 日本語 name.mkv", seconds=3, source="rgbtestsrc", audio_hz=330),
        "one_frame": make_clip(root / "one_frame.mp4", seconds=1, audio_hz=None, extra=("-frames:v", "1")),
        "four_k": make_clip(root / "four_k.mp4", seconds=1, size="3840x2160", rate=5, audio_hz=None),
        "vfr": make_two_colour_clip(root / "vfr.mp4", "red", "blue", 2.0, rates=(30, 5), vfr=True),
        "audio_only": make_audio_only(root / "audio_only.mp4"),
        "text": root / "notes.mp4",
        "empty": root / "empty.mp4",
    }
    lib["text"].write_text("this is not a video\n")
    lib["empty"].write_bytes(b"")
    src = make_clip(root / ".src_for_truncation.mp4", seconds=4, source="testsrc")
    lib["truncated"] = make_truncated(src, root / "truncated.mp4", 0.5)
    return lib


@pytest.fixture(scope="session")
def zoo(tmp_path_factory):
    """The media zoo (tests/zoo.py): every layout real libraries hold, rendered once per session."""
    from zoo import build_zoo

    return build_zoo(tmp_path_factory.mktemp("zoo"))


@pytest.fixture(scope="session")
def zoo_index(zoo, tmp_path_factory):
    """One `vidsearch index` run over the whole zoo folder with the shipped default model and every
    channel on (audio tower, speech, OCR), as a user would start it: (db, the run's JSON summary)."""
    import json
    import subprocess

    db = tmp_path_factory.mktemp("zoo_db") / "db"
    proc = subprocess.run([sys.executable, "-m", "vidsearch.cli", "index", str(zoo.library), "--db", str(db), "--model", "tiny", "--json"],
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return db, json.loads(proc.stdout.splitlines()[-1])


@pytest.fixture(scope="session")
def library_50(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lib50")
    make_library(root, 50, seconds=2.0)
    return root


@pytest.fixture(scope="session")
def unseen_synth_corpus(tmp_path_factory) -> Path:
    """A small synthetic corpus with a seed the shipped model did not train on (it trained on seed 7)."""
    from vidsearch.lab import synth

    out = tmp_path_factory.mktemp("synth_unseen")
    synth.generate(out, 8, 11, jobs=2, test_fraction=0.25, progress=False)
    return out


@pytest.fixture(scope="session")
def shared_library(tmp_path_factory, tiny_backbone):
    """Four indexed clips and one failed file (api_fixtures.build_library), indexed once for the API,
    fuzz, UI and browser tests. Read-only: a test that indexes or deletes builds its own."""
    from api_fixtures import build_library

    return build_library(tmp_path_factory.mktemp("library"), tiny_backbone, with_failure=True)
