"""The sound channel (encoders/sound_cues.py, search/sound_channel.py): the indexer stores what the
soundtrack does every quarter second, and a query that names one sound (silence, a clap, a low, middle
or high tone) adds how well each window's soundtrack matches it to its event window, so the video
with the asked-for sound comes first where the pictures are the same."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from media import indexed_synth_library
from vidsearch.api_models import SearchRequest
from vidsearch.encoders.sound_cues import NO_SOUND_DB, SOUND_COLUMNS, SoundCueReader, silent_rows, sound_cues
from vidsearch.lab import synth
from vidsearch.search import sound_channel
from vidsearch.search.event_windows import best_windows, channel_hits
from vidsearch.search.features import VideoFeatures
from vidsearch.search.sound_channel import SOUNDS, agreement, named_sound, window_sound


def test_the_one_sound_a_query_names():
    assert named_sound("a red circle slides to the left while a low tone plays") == "low"
    assert named_sound("a deep beep rings out as a yellow box travels left") == "low"
    assert named_sound("a mid-pitched beep rings out; a blue ball sinks") == "middle"
    assert named_sound("a medium-frequency tone sounds as the square rises") == "middle"
    assert named_sound("the star drops, accompanied by a high-pitched whistle") == "high"
    assert named_sound("a shrill beep and a green triangle") == "high" and named_sound("a treble note plays") == "high"
    assert named_sound("hands clap as a blue block drifts left") == "clap" and named_sound("people applaud") == "clap"
    assert named_sound("a noise burst crackles") == "clap"
    assert named_sound("a white square sinks and nothing can be heard") == "silence"
    assert named_sound("no sound at all; a ball rises") == "silence" and named_sound("no tone plays") == "silence"
    assert named_sound('a ball rises, a voice says "silence please"') is None  # quoted: speech
    assert named_sound("a high-pitched whistle and a hand clap") is None  # two sounds: which window?
    assert named_sound("a high-pitched sound") == "high" and named_sound("the soundtrack is mute") == "silence"
    assert named_sound("a high-pitched sine wave plays") == "high" and named_sound("a tone of low pitch") == "low"
    assert named_sound("a deep humming as the box sinks") == "low" and named_sound("shrill beeping") == "high"
    assert named_sound("a ball moves left as a low sound plays") == "low" and named_sound("a low-pitched buzzing") == "low"
    for text in ("a dog barks", "a church bell rings", "a siren wails", "the ball climbs high", "a cat", "", None,
                 "high quality sound of a waterfall", "a low battery signal", "high-frequency trading", "a low pitch in baseball",
                 "a silent film with a piano", "a mute swan", "all quiet on the western front", "a slap shot in hockey",
                 "a sound of high quality", "high sound quality", "low sound levels in the room", "low sound on my laptop fix",
                 "high sound pressure", "high sound-quality speakers"):
        assert named_sound(text) is None, text


SR = 16_000


def _signal(kind: str, seconds: float, rng: np.random.Generator, sr: int = SR) -> np.ndarray:
    """Other sounds than either synthetic renderer's: square-wave tones at other pitches, single
    hand-clap-like clicks at an irregular pace, a quiet hiss for silence; a faint hum under all."""
    t = np.arange(int(seconds * sr)) / sr
    hum = 0.002 * np.sin(2 * np.pi * 50 * t)
    if kind in ("low", "middle", "high"):
        hz = {"low": 150.0, "middle": 800.0, "high": 2400.0}[kind]
        return (0.2 * np.sign(np.sin(2 * np.pi * hz * t)) + hum).astype(np.float32)
    if kind == "clap":
        out = hum.copy()
        at = 0.1
        while at < seconds - 0.2:
            a = int(at * sr)
            n = int(0.04 * sr)
            out[a : a + n] += 0.6 * rng.uniform(-1, 1, n) * np.exp(-np.arange(n) / (0.008 * sr))
            at += rng.uniform(0.35, 0.7)
        return out.astype(np.float32)
    return (hum + 0.0005 * rng.normal(size=len(t))).astype(np.float32)


def test_each_sound_is_read_from_the_signal():
    """Every kind at two sample rates agrees with its own name (over 0.5) and with no other (under 0)."""
    rng = np.random.default_rng(2)
    for sr in (16_000, 48_000):
        for kind in SOUNDS:
            rows = sound_cues(_signal(kind, 3.0, rng, sr), sr)
            reading = window_sound(rows, np.array([0]), np.array([len(rows)]))
            got = {s: float(agreement(reading, s)[0]) for s in SOUNDS}
            assert got[kind] > 0.5 and all(v < 0 for s, v in got.items() if s != kind), (sr, kind, got, reading)


def test_silence_under_a_room_tone_bed_is_still_silence():
    """A recording's "silence" is rarely digital: a steady hiss or room tone at -40 dB (louder than the
    -50 dB level rule) reads as silence, while the same bed with claps in it, or speech-like bursts, does not."""
    rng = np.random.default_rng(8)
    bed = (0.012 * rng.normal(size=3 * SR)).astype(np.float32)  # ~-38 dB of white hiss
    rumble = np.cumsum(rng.normal(size=3 * SR))
    rumble -= np.convolve(rumble, np.ones(400) / 400, "same")  # a low room tone (brown noise, its drift taken out)
    rumble = (0.012 * rumble / rumble.std()).astype(np.float32)
    clapped = bed + _signal("clap", 3.0, rng)
    beeps = bed + (0.2 * np.sin(2 * np.pi * 700 * np.arange(3 * SR) / SR) * ((np.arange(3 * SR) // 2400) % 3 == 0)).astype(np.float32)
    read = {name: window_sound(r := sound_cues(x, SR), np.array([0]), np.array([len(r)])) for name, x in (("bed", bed), ("rumble", rumble), ("clapped", clapped), ("beeps", beeps))}
    assert read["bed"][0, 0] > -40  # over the level rule's -40 dB: the bed rule is what reads it
    assert agreement(read["bed"], "silence")[0] > 0.5 and agreement(read["bed"], "clap")[0] < 0
    assert agreement(read["rumble"], "silence")[0] > 0.5 and agreement(read["rumble"], "clap")[0] < 0
    assert agreement(read["clapped"], "silence")[0] < 0 and agreement(read["beeps"], "silence")[0] < 0


def test_a_soundtrack_read_in_blocks_reads_as_one():
    rng = np.random.default_rng(4)
    x = np.concatenate([_signal(k, 1.3, rng) for k in ("low", "clap", "silence", "high")])
    whole = sound_cues(x, SR)
    reader = SoundCueReader(SR)
    cuts = [0, 1234, 1235, 20_000, 51_111, len(x)]
    for a, b in zip(cuts[:-1], cuts[1:]):
        reader.feed(x[a:b])
    streamed = reader.rows()
    assert streamed.shape == whole.shape and whole.shape[1] == SOUND_COLUMNS
    np.testing.assert_allclose(streamed, whole, rtol=1e-4, atol=1e-4)
    assert np.allclose(np.diff(whole[:, 0]), 0.25)  # a row every quarter second, from 0
    assert sound_cues(np.zeros(0, np.float32), SR).shape == (0, SOUND_COLUMNS)
    assert len(sound_cues(_signal("low", 0.2, rng), SR)) == 1  # shorter than a frame: one row of what there is


def test_a_broken_sample_or_row_spoils_nothing_else():
    """NaN or infinite samples (a broken decode) read as silence or full scale, and a stored row that is
    not finite does not spread to the windows after it on the shared axis."""
    rng = np.random.default_rng(6)
    x = _signal("high", 2.0, rng)
    x[1000:1010] = np.nan
    x[5000] = np.inf
    rows = sound_cues(x, SR)
    assert np.isfinite(rows).all()
    clean = sound_cues(_signal("silence", 3.0, rng), SR)
    bad = clean.copy()
    bad[2, 1:] = np.nan
    both = np.concatenate([bad, clean])
    reading = window_sound(both, np.array([0, len(bad)]), np.array([len(bad), len(both)]))
    assert np.isfinite(reading).all() and agreement(reading, "silence")[1] == agreement(window_sound(clean, np.array([0]), np.array([len(clean)])), "silence")[0]


def test_a_side_reader_that_fails_costs_the_main_reader_nothing():
    from vidsearch.indexer.prepare import tapped

    seen, failed = [], []

    def side(block):
        if len(seen) == 1:
            raise ValueError("cue reader broke")
        seen.append(block)

    blocks = [np.full(4, i, np.float32) for i in range(4)]
    out = list(tapped(iter(blocks), side, failed))
    assert len(out) == 4 and [float(b[0]) for b in out] == [0, 1, 2, 3]  # the audio tower still gets every block
    assert len(seen) == 1 and len(failed) == 1 and "broke" in str(failed[0])  # called no more after it failed


def test_a_window_reading_needs_rows():
    rows = sound_cues(_signal("high", 3.0, np.random.default_rng(0)), SR)
    reading = window_sound(rows, np.array([0, 0, 3]), np.array([len(rows), 1, 3]))
    assert reading[:, 4].tolist() == [len(rows), 1, 0]
    assert agreement(reading, "high").tolist()[1:] == [0.0, 0.0]  # one row, no rows: nothing to tell


def test_the_window_whose_sound_is_asked_for_gains():
    rng = np.random.default_rng(3)
    v = rng.normal(size=(6, 8)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    t = np.arange(6, dtype=np.float32)
    high = VideoFeatures(t, t + 1, v, sound=sound_cues(_signal("high", 6.0, rng), SR))
    quiet = VideoFeatures(t, t + 1, v, sound=sound_cues(_signal("silence", 6.0, rng), SR))
    blind = VideoFeatures(t, t + 1, v)  # indexed before the channel: no sound cues
    base = best_windows(v[0], [high, quiet, blind])
    asked = best_windows(v[0], [high, quiet, blind], sound="high")
    w = sound_channel.SOUND_WEIGHT
    assert w > 0 and asked[0] == pytest.approx(base[0] + w, abs=1e-5) and asked[1] == pytest.approx(base[1] - w, abs=1e-5)
    assert asked[2] == pytest.approx(base[2])
    hushed = best_windows(v[0], [high, quiet], sound="silence")
    assert hushed[0] == pytest.approx(base[0] - w, abs=1e-5) and hushed[1] == pytest.approx(base[1] + w, abs=1e-5)
    # the search's time window: only the rows inside it count (silence for 2 s, then a high tone; a
    # window of the first 2 s' units spans 3 s and would read the tone's first second)
    mixed = np.concatenate([_signal("silence", 2.0, rng), _signal("high", 4.0, rng)])
    late = VideoFeatures(t, t + 1, v, sound=sound_cues(mixed, SR))
    early = np.arange(6) < 2
    assert best_windows(v[0], [late], [early], sound="silence")[0] == pytest.approx(best_windows(v[0], [late], [early])[0] + w, abs=1e-5)
    assert best_windows(v[0], [late], [early], sound="high")[0] == pytest.approx(best_windows(v[0], [late], [early])[0] - w, abs=1e-5)
    assert silent_rows(3.0)[:, 1].max() == NO_SOUND_DB and len(silent_rows(3.0)) == 11 and len(silent_rows(0)) == 0


def test_the_moment_curve_rises_where_the_asked_for_sound_plays():
    """channel_hits: per unit, the mean of the sound terms of the windows holding it, as timed rows
    for the moment curve: highest over the high tone (3-6 s), negative over the silence around it; a
    reading the same all through a video (a silent one asked for a tone) the same for every unit, its
    first and last too, so it moves no moment; the same rows for a video scored alone or beside
    others; the search's time window keeps its units only; nothing where the query names nothing."""
    rng = np.random.default_rng(5)
    v = rng.normal(size=(9, 8)).astype(np.float32)
    t = np.arange(9, dtype=np.float32)
    signal = np.concatenate([_signal("silence", 3.0, rng), _signal("high", 3.0, rng), _signal("silence", 3.0, rng)])
    f = VideoFeatures(t, t + 1, v, sound=sound_cues(signal, SR))
    other = VideoFeatures(t[:4], t[:4] + 1, v[:4], sound=sound_cues(_signal("low", 4.0, rng), SR))
    rows = channel_hits([f], sound="high")[0]
    assert rows[:, 0].tolist() == t.tolist() and rows[:, 1].tolist() == (t + 1).tolist()  # one row per unit
    assert set(np.argsort(-rows[:, 2])[:3]) == {3, 4, 5} and rows[3:6, 2].min() > 0
    assert rows[0, 2] < 0 and rows[8, 2] < 0
    w = sound_channel.SOUND_WEIGHT
    silent = VideoFeatures(t, t + 1, v, sound=silent_rows(9.0))
    flat = channel_hits([silent], sound="high")[0][:, 2]
    assert np.ptp(flat) < 1e-9 and flat[0] == pytest.approx(-w, abs=1e-5)  # no taper at the ends
    beside = channel_hits([other, f], sound="high")
    assert np.allclose(beside[1], rows) and len(beside[0]) == 4 and beside[0][:, 2].max() < 0
    early = channel_hits([f], [t < 4], sound="high")[0]
    assert early[:, 0].tolist() == [0, 1, 2, 3]
    assert channel_hits([f])[0].shape == (0, 3) and channel_hits([f, other], motion=None)[1].shape == (0, 3)
    # and the moments: the tone's seconds, where the frames alone say nothing (all units alike)
    from vidsearch.search.moments import localize_moments

    flat_frames = np.full(9, 0.3)
    found = localize_moments(t, t + 1, flat_frames, rows, max_moments=1).moments[0]
    assert 2.5 <= found.start <= 3.5 and 5.5 <= found.end <= 6.5
    peak = np.r_[np.full(4, 0.2), 0.5, np.full(4, 0.2)]  # frames peak at 4-5 s; a silent video's constant reading keeps it there
    alone = localize_moments(t, t + 1, peak, None, max_moments=1).moments[0]
    lifted = localize_moments(t, t + 1, peak, channel_hits([silent], sound="high")[0], max_moments=1).moments[0]
    assert (lifted.start, lifted.end) == pytest.approx((alone.start, alone.end))


