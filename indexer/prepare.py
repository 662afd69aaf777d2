"""The decoder processes' job, as a sequence of steps: probe one file, decode its sampled frames chunk
by chunk, then read its text channels: speech (ASR with word times) and on-screen text (OCR).

Runs in a separate process (see worker.py): decoding a hostile file can crash a native decoder, and this
keeps such a crash from taking the indexing run with it. Each step's result is sent to the indexer as
soon as it exists and the next step starts only when the indexer asks, so memory stays bounded by one
chunk whatever the video's length, and the indexer decides when decoders may use the CPU. The one
exception is speech: the soundtrack is transcribed on a thread of its own from the probe on, beside
the frames (`SpeechThread`; `speech_beside_frames`), and its last step waits for the transcript.

What a step can yield: `Started` (the probe), `Chunk` (frames for the encoder), `Working` (a long
text-channel step made progress), then `Finished` (spans and warnings) or `Failed` (the reason). A
failed text channel, or a stretch of damaged frames, is a warning: the rest of the video is kept.
Returns plain data only.

One decode serves the encoder and OCR when OCR reads at the encoder's times or fewer (the default:
every other frame read, the rest glanced at): the frames are decoded whole at OCR's height, read for
text, then scaled down and centre-cropped for the encoder.
Decoding is what a large source costs most (a 1080p H.264 minute: ~14 s of CPU here at one frame a
second, per pass), so a second pass for OCR cost more than reading the text.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vidsearch.cores import usable_cores
from vidsearch.encoders.ocr import OcrReader
from vidsearch.encoders.sound_cues import SoundCueReader
from vidsearch.encoders.speech import SAMPLE_RATE, get_recognizer, stream_audio

from .decode import DecodeReport, FrameChunk, center_crop, iter_frames, plan_samples, read_audio, scaled_size
from .probe import MediaError, ProbeResult, is_url, probe
from .segment import colour_histograms, histogram_changes
from .sidecar import closed_caption_spans, embedded_subtitle_spans

log = logging.getLogger(__name__)


# OCR reads a whole frame every 2 s and glances at the frames between for text that came and went
# (encoders/ocr.py): on the text-channel bench's talk over moving video the same words, and the same
# one-second captions, as reading every second, for ~60% of its CPU (`bench/text_channels.py`).
DEFAULT_OCR_FPS = 0.5


@dataclass
class DecodeJob:
    path: str
    sample_fps: float
    image_size: int
    want_audio: bool = False  # return the whole waveform (training data); the indexer streams it itself
    speech: bool = False
    speech_engine: str = "whisper"
    speech_model: str | None = None
    ocr: bool = False
    ocr_height: int = 360  # OCR reads whole frames at this height (text needs pixels)
    ocr_engine: str = "rapidocr"
    ocr_fps: float | None = None  # frames per second read for text (None: DEFAULT_OCR_FPS, or sample_fps where lower)
    ocr_glance: bool = True  # look at the frames between OCR's reads for new text (rapidocr)
    speech_batch: int = 8
    speech_threads: int = 0  # Whisper's threads (0: half the cores)
    speech_beside_frames: bool = True  # transcribe on a thread of its own while the frames are decoded (SpeechThread)
    ocr_threads: int = 0  # the OCR reader's threads (0: one per core); decode_job gives it its share
    short_fps: float = 0.0  # frames per second for videos up to `short_seconds` long, where above sample_fps
    short_seconds: float = 0.0
    sound_cues: bool = False  # also read the sound channel's cues from the speech stream (the indexer would decode it again)

    def frame_rate(self, duration: float) -> float:
        """Frames per second sampled from a video this long: `short_fps` for short ones, else sample_fps."""
        return max(self.sample_fps, self.short_fps) if duration <= self.short_seconds else self.sample_fps

    @property
    def text_rate(self) -> float:
        """Frames per second OCR reads whole: `ocr_fps`, else `DEFAULT_OCR_FPS` or sample_fps where that
        is lower (a short video's denser frames are for the encoder: on-screen text does not change
        twice a second); the frames between are glanced at for new text (`ocr_glance`). Tesseract,
        which cannot be glanced with (it reads whole pages), reads every sample by default."""
        if self.ocr_fps:
            return self.ocr_fps
        return min(self.sample_fps, DEFAULT_OCR_FPS) if self.ocr_engine == "rapidocr" else self.sample_fps

    @property
    def glances(self) -> bool:
        """Whether the frames between OCR's reads are glanced at (rapidocr: it can read a region)."""
        return self.ocr_glance and self.ocr_engine == "rapidocr"

    def ocr_size(self, info: ProbeResult) -> int:
        """The short side OCR reads whole frames at: `ocr_height`, or the video's height where that is less."""
        return min(self.ocr_height, info.height)


