"""The synthetic corpus: rendered files match their ground truth, to the pixel and the hertz.

A corpus whose labels drift from its pixels would train and grade the encoders on noise, so the
checks here look at what ffmpeg decodes, not at what the generator meant to draw.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from vidsearch.lab import synth

SEED = 7
N_VIDEOS = 6


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, synth.SynthSummary]:
    out = tmp_path_factory.mktemp("synth")
    return out, synth.generate(out, N_VIDEOS, SEED, jobs=2, progress=False)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def events_by_video(out: Path) -> dict[str, list[dict]]:
    grouped = defaultdict(list)
    for e in read_jsonl(out / "events.jsonl"):
        grouped[e["video"]].append(e)
    return grouped


def probe(path: Path) -> dict:
    cmd = ["ffprobe", "-v", "error", "-show_entries", "stream=codec_type,codec_name,sample_rate,duration:format=duration", "-of", "json", str(path)]
    return json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)


def decode_frames(path: Path) -> np.ndarray:
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, synth.HEIGHT, synth.WIDTH, 3)


def decode_audio(path: Path) -> np.ndarray:
    cmd = ["ffmpeg", "-v", "error", "-i", str(path), "-f", "f32le", "-ac", "1", "-ar", str(synth.SAMPLE_RATE), "-"]
    return np.frombuffer(subprocess.run(cmd, capture_output=True, check=True).stdout, np.float32)


def dominant_colour(frame: np.ndarray) -> str | None:
    """The palette colour most pixels sit close to; backdrops and the text box are near none."""
    names = list(synth.COLOURS)
    palette = np.array([synth.COLOURS[n] for n in names], np.float32)
    dist = np.linalg.norm(frame.reshape(-1, 1, 3).astype(np.float32) - palette[None], axis=2)
    near = dist.min(axis=1) < 60
    if not near.any():
        return None
    votes = np.bincount(dist.argmin(axis=1)[near], minlength=len(names))
    return names[int(votes.argmax())]


def peak_hz(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.fft.rfftfreq(samples.size, 1 / synth.SAMPLE_RATE)[spectrum.argmax()])


# -- files ---------------------------------------------------------------------------------------


def test_every_video_has_its_planned_duration_and_both_streams(corpus):
    out, summary = corpus
    assert summary.videos == N_VIDEOS and summary.train_videos + summary.test_videos == N_VIDEOS
    for video, events in events_by_video(out).items():
        info = probe(out / video)
        kinds = {s["codec_type"]: s for s in info["streams"]}
        assert kinds["video"]["codec_name"] == "h264"
        assert kinds["audio"]["codec_name"] == "aac" and kinds["audio"]["sample_rate"] == "44100"
        expected = sum(e["end"] - e["start"] for e in events)
        assert float(info["format"]["duration"]) == pytest.approx(expected, abs=0.06)
        assert float(kinds["video"]["duration"]) == pytest.approx(expected, abs=0.06)


SLOT_FIELDS = ("colour", "shape", "motion", "sound", "background", "backdrop", "spoken", "onscreen")


def test_caption_files_parse_and_events_run_back_to_back(corpus):
    out, _ = corpus
    truth = events_by_video(out)
    records = read_jsonl(out / "train.jsonl") + read_jsonl(out / "test.jsonl")
    assert sorted(r["video"] for r in records) == sorted(truth)
    paraphrased = 0
    for r in records:
        assert (out / r["video"]).is_file()  # relative to the JSONL's folder
        events = truth[r["video"]]
        # a training video lists each event's paraphrases after its caption, at the event's times
        expected = [(t, e["start"], e["end"]) for e in events for t in [e["caption"]] + (e["paraphrases"] if e["split"] == "train" else [])]
        assert [(c["text"], c["start"], c["end"]) for c in r["captions"]] == expected
        paraphrased += sum(len(e["paraphrases"]) for e in events if e["split"] == "train")
        for e in events:
            assert len(set([e["caption"]] + e["paraphrases"])) == 1 + len(e["paraphrases"]) <= synth.PARAPHRASES
            assert all(p in synth.all_captions(synth.Event(**{k: e[k] for k in SLOT_FIELDS}, start=0, end=1, size=1, path=(0, 0, 0, 0)), synth.TRAIN_PHRASING)
                       for p in e["paraphrases"])  # fmt: skip
        caps = [(e["start"], e["end"]) for e in events]
        assert 2 <= len(caps) <= 4 and caps[0][0] == 0.0
        assert all(a[1] == b[0] for a, b in itertools.pairwise(caps))
        duration = events[-1]["end"]
        assert all(0 <= s < e <= duration and 2.0 <= e - s <= 4.0 for s, e in caps)
    assert paraphrased >= 2 * sum(e["split"] == "train" for es in truth.values() for e in es)
    # the control file: the same test videos and times, in the phrasing training uses
    seen = read_jsonl(out / "test_seen_phrasing.jsonl")
    test = read_jsonl(out / "test.jsonl")
    assert [r["video"] for r in seen] == [r["video"] for r in test]
    for s, t in zip(seen, test):
        assert [(c["start"], c["end"]) for c in s["captions"]] == [(c["start"], c["end"]) for c in t["captions"]]
        assert [c["text"] for c in s["captions"]] == [e["captions"]["train"] for e in truth[s["video"]]]


def test_events_file_holds_the_full_ground_truth(corpus):
    out, _ = corpus
    needed = {"colour", "shape", "motion", "sound", "spoken", "onscreen", "start", "end", "split", "sound_dependent", "visual_key"}
    for e in read_jsonl(out / "events.jsonl"):
        assert needed <= e.keys()
        assert e["colour"] in synth.COLOURS and e["shape"] in synth.SHAPES
        assert e["motion"] in synth.MOTIONS and e["sound"] in synth.SOUNDS


def test_same_seed_same_files(corpus, tmp_path):
    out, _ = corpus
    synth.generate(tmp_path, N_VIDEOS, SEED, jobs=1, progress=False)
    for name in ("train.jsonl", "test.jsonl", "events.jsonl", "videos/synth_00000.mp4"):
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes(), name
    assert synth.plan(N_VIDEOS, SEED + 1) != synth.plan(N_VIDEOS, SEED)


def test_a_larger_corpus_starts_with_the_smaller_ones_videos():
    small, large = synth.plan(5, 3), synth.plan(40, 3)
    strip = lambda p: [(e.colour, e.shape, e.motion, e.sound, e.start, e.end) for e in p.events]  # noqa: E731
    assert [strip(p) for p in small] == [strip(p) for p in large[:5]]


# -- what the corpus is for ---------------------------------------------------------------------


def test_test_captions_are_phrased_as_training_never_does():
    plans = synth.plan(150, 11)
    test_events = [e for p in plans if p.split == "test" for e in p.events]
    assert len(test_events) > 40
    for e in test_events:
        assert e.caption == e.captions["test"]
        assert e.caption in synth.all_captions(e, synth.TEST_PHRASING)
        assert e.caption not in synth.all_captions(e, synth.TRAIN_PHRASING)
    for e in (e for p in plans if p.split == "train" for e in p.events):
        assert e.caption in synth.all_captions(e, synth.TRAIN_PHRASING)
    train_words = {w for e in (e for p in plans for e in p.events) for c in (e.captions["train"], *e.paraphrases) for w in c.split()}
    assert {"ball", "box", "glides", "drifts", "beep", "whistle"}.isdisjoint(train_words)


def _phrasing_words(phrasing: synth.Phrasing) -> set[str]:
    parts = [*phrasing.templates, *phrasing.speech, *phrasing.on_screen]
    parts += [w for d in (phrasing.nouns, phrasing.motions, phrasing.backdrops) for v in d.values() for w in v]
    parts += [w for v in phrasing.sounds.values() for pair in v for w in pair]
    return {w for p in parts for w in re.findall(r"[a-z]+(?:-[a-z]+)*", re.sub(r"\{\w+\}", "", p.lower()))}


def test_training_synonyms_never_borrow_the_held_out_words():
    """Training's richer phrasing (synonyms, sound-first sentences) shares with the held-out test
    phrasing only function words, the four shape names and what the first round's training phrasing
    already shared; a new shared word would make test.jsonl's "held-out phrasing" figures a lie."""
    allowed = {"a", "an", "and", "as", "is", "no", "on", "over", "that", "the", "there", "to", "while", "with",
               "circle", "square", "star", "triangle",  # the shapes' own names
               "clap", "downward", "heard", "left", "low", "medium", "patterned", "right", "screen", "sound", "up", "upward", "voice"}  # fmt: skip
    shared = _phrasing_words(synth.TRAIN_PHRASING) & _phrasing_words(synth.TEST_PHRASING)
    assert shared <= allowed, sorted(shared - allowed)
    assert len(synth.TRAIN_PHRASING.templates) > len(synth.TEST_PHRASING.templates)  # more sentence shapes than the test's