# -- end to end: one picture, five soundtracks, drawn by the held-out renderer ---------------------------

PHRASES = {"low": "while a deep hum plays", "middle": "while a medium-pitched beep sounds", "high": "with a high-pitched whistle",
           "clap": "while someone claps", "silence": "in complete silence"}  # fmt: skip


def _event(sound: str) -> synth.Event:
    size, margin = 64, synth.MARGIN
    far, mid = synth.WIDTH - size - margin, (synth.WIDTH - size) // 2
    return synth.Event("blue", "circle", "right", sound, "plain", "black", None, None, 0.0, 5.0, size, (margin, mid, far, mid))


@pytest.fixture(scope="module")
def sound_library(tmp_path_factory):
    root = tmp_path_factory.mktemp("sounds")
    plans = [synth.VideoPlan(k, "test", (_event(sound),), style="heldout") for k, sound in enumerate(SOUNDS)]
    return (*indexed_synth_library(root, plans, 9), root)


@pytest.mark.slow
def test_stored_sound_cues_name_each_videos_sound(sound_library):
    engine, names, _ = sound_library
    by_name = {n: v for v, n in names.items()}
    feats = engine.cache.get_many(list(names))
    for k, sound in enumerate(SOUNDS):
        f = feats[by_name[f"synth_{k:05d}"]]
        assert f.sound.shape[1] == SOUND_COLUMNS and len(f.sound) >= 16  # 5 s: a row every quarter second
        reading = window_sound(f.sound, np.array([0]), np.array([len(f.sound)]))
        got = {s: float(agreement(reading, s)[0]) for s in SOUNDS}
        assert max(got, key=got.get) == sound and got[sound] > 0.5, (sound, got)