def decode_job(s, location: str, image_size: int, sound_cues: bool = False) -> DecodeJob:
    """What a decoder is asked to do for one file under settings `s` (both engines ask the same).
    OCR runs inside the decoder, one per core (at most 4), so it gets the cores' share of one decoder:
    each of several decoders with a thread per core paid ~18% more CPU for the same text. Whisper,
    running beside it (`speech_beside_frames`), gets the same share.
    `sound_cues`: the indexer has no audio tower whose stream it could read them from, so the
    decoder reads them from the soundtrack it decodes for speech (when speech is on)."""
    from .worker import default_decode_workers  # (worker imports this module)

    ocr_threads = max(1, usable_cores() // (s.decode_workers or default_decode_workers()))
    # beside the frames, Whisper shares the decoder's cores with OCR and takes the same share; after
    # the frames it had them alone (0: its own default, half the cores)
    speech_threads = s.speech_threads or (ocr_threads if s.speech_beside_frames else 0)
    return DecodeJob(location, s.sample_fps, image_size, want_audio=False,
                     speech=s.speech, speech_engine=s.speech_engine, speech_model=s.speech_model, ocr=s.ocr,
                     ocr_engine=s.ocr_engine, ocr_fps=s.ocr_fps, ocr_glance=s.ocr_glance, speech_batch=s.speech_batch,
                     speech_threads=speech_threads, speech_beside_frames=s.speech_beside_frames, ocr_threads=ocr_threads,
                     short_fps=s.short_video_fps, short_seconds=s.short_video_seconds, sound_cues=sound_cues and s.speech)  # fmt: skip


@dataclass
class Started:
    probe: ProbeResult


@dataclass
class Chunk(FrameChunk):
    changes: np.ndarray = field(default_factory=lambda: np.zeros(0))  # colour change from the previous unit (shots)


@dataclass
class Working:
    """Progress inside a long step; `done`/`total` in the stage's own units (seconds of audio, frames)."""

    stage: str
    done: float = 0.0
    total: float = 0.0

    def describe(self) -> str:
        return f"{self.stage} ({self.done:.0f} of {self.total:.0f})" if self.total else self.stage


@dataclass
class Finished:
    spans: list = field(default_factory=list)  # TextSpan from speech and OCR, in player time
    warnings: list[str] = field(default_factory=list)
    decoder: str = ""
    audio: np.ndarray | None = None  # the whole waveform, only when the job asked for it
    sound: np.ndarray | None = None  # the sound cues (encoders/sound_cues.py), in player time, when the job asked for them


@dataclass
class Failed:
    job: DecodeJob
    error: str


@dataclass
class Prepared:
    """A whole decoded video (short clips only: training data and tests), assembled from the steps."""

    job: DecodeJob
    probe: ProbeResult
    frames: FrameChunk
    audio: np.ndarray | None
    spans: list = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def prepare_steps(job: DecodeJob, progress: Working) -> Iterator[Started | Chunk | Working | Finished | Failed]:
    """The steps of one job; `progress` is updated as a long step goes, for heartbeats."""
    path = job.path if is_url(job.path) else Path(job.path)  # a presigned URL for an object in S3
    progress.stage, progress.done, progress.total = "probing", 0.0, 0.0
    try:
        info = probe(path)
    except (MediaError, OSError) as exc:
        yield Failed(job, str(exc))
        return
    yield Started(info)
    speech = SpeechThread(job, info) if job.speech and info.has_audio else None
    if speech is not None and job.speech_beside_frames:
        speech.start()  # else `result` starts it, once the frames are done
    try:
        for step in _decoded_steps(job, info, path, speech, progress):
            if isinstance(step, Failed) and speech is not None:
                speech.stop()  # a failed file is not transcribed on; stopped inside this step, where heartbeats still go out
            yield step
    finally:
        if speech is not None:
            speech.stop()


def _decoded_steps(job: DecodeJob, info: ProbeResult, path, speech: SpeechThread | None, progress: Working) -> Iterator[Chunk | Working | Finished | Failed]:
    """prepare_steps after the probe: the frames (read for text on the way), then the text channels."""
    rate = job.frame_rate(info.duration)
    plan = plan_samples(info.duration, rate)
    report = DecodeReport()
    produced = 0
    progress.stage, progress.total = "decoding frames", float(len(plan))
    prev_hist = None
    warnings: list[str] = []
    ocr_size = job.ocr_size(info)
    # one decode for both when OCR reads at the encoder's rate or slower (every 1/ocr_fps seconds, the
    # first of the encoder's frames); a faster OCR rate decodes again, at its own rate
    shared = job.ocr and job.text_rate <= rate and ocr_size >= job.image_size
    ocr_rate = job.text_rate if shared and job.text_rate < rate else None
    last_period, glance = -1, job.glances
    reader = None
    if shared:
        progress.stage = "decoding frames and reading on-screen text"
        try:
            reader = OcrReader(engine=job.ocr_engine, threads=job.ocr_threads)
        except Exception as exc:  # noqa: BLE001 - an OCR failure keeps the visual index
            warnings.append(f"ocr: {exc}")
    try:
        for chunk in iter_frames(path, plan, info, ocr_size if shared else job.image_size, report, crop=not shared):
            frames = chunk.frames
            if reader is not None:
                try:
                    last_period, glance = read_text(reader, chunk, ocr_rate, last_period, info.duration, glance, warnings)
                except Exception as exc:  # noqa: BLE001 - an OCR failure keeps the visual index
                    warnings.append(f"ocr: {exc}")
                    reader = None
            if shared:
                frames = encoder_frames(frames, job.image_size)
            hist = colour_histograms(frames)
            changes = histogram_changes(hist, prev_hist)
            prev_hist = hist[-1:]
            produced += len(frames)
            progress.done = float(produced)
            yield Chunk(frames, chunk.unit_start, chunk.unit_end, changes)
    except (RuntimeError, OSError, MediaError) as exc:
        if not produced:
            yield Failed(job, str(exc))
            return
        warnings.append(f"decoding stopped after {produced} frames: {exc}")
    except Exception as exc:  # noqa: BLE001 - anything else is a bug, but must cost only this file
        if not produced:
            yield Failed(job, f"unexpected {type(exc).__name__}: {exc} ({traceback.format_exc(limit=2)})")
            return
        warnings.append(f"decoding stopped after {produced} frames: {type(exc).__name__}: {exc}")
    if not produced:
        yield Failed(job, "no frame could be decoded")
        return
    warnings += report.warnings(info.duration)
    audio, sound, spans = None, None, []
    if job.want_audio and info.has_audio:
        try:
            audio = read_audio(path, stream=info.audio_stream)
        except (RuntimeError, OSError) as exc:
            warnings.append(f"audio: {exc}")
    if speech is not None:
        yield Working("transcribing speech", speech.progress.done, info.duration)
        try:
            said, sound = speech.result(progress)
            spans += said
        except Exception as exc:  # noqa: BLE001 - a speech failure keeps the visual index
            warnings.append(f"speech: {exc}")
    if info.text_subtitles:  # the file's own subtitle tracks: read here, in the decoder's process
        subtitles, problems = embedded_subtitle_spans(path, info.text_subtitles, info.duration)
        spans += subtitles
        warnings += problems
    if info.closed_captions:  # a TV recording's captions, in its pictures: a whole decode, its progress reported
        progress.stage, progress.done, progress.total = "reading closed captions", 0.0, info.duration
        yield Working(progress.stage, 0.0, info.duration)

        def read_to(seconds: float) -> None:
            progress.done = seconds

        captions, problems = closed_caption_spans(path, info.stream_index, info.duration, on_progress=read_to)
        spans += captions
        warnings += problems
    if reader is not None:
        try:
            spans += reader.spans()
        except Exception as exc:  # noqa: BLE001 - an OCR failure keeps the visual index
            warnings.append(f"ocr: {exc}")
    elif job.ocr and not shared:
        try:
            for step in _ocr_steps(job, info, plan, progress, spans, warnings):
                yield step
        except Exception as exc:  # noqa: BLE001 - an OCR failure keeps the visual index
            warnings.append(f"ocr: {exc}")
    yield Finished(spans, warnings, report.decoder, audio, sound)


def ocr_picks(starts: np.ndarray, ends: np.ndarray, rate: float, last_period: int, duration: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Which of a chunk's frames OCR reads at `rate` (< the sampling rate): the first frame of every
    1/rate period not read yet (`last_period`: the last period read, from earlier chunks), each
    standing for its whole period (cut at the video's end, as decode.plan_samples cuts its spans).
    -> (indices, their periods' starts and ends, the last period)."""
    period = np.floor(np.asarray(starts, np.float64) * rate + 1e-9).astype(np.int64)
    first = period != last_period
    first[1:] &= period[1:] != period[:-1]
    pick = np.flatnonzero(first)
    start = period[pick] / rate
    end = np.minimum((period[pick] + 1) / rate, max(duration, 1e-3))
    end = np.maximum(end, np.asarray(ends, np.float64)[pick])  # a merged unit may reach further
    return pick, start, end, int(period[-1]) if period.size else last_period


def encoder_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """Whole frames (short side >= `size`) as the encoder takes them: short side scaled to `size`
    (antialiased bicubic), then the centre square. On the `tiny` model the vectors of these frames are
    within cosine 0.999 of those of frames decoded at `size` directly."""
    from PIL import Image

    h, w = frames.shape[1:3]
    out_w, out_h = scaled_size(w, h, size)
    if (out_w, out_h) != (w, h):
        frames = np.stack([np.asarray(Image.fromarray(f).resize((out_w, out_h), Image.BICUBIC)) for f in frames])
    return center_crop(frames, size)


def tapped(blocks: Iterable[np.ndarray], also: Callable[[np.ndarray], None], failed: list[Exception]) -> Iterator[np.ndarray]:
    """The blocks as they come, each also handed to `also` (one decode read two ways). If `also`
    fails, its error goes to `failed` and it is not called again: the blocks keep coming, so the
    stream's main reader (the audio tower, the speech recogniser) loses nothing to the side one."""
    for block in blocks:
        if not failed:
            try:
                also(block)
            except Exception as exc:  # noqa: BLE001 - reported by the caller
                failed.append(exc)
        yield block


class SpeechThread:
    """The soundtrack transcribed on a thread of its own while the frames are decoded and read for text.

    Why: the two are independent and each keeps one core busy (Whisper and the OCR reader run a thread
    each: see `_cpu_threads`, `decode_job`), so one after the other a video left a core idle for all of
    its transcription: on the text-channel bench's talks (2 x 90 s, 2 cores) the channels' wall time
    per minute of video fell from 4.04-4.18 s to 3.25-3.50 s (two runs), for the same CPU (6.4 / 6.5 s).
    `start` starts it, `result` waits for it (starting it if need be, and reporting its progress as the
    step's); `stop` ends it at the next block of audio (a file that failed, a cancelled job)."""

    def __init__(self, job: DecodeJob, info: ProbeResult):
        self.progress = Working("transcribing speech", 0.0, info.duration)
        self._stopping = threading.Event()
        self._audio: list = []  # the ffmpeg process streaming the soundtrack (stream_audio's on_start)
        self._out: tuple[list, np.ndarray | None] | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(job, info), name="speech", daemon=True)

    def start(self) -> None:
        if self._thread.ident is None:
            self._thread.start()

    def _run(self, job: DecodeJob, info: ProbeResult) -> None:
        try:
            self._out = _speech_spans(job, info, self.progress, self._stopping, self._audio.append)
        except _Stopped:
            pass
        except BaseException as exc:  # noqa: BLE001 - raised again in the caller's thread by `result`
            self._error = exc

    def result(self, progress: Working) -> tuple[list, np.ndarray | None]:
        """(spans, sound cue rows or None), once transcribed; `progress` follows the transcription meanwhile."""
        self.start()
        while self._thread.is_alive():
            progress.stage, progress.done, progress.total = self.progress.stage, self.progress.done, self.progress.total
            self._thread.join(0.25)
        if self._error is not None:
            raise self._error
        assert self._out is not None
        return self._out

    def stop(self) -> None:
        """Stop the transcription: at its next block of audio, or at once where it waits on ffmpeg (a
        stream that hangs: the process is killed after a second). Waits for it once, up to STOP_WAIT_S."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self._thread.ident is None:
            return
        self._thread.join(1.0)
        if self._thread.is_alive():
            for proc in self._audio:
                proc.kill()
            self._thread.join(STOP_WAIT_S)
        if self._thread.is_alive():
            log.warning("speech of a stopped job still running after %.0f s; it ends with its current chunk", STOP_WAIT_S)


class _Stopped(Exception):
    """Raised inside the audio stream of a stopped transcription, so what is buffered is not transcribed."""


STOP_WAIT_S = 30.0  # a stopped transcription first finishes the chunk of audio (<= 61 s) it is transcribing


def _speech_spans(job: DecodeJob, info: ProbeResult, progress: Working, stopping: threading.Event,
                  on_audio: Callable | None = None) -> tuple[list, np.ndarray | None]:
    """Transcribe the soundtrack as it streams from ffmpeg (hours of audio never sit in memory), and
    where the job asks, read the sound cues from the same blocks: (spans, cue rows or None). A cue
    reader that fails costs the transcript nothing (no rows: the indexer then reads them itself)."""
    cues, failed = (SoundCueReader(SAMPLE_RATE) if job.sound_cues else None), []

    def counted():
        for block in stream_audio(job.path, stream=info.audio_stream, on_start=on_audio):  # the track a player plays
            if stopping.is_set():
                raise _Stopped
            yield block
            progress.done += len(block) / SAMPLE_RATE

    options = {"batch_size": job.speech_batch, "cpu_threads": job.speech_threads} if job.speech_engine == "whisper" else {}
    blocks = counted() if cues is None else tapped(counted(), cues.feed, failed)
    spans = get_recognizer(job.speech_engine, job.speech_model, **options).transcribe(blocks).spans
    sound = None
    if cues is not None:
        deque(blocks, maxlen=0)  # the whole soundtrack read, whatever the recogniser left unread
        if not failed:
            sound = cues.rows()
            sound[:, 0] += info.audio_start
    return ([s.shifted(info.audio_start) for s in spans] if info.audio_start else spans), sound


def read_text(reader: OcrReader, chunk: FrameChunk, rate: float | None, last_period: int, duration: float, glance: bool,
              warnings: list[str]) -> tuple[int, bool]:
    """Read a chunk's on-screen text: every frame where `rate` is None, else the first frame of every
    1/rate period (`ocr_picks`) and, with `glance`, a glance at the others for text that came and went
    between two reads (`OcrReader.glance`). A failed glance is a warning and ends the glancing, not the
    reading. -> (the last period read, whether to go on glancing)."""
    if rate is None:
        reader.add(chunk.frames, chunk.unit_start, chunk.unit_end)
        return last_period, glance
    pick, start, end, last_period = ocr_picks(chunk.unit_start, chunk.unit_end, rate, last_period, duration)
    reader.add(chunk.frames[pick], start, end)
    if glance:
        try:
            reader.glance(chunk.frames, chunk.unit_start, chunk.unit_end, pick)
        except Exception as exc:  # noqa: BLE001 - the reads stand without it
            warnings.append(f"ocr: the glance between reads stopped: {exc}")
            glance = False
    return last_period, glance


def _ocr_steps(job: DecodeJob, info: ProbeResult, plan, progress: Working, spans: list, warnings: list[str] | None = None) -> Iterator[Working]:
    """On-screen text, read chunk by chunk from whole frames at `ocr_height` (a decode of its own: OCR
    reads faster than the encoder samples, or frames smaller than the encoder's); spans appended at
    the end. Slower than the encoder with the glance on, it decodes the encoder's times and glances at
    the frames between reads, as the shared decode does."""
    rate = job.frame_rate(info.duration)
    glance = job.glances and job.text_rate < rate
    if job.text_rate != rate and not glance:
        plan = plan_samples(info.duration, job.text_rate)
    progress.stage, progress.done, progress.total = "reading on-screen text", 0.0, float(len(plan))
    reader = OcrReader(engine=job.ocr_engine, threads=job.ocr_threads)
    report = DecodeReport()
    last_period, picks = -1, job.text_rate if glance else None  # (a glance that fails leaves the picks as they were)
    for chunk in iter_frames(job.path if is_url(job.path) else Path(job.path), plan, info, job.ocr_size(info), report, crop=False):
        last_period, glance = read_text(reader, chunk, picks, last_period, info.duration, glance, warnings if warnings is not None else [])
        progress.done += len(chunk.frames)
        yield Working(progress.stage, progress.done, progress.total)
    spans += reader.spans()


def prepare(job: DecodeJob) -> Prepared | Failed:
    """Run every step in this process and assemble the whole video (short clips only)."""
    progress = Working("")
    info, chunks, finished = None, [], None
    for step in prepare_steps(job, progress):
        if isinstance(step, Failed):
            return step
        if isinstance(step, Started):
            info = step.probe
        elif isinstance(step, Chunk):
            chunks.append(step)
        elif isinstance(step, Finished):
            finished = step
    assert info is not None and finished is not None
    return assemble(job, info, chunks, finished)


def assemble(job: DecodeJob, info: ProbeResult, chunks: list[Chunk], finished: Finished) -> Prepared:
    frames = FrameChunk(
        np.concatenate([c.frames for c in chunks]),
        np.concatenate([c.unit_start for c in chunks]),
        np.concatenate([c.unit_end for c in chunks]),
    )
    return Prepared(job, info, frames, finished.audio, finished.spans, finished.warnings)