def test_sound_only_pairs_exist_and_their_captions_name_the_sound():
    plans = synth.plan(200, 0)
    by_look = defaultdict(list)
    for p in plans:
        for e in p.events:
            by_look[(p.split, e.visual_key)].append(e)
    pairs = [(a, b) for group in by_look.values() for a, b in itertools.combinations(group, 2) if a.sound != b.sound]
    assert len(pairs) >= 20
    assert any(split == "test" for (split, _), g in by_look.items() if len({e.sound for e in g}) > 1)
    for a, b in pairs:
        assert a.sound_dependent and b.sound_dependent
        for e in (a, b):
            phrasing = synth.PHRASINGS["test" if e.caption == e.captions["test"] else "train"]
            assert any(word in e.caption for pair in phrasing.sounds[e.sound] for word in pair)
    within_video = sum(
        any(a.visual_key == b.visual_key and a.sound != b.sound for a, b in itertools.combinations(p.events, 2)) for p in plans
    )
    assert within_video >= 10


def test_most_videos_reuse_a_colour_or_shape():
    plans = synth.plan(200, 0)
    shared = sum(
        len({e.colour for e in p.events}) < len(p.events) or len({e.shape for e in p.events}) < len(p.events) for p in plans
    )
    assert shared / len(plans) > 0.6