@pytest.mark.slow
def test_the_video_with_the_asked_for_sound_comes_first(sound_library):
    """Five videos of the same blue circle moving right, each with another sound: served search puts
    the asked-for sound's video first for each of the five."""
    engine, names, _ = sound_library
    for k, sound in enumerate(SOUNDS):
        req = SearchRequest(query=f"a blue ball glides to the right {PHRASES[sound]}", top_k=5, min_relevance=0.0)
        assert names[engine.rank(engine.plan(req)).candidates[0].video_id] == f"synth_{k:05d}", sound


@pytest.mark.slow
def test_a_model_without_an_audio_tower_stores_sound_cues(sound_library, tmp_path, tiny_backbone):
    """The cues are read for every model: one whose checkpoint brings no audio tower decodes the
    soundtrack for them alone; a video without a soundtrack is stored as silence; the setting turns
    them off."""
    from vidsearch.config import load_settings
    from vidsearch.indexer.pipeline import IndexRun, open_store_for
    from vidsearch.search.features import FeatureCache

    _, _, root = sound_library
    (tmp_path / "lib").mkdir()
    for name in ("synth_00002.mp4", "synth_00004.mp4"):
        (tmp_path / "lib" / name).write_bytes((root / "videos" / name).read_bytes())
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(root / "videos" / "synth_00000.mp4"), "-an", "-c", "copy", str(tmp_path / "lib" / "mute.mp4")], check=True)
    settings = load_settings(None, db=tmp_path / "db", model="tiny", pretrained="none", speech=False, ocr=False)
    assert getattr(tiny_backbone, "audio_tower", None) is None
    store = open_store_for(settings, tiny_backbone)
    IndexRun(store, tiny_backbone, settings).run([tmp_path / "lib"])
    files = store.files()
    ids = {Path(p).stem: v for p, v in zip(files["path"].to_pylist(), files["video_id"].to_pylist())}
    feats = FeatureCache(store).get_many(list(ids.values()))
    assert len(feats) == 3 and all(len(f.audio_vectors) == 0 for f in feats.values())
    for name, sound in (("synth_00002", "high"), ("synth_00004", "silence"), ("mute", "silence")):
        f = feats[ids[name]]
        reading = window_sound(f.sound, np.array([0]), np.array([len(f.sound)]))
        assert len(f.sound) >= 16 and max(SOUNDS, key=lambda s: float(agreement(reading, s)[0])) == sound
    # `sound_cues = false`: nothing decoded for them, nothing stored (the channel then adds 0)
    off = load_settings(None, db=tmp_path / "db_off", model="tiny", pretrained="none", speech=False, ocr=False, sound_cues=False)
    store_off = open_store_for(off, tiny_backbone)
    IndexRun(store_off, tiny_backbone, off).run([tmp_path / "lib"])
    feats_off = FeatureCache(store_off).get_many([v for v in store_off.files()["video_id"].to_pylist() if v])
    assert len(feats_off) == 3 and all(len(f.sound) == 0 for f in feats_off.values())


