"""The `vidsearch` command as an operator runs it: real processes, real kill -9, real index."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from media import make_clip
from vidsearch.store import Store

CLI = [sys.executable, "-m", "vidsearch.cli"]
TINY = ["--model", "tiny", "--pretrained", "none", "--no-speech", "--no-ocr"]


def run_cli(*args, env=None, check=True):
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}")
    return proc


def assert_exactly_once(db, n_videos):
    store = Store.open(db)
    videos, files, feats = store.videos(), store.files(), store.table("video_features").to_arrow()
    segs = store.segments(["segment_id", "video_id"])
    assert videos.num_rows == n_videos
    assert sorted(feats["video_id"].to_pylist()) == sorted(videos["video_id"].to_pylist())
    assert files.num_rows == n_videos and set(files["status"].to_pylist()) == {"indexed"}
    assert len(set(segs["segment_id"].to_pylist())) == segs.num_rows
    assert set(segs["video_id"].to_pylist()) == set(videos["video_id"].to_pylist())
    # each video: 1 whole-video segment, >=1 shot, >=1 window; no duplicates from a redone batch
    per_video = {}
    for sid in segs["segment_id"].to_pylist():
        vid, kind, _ = sid.split(":")
        per_video.setdefault(vid, []).append(kind)
    assert all(kinds.count("video") == 1 for kinds in per_video.values())


@pytest.mark.slow
def test_index_50_clips_then_status(library_50, tmp_path):
    db = tmp_path / "db"
    out = json.loads(run_cli("index", str(library_50), "--db", str(db), *TINY, "--json").stdout)
    assert out["indexed"] == 50 and out["failed"] == 0 and out["units"] > 100
    status = json.loads(run_cli("status", "--db", str(db), "--json").stdout)
    assert status["videos"] == 50 and status["failed"] == 0 and status["fingerprint"] == out["fingerprint"]
    human = run_cli("status", "--db", str(db)).stdout
    assert "videos" in human and "50" in human and "tiny" in human
    again = json.loads(run_cli("index", str(library_50), "--db", str(db), *TINY, "--json").stdout)
    assert again["indexed"] == 0 and again["skipped"] == 50 and again["units"] == 0


@pytest.mark.slow
def test_kill_minus_9_and_resume_indexes_every_video_exactly_once(library_50, tmp_path):
    db = tmp_path / "db"
    env = {**os.environ, "VIDSEARCH_FLUSH_VIDEOS": "4", "VIDSEARCH_BATCH_SIZE": "8"}
    cmd = [*CLI, "index", str(library_50), "--db", str(db), *TINY, "--json"]
    for kill_after_visible in (4, 20):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if Store.open(db).videos(["video_id"]).num_rows >= kill_after_visible:
                    break
            except Exception:  # noqa: BLE001 - the index may not exist yet
                pass
            time.sleep(0.05)
        assert proc.poll() is None, f"finished before it could be killed: {proc.stderr.read()}"
        os.killpg(proc.pid, signal.SIGKILL)  # the run and its decoder processes, mid-flight
        proc.wait()
        visible = Store.open(db).videos(["video_id"]).num_rows
        assert kill_after_visible <= visible < 50
    out = json.loads(run_cli("index", str(library_50), "--db", str(db), *TINY, "--json", env=env).stdout)
    # a kill between a video's commit and its `files` row leaves content that the next run links, not
    # re-encodes: every video visible after the last kill is skipped or linked, none encoded again
    assert out["indexed"] + out["skipped"] + out["linked"] == 50 and out["failed"] == 0
    assert out["skipped"] + out["linked"] >= visible >= 20, (out, visible)
    assert_exactly_once(db, 50)


def test_errors_are_one_clear_line(tmp_path):
    missing = run_cli("status", "--db", str(tmp_path / "nope"), check=False)
    assert missing.returncode == 2 and "no index at" in missing.stderr and "Traceback" not in missing.stderr
    bad_model = run_cli("index", str(tmp_path), "--db", str(tmp_path / "db"), "--model", "NoSuchNet", check=False)
    assert bad_model.returncode == 2 and "unknown model 'NoSuchNet'" in bad_model.stderr
    bad_setting = run_cli("index", str(tmp_path), "--sample-fps", "-1", *TINY, check=False)
    assert bad_setting.returncode == 2 and "sample_fps" in bad_setting.stderr
    for cmd in ("index", "reindex", "status", "delete"):
        assert "Usage" in run_cli(cmd, "--help").stdout


@pytest.mark.slow
def test_delete_by_path_via_cli(library_50, tmp_path):
    db = tmp_path / "db"
    clip = sorted(library_50.glob("*.mp4"))[0]
    run_cli("index", str(clip), "--db", str(db), *TINY, "--json")
    out = json.loads(run_cli("delete", str(clip), "--db", str(db), "--json").stdout)
    assert out == {"removed": 1, "files": 1, "unknown": []}
    assert Store.open(db).stats()["videos"] == 0
    unknown = run_cli("delete", "no-such-id", "--db", str(db), "--json", check=False)
    assert unknown.returncode == 1 and json.loads(unknown.stdout)["unknown"] == ["no-such-id"]


def test_paths_that_cannot_be_indexed_fail_before_anything_is_created(tmp_path):
    """A path that does not exist, /dev/zero or a FIFO: exit 2 with the reason, no index made, no hang."""
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    for path, words in ((tmp_path / "no such folder", "no such file or folder"), ("/dev/zero", "not a folder or a regular file"),
                        (fifo, "not a folder or a regular file")):  # fmt: skip
        proc = run_cli("index", str(path), "--db", str(tmp_path / "db"), *TINY, check=False)
        assert proc.returncode == 2 and words in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert not (tmp_path / "db").exists()


def test_decoders_ignore_a_vidsearch_folder_in_the_working_directory(tmp_path):
    """Run from a folder holding a `vidsearch/` directory (a source checkout, say): the decoder processes
    must import the package the command itself runs, not that folder."""
    from media import make_clip

    script = Path(sys.executable).with_name("vidsearch")
    if not script.exists():
        script = Path(shutil.which("vidsearch") or "")
    assert script.is_file(), "the vidsearch console script is not installed"
    shadow = tmp_path / "checkout"
    (shadow / "vidsearch" / "indexer").mkdir(parents=True)
    (shadow / "vidsearch" / "__init__.py").write_text("raise ImportError('the shadow package was imported')\n")
    (shadow / "vidsearch" / "indexer" / "__init__.py").write_text("")
    clip = make_clip(tmp_path / "lib" / "a.mp4", seconds=2, audio_hz=None)
    proc = subprocess.run([str(script), "index", str(clip.parent), "--db", str(tmp_path / "db"), *TINY, "--json"],
                          cwd=shadow, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["indexed"] == 1 and out["failed"] == 0, out


def cli_here(*args: str):
    """`vidsearch ARGS` in this process (typer's runner): for what needs no fresh interpreter."""
    from typer.testing import CliRunner

    from vidsearch.cli import app

    return CliRunner().invoke(app, list(args), env={"COLUMNS": "100"})


def test_an_existing_index_decides_its_model_and_list_shows_its_ids(tmp_path):
    """A second `index` without model flags extends the index with the model it was built with (the
    default model, ViT-B-32, would not even load offline); `list` shows the ids `delete` takes."""
    first = make_clip(tmp_path / "a.mp4", seconds=2, source="testsrc", audio_hz=None)
    second = make_clip(tmp_path / "b.mp4", seconds=2, source="smptebars", audio_hz=None)
    db = str(tmp_path / "db")
    built = json.loads(cli_here("index", str(first), "--db", db, *TINY, "--json").stdout)
    more = cli_here("index", str(second), "--db", db, "--no-speech", "--no-ocr", "--json")
    assert more.exit_code == 0, more.stderr
    assert json.loads(more.stdout)["indexed"] == 1 and json.loads(more.stdout)["fingerprint"] == built["fingerprint"]
    listed = json.loads(cli_here("list", "--db", db, "--json").stdout)
    assert listed["total"] == 2 and {v["path"] for v in listed["videos"]} == {str(first.resolve()), str(second.resolve())}
    table = cli_here("list", "--db", db).stdout
    assert all(v["id"] in table and v["title"] in table for v in listed["videos"])
    victim, kept = listed["videos"]
    assert json.loads(cli_here("delete", victim["id"], "--db", db, "--json").stdout)["removed"] == 1
    assert [v["id"] for v in json.loads(cli_here("list", "--db", db, "--json").stdout)["videos"]] == [kept["id"]]


def test_help_version_and_settings_file_mistakes(tmp_path):
    from vidsearch import __version__

    assert cli_here("--version").stdout.strip() == f"vidsearch {__version__}"
    helps = {cmd: cli_here(cmd, "--help").stdout for cmd in ("index", "search", "serve", "ui", "train")}
    for cmd, text in helps.items():
        assert "<bool>" not in text and not re.search(r"\w \.\s", text), (cmd, text)  # no flag types, no lost defaults
    assert "[default 1.0]" in helps["index"] and "--model" in helps["ui"]
    config = tmp_path / "vidsearch.toml"
    config.write_text("sample_fsp = 2\n")
    typo = cli_here("status", "--config", str(config), "--db", str(tmp_path / "db"))
    assert typo.exit_code == 2 and "unknown setting 'sample_fsp'" in typo.stderr and "sample_fps" in typo.stderr


def test_model_load_errors_print_only_ours(capfd):
    """open_clip logs its own error on the root logger before raising; with logging not configured
    (as in the CLI) that printed a raw `ERROR:root:...` line before our message, and left a stderr
    handler on the root logger for every later warning."""
    import logging

    from vidsearch.encoders import ModelLoadError, load_backbone

    root = logging.getLogger()
    saved, root.handlers[:] = root.handlers[:], []  # as in a fresh `vidsearch` process
    try:
        with pytest.raises(ModelLoadError, match="no-such-tag"):
            load_backbone("tiny", pretrained="no-such-tag")
        assert root.handlers == []
    finally:
        root.handlers[:] = saved
    assert "ERROR:root" not in capfd.readouterr().err


def test_search_and_delete_say_what_they_were_given(tmp_path):
    """The search-side probe: brackets in a query or an id are printed as given (Rich took them for
    markup: a traceback for "[/]", "[applause]" vanished); an export with no results says nothing was
    written (a script read the previous run's file); an input's weight without that input, a malformed
    --channel, a missing --checkpoint and a delete while another process writes are one-line errors;
    piped tables keep each path on one line."""
    long_dir = tmp_path / ("a_folder_with_a_rather_long_name_" * 3)
    clip = make_clip(long_dir / "clip_with_a_long_name_too.mp4", seconds=2, source="testsrc", audio_hz=None)
    db = str(tmp_path / "db")
    cli_here("index", str(clip), "--db", db, "--model", "tiny", "--no-speech", "--no-ocr", "--json")  # shipped: calibrated
    found = cli_here("search", "a test card [/] [applause]", "--db", db, "--min-relevance", "0")
    assert found.exit_code == 0 and "'a test card [/] [applause]'" in found.stdout, found.output
    stale = tmp_path / "r.edl"
    stale.write_text("OLD\n")
    none = cli_here("search", "a test card", "--db", db, "--min-relevance", "1", "--export", str(stale))
    assert none.exit_code == 1 and "nothing written" in none.stderr and stale.read_text() == "OLD\n"
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(11_000_000))
    for args, words in [(("--weight", "like=2"), "no like input"), (("--channel", "speech=2=3"), "--channel takes"),
                        (("--checkpoint", str(tmp_path / "nope.pt")), "nope.pt: no such file"),
                        (("--image", str(big)), "over the limit of 10 MB"), (("--image", str(tmp_path)), "is a folder")]:  # fmt: skip
        bad = cli_here("search", "x", "--db", db, *args)
        assert bad.exit_code == 2 and words in bad.stderr and "Traceback" not in bad.output, bad.output
    odd = cli_here("delete", "[/]", "x[red]y", "--db", db)
    assert odd.exit_code == 1 and "not in the index: [/], x[red]y" in odd.stdout
    from vidsearch.store import Store

    with Store.open(db).write_lock():  # as another process's run holds it
        busy = cli_here("delete", str(clip), "--db", db)
    assert busy.exit_code == 2 and "another vidsearch process is writing" in busy.stderr and "Traceback" not in busy.output
    piped = run_cli("list", "--db", db, env={"COLUMNS": ""}).stdout
    assert str(clip) in piped  # one line, not folded at 80 columns
    gone = cli_here("delete", str(long_dir), "--db", db, "--json")  # a folder: every indexed file under it
    assert gone.exit_code == 0 and json.loads(gone.stdout) == {"removed": 1, "files": 1, "unknown": []}
    other = make_clip(tmp_path / "old" / "b.mp4", seconds=2, source="smptebars", audio_hz=None)
    cli_here("index", str(other), "--db", db, "--no-speech", "--no-ocr", "--json")
    shutil.rmtree(tmp_path / "old")  # a folder that is gone is the usual one to delete
    gone = cli_here("delete", str(tmp_path / "old"), "--db", db, "--json")
    assert gone.exit_code == 0 and json.loads(gone.stdout) == {"removed": 1, "files": 1, "unknown": []}