# -- the pixels and the sound match the labels --------------------------------------------------


def test_middle_frame_shows_the_events_colour(corpus):
    out, _ = corpus
    checked = 0
    for video, events in events_by_video(out).items():
        frames = decode_frames(out / video)
        for e in events:
            mid = int((e["start"] + e["end"]) / 2 * synth.FPS)
            assert dominant_colour(frames[mid]) == e["colour"], (video, e)
            checked += 1
    assert checked >= 12


def test_each_events_audio_is_its_sound(corpus):
    out, _ = corpus
    tones = 0
    for video, events in events_by_video(out).items():
        audio = decode_audio(out / video)
        for e in events:
            a, b = (int(t * synth.SAMPLE_RATE) for t in (e["start"] + 0.2, e["end"] - 0.2))
            window = audio[a:b]
            rms = float(np.sqrt(np.mean(window**2)))
            if e["sound"] in synth.TONE_HZ and not e["spoken"]:
                assert peak_hz(window) == pytest.approx(synth.TONE_HZ[e["sound"]], rel=0.02), (video, e)
                tones += 1
            elif e["sound"] == "silence":
                assert rms < 0.005, (video, e)
            elif e["sound"] == "clap" and not e["spoken"]:
                assert rms > 0.03 and np.abs(window).max() > 0.3, (video, e)
    assert tones >= 4


def test_spoken_words_are_in_the_soundtrack(tmp_path):
    """Speech lands where the plan puts it, louder than the quiet tone under it."""
    plans = synth.plan(60, 5)
    video = next(p for p in plans if any(e.spoken for e in p.events))
    e = next(e for e in video.events if e.spoken)
    assets = synth._Assets(tmp_path)
    assets.prepare([video], jobs=1)
    samples = synth.soundtrack(video, assets, seed=5)
    a = int((e.start + synth.SPEECH_LEAD_IN) * synth.SAMPLE_RATE)
    assert np.abs(samples[a : a + synth.SAMPLE_RATE]).max() > 0.5


# -- the command ----------------------------------------------------------------------------------


def test_command_prints_one_json_object(tmp_path):
    app = typer.Typer()
    app.command()(synth.synth_command)
    result = CliRunner().invoke(app, [str(tmp_path / "c"), "--videos", "2", "--seed", "1", "--jobs", "2", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["videos"] == 2 and summary["train_videos"] + summary["test_videos"] == 2
    assert summary["video_seconds"] > 0 and summary["elapsed"] > 0
    assert (tmp_path / "c" / "train.jsonl").is_file() and (tmp_path / "c" / "events.jsonl").is_file()