@pytest.mark.slow
def test_with_speech_on_the_decoder_reads_the_cues_from_its_speech_stream(sound_library, tmp_path, tiny_backbone, monkeypatch):
    """A model without an audio tower, speech on: the decoder already streams the soundtrack for
    Whisper, so the cues are read from those blocks and the indexer decodes nothing more (its own
    stream_audio fails here if called); the rows equal those of the indexer's own decode."""
    from vidsearch.config import load_settings
    from vidsearch.indexer import pipeline
    from vidsearch.search.features import FeatureCache

    _, _, root = sound_library
    (tmp_path / "lib").mkdir()
    for name in ("synth_00002.mp4", "synth_00003.mp4"):
        (tmp_path / "lib" / name).write_bytes((root / "videos" / name).read_bytes())

    def stored(db: str, speech: bool) -> dict[str, np.ndarray]:
        settings = load_settings(None, db=tmp_path / db, model="tiny", pretrained="none", speech=speech, ocr=False)
        store = pipeline.open_store_for(settings, tiny_backbone)
        pipeline.IndexRun(store, tiny_backbone, settings).run([tmp_path / "lib"])
        files = store.files()
        ids = {Path(p).stem: v for p, v in zip(files["path"].to_pylist(), files["video_id"].to_pylist())}
        feats = FeatureCache(store).get_many(list(ids.values()))
        return {name: feats[v].sound for name, v in ids.items()}

    own = stored("db_own", speech=False)  # the indexer's own decode

    def no_second_decode(*args, **kwargs):
        raise AssertionError("the indexer decoded the soundtrack again")

    monkeypatch.setattr(pipeline, "stream_audio", no_second_decode)
    shared = stored("db_shared", speech=True)
    assert set(shared) == set(own) == {"synth_00002", "synth_00003"}
    for name in own:
        assert shared[name].shape == own[name].shape and len(own[name]) >= 16
        np.testing.assert_allclose(shared[name], own[name], atol=1e-3)
