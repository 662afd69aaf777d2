"""Decode only the frames we sample, in chunks, as people see them and timed as a player shows them.

This module runs inside the decoder processes, so it never imports torch: a worker stays small, and a
decoder that crashes on a hostile file takes only its own process down.

- **Chunks.** Frames come out `CHUNK_UNITS` at a time, so an hours-long video never sits in memory:
  the indexer encodes each chunk and keeps only its vectors.
- **decord first, PyAV where it cannot.** decord seeks and scales inside ffmpeg (3-5x faster than
  decoding every frame) in containers with an index (MP4/MOV, Matroska/WebM, AVI, ASF, FLV); PyAV
  decodes sequentially, packet by packet, and takes the rest (transport/program streams, GIF, Ogg) and
  what decord cannot read (AV1, some VP9, truncated files, damaged packets).
- **Damage costs its stretch.** ffmpeg conceals decode errors (a broken stretch comes out as smeared
  frames) and says so only in its log. decord's log is captured per chunk; a chunk whose decode logged
  errors is decoded again with PyAV, which skips packets that fail and frames that depend on them until
  the next keyframe. Those times are reported as lost (a warning on the file), and no unit stands for them.
- **Player time and display size.** Times are seconds from what a player shows as 0 (`ProbeResult`);
  frames are turned upright by the stream's rotation (decord applies it itself, PyAV does not) and
  scaled to the display aspect (non-square pixels: both decoders scale to the size asked, which
  `scaled_size` takes from the probe's displayed width and height).
- **The probed stream.** Both decoders read the video stream the probe describes; decord cannot be
  told which, so a file with more than one video stream is decoded by PyAV.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .probe import ProbeResult, failure_line, is_url

AUDIO_RATE = 16000
# decord reads files up to this size: its reader indexes the whole file when it opens, and it is opened
# for every chunk (_iter_decord); PyAV, which reads a file once in order at the same CPU cost on
# long-GOP video (measured: 1080p, 10 s GOP), takes larger files
DECORD_MAX_BYTES = 256 << 20
CHUNK_UNITS = 64  # frames per chunk; a multiple of token merging's largest group (4)
DECORD_FORMATS = {"mov", "mp4", "matroska", "webm", "avi", "asf", "flv"}  # ffprobe format names
# Codecs (screen capture, QuickTime Animation, RLE) whose frames after the first key frame only repaint
# what changed, often with a single key frame per file: decord seeks straight to a frame and returns
# whatever picture its decoder last held (a QuickTime Animation clip, red then blue, read all blue).
DELTA_CODECS = {"qtrle", "msrle", "rpza", "smc", "msvideo1", "cinepak", "aasc", "tscc", "tscc2", "zmbv", "flashsv", "flashsv2",
                "g2m", "mss1", "mss2", "mts2", "fic", "qpeg", "vmnc", "cscd", "screenpresso"}  # fmt: skip
_FFMPEG_LOG_LINE = re.compile(rb"^\[[\w:.-]+ @ 0x[0-9a-f]+\] (?!.*(?:deprecated|Stream #))", re.MULTILINE)


@dataclass
class SamplePlan:
    """Which instants to sample and the span each sampled unit stands for (player time)."""

    times: np.ndarray  # (K,) seconds, sample instants
    span_start: np.ndarray  # (K,)
    span_end: np.ndarray  # (K,)

    def __len__(self) -> int:
        return len(self.times)

    def slice(self, a: int, b: int) -> SamplePlan:
        return SamplePlan(self.times[a:b], self.span_start[a:b], self.span_end[a:b])


def plan_samples(duration: float, fps: float) -> SamplePlan:
    """One sample in the middle of every 1/fps interval; at least one, even for a 1-frame video."""
    n = max(1, int(np.ceil(duration * fps - 1e-6)))
    k = np.arange(n, dtype=np.float64)
    start = k / fps
    end = np.minimum((k + 1) / fps, max(duration, 1e-3))
    times = np.minimum((start + end) / 2, max(duration - 1e-3, 0.0))
    return SamplePlan(times=times, span_start=start, span_end=end)


def scaled_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """Output size with the short side at `short_side`, aspect kept (never smaller than short_side).
    Given the displayed size (ProbeResult.width/height), it is also what makes non-square pixels square."""
    if width <= height:
        w, h = short_side, int(round(height * short_side / width))
    else:
        w, h = int(round(width * short_side / height)), short_side
    return max(w, short_side), max(h, short_side)


def center_crop(frames: np.ndarray, size: int) -> np.ndarray:
    h, w = frames.shape[1:3]
    top, left = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(frames[:, top : top + size, left : left + size])


def frames_for_times(frame_starts: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Index of the frame shown at each time (the last frame that started at or before it)."""
    idx = np.searchsorted(frame_starts, times, side="right") - 1
    return np.clip(idx, 0, len(frame_starts) - 1)


def _merge_repeats(idx: np.ndarray, plan: SamplePlan) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Samples that land on the same frame become one unit spanning all of them."""
    uniq, first = np.unique(idx, return_index=True)
    starts = np.minimum.reduceat(plan.span_start, first)
    ends = np.maximum.reduceat(plan.span_end, first)
    return uniq, starts, ends


def merge_ranges(ranges: list[tuple[float, float]], gap: float = 0.5) -> list[tuple[float, float]]:
    """Union of time ranges, joining those closer than `gap` seconds."""
    out: list[tuple[float, float]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1] + gap:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


@dataclass
class FrameChunk:
    frames: np.ndarray  # (n, H, W, 3) uint8
    unit_start: np.ndarray  # (n,) player seconds
    unit_end: np.ndarray  # (n,)


@dataclass
class DecodeReport:
    """What decoding found, filled in as chunks are produced."""

    decoder: str = ""
    lost: list[tuple[float, float]] = field(default_factory=list)  # player-time ranges not decoded
    decoded_until: float | None = None  # end of the last decodable frame, when the file ends early

    def warnings(self, duration: float) -> list[str]:
        out = []
        if self.decoded_until is not None:
            out.append(f"only the first {self.decoded_until:.1f} s of {duration:.1f} s could be decoded (file truncated?); indexed that part")
        lost = [r for r in merge_ranges(self.lost) if self.decoded_until is None or r[0] < self.decoded_until]
        if lost:
            spans = ", ".join(f"{a:.1f}-{b:.1f} s" for a, b in lost[:5]) + (" ..." if len(lost) > 5 else "")
            out.append(f"frames at {spans} could not be decoded (corrupt data); indexed the rest")
        return out


class _StderrCapture:
    """ffmpeg's log lines (fd 2) during a decode, so concealed decode errors become visible."""

    def __init__(self):
        self.file = tempfile.TemporaryFile()
        self.saved = os.dup(2)
        os.dup2(self.file.fileno(), 2)
        self.pos = 0

    def new_errors(self) -> bool:
        self.file.seek(self.pos)
        data = self.file.read()
        self.pos += len(data)
        return bool(_FFMPEG_LOG_LINE.search(data))

    def close(self) -> None:
        os.dup2(self.saved, 2)
        os.close(self.saved)
        self.file.close()


class _PyAVReader:
    """Sequential, packet-by-packet decoding that skips what fails.

    A packet that fails to decode, a frame the decoder marks corrupt, and every frame after either until
    the next keyframe (they are predicted from the damaged picture) are not used; their times go to
    `lost`. Samples are given the last clean frame at or before their time.
    """

    def __init__(self, path: Path, info: ProbeResult, out_w: int, out_h: int):
        import av

        av.logging.set_level(av.logging.PANIC)  # errors are handled per packet, not printed
        self.av = av
        self.container = av.open(str(path))
        by_index = [s for s in self.container.streams.video if s.index == info.stream_index]
        self.stream = by_index[0] if by_index else self.container.streams.video[0]  # the stream probe describes
        self.stream.thread_type = "AUTO"
        start = self.container.start_time
        self.origin = start / 1e6 if start is not None else 0.0  # player time 0, in stream seconds
        self.info = info
        self.k = info.rotation // 90
        self.out_w, self.out_h = (out_h, out_w) if self.k % 2 else (out_w, out_h)  # decoded before rotation
        self.frames = self._frames()
        self.pending: tuple[float, object] | None = None  # next decoded (time, frame) not yet used
        self.current: tuple[float, np.ndarray] | None = None  # last clean frame at or before the cursor
        self.lost: list[tuple[float, float]] = []
        self._damage: list[float] = []  # starts of damage not yet behind the current clean frame
        self.ended_at: float | None = None  # player time just past the last decoded frame, at EOF
        self.frame_step = 1.0 / info.fps if info.fps else 0.04

    def _frames(self) -> Iterator[tuple[float, object]]:
        tainted = False
        packets = self.container.demux(self.stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except self.av.error.FFmpegError:  # damaged container data: skip on if the demuxer can
                tainted = True
                continue
            t = self._time(packet.pts, packet.time_base)
            if packet.size == 0 and packet.pts is not None:
                continue  # an empty packet repeats the previous picture (Theora, VFR Matroska); only the last one flushes
            try:
                decoded = packet.decode()
            except self.av.error.FFmpegError:
                tainted = True
                if t is not None:
                    self._lose(t)
                continue
            for frame in decoded:
                ft = self._time(frame.pts, frame.time_base)
                if ft is None:
                    continue
                if frame.key_frame and not frame.is_corrupt:
                    tainted = False
                if tainted or frame.is_corrupt:
                    tainted = True
                    self._lose(ft)
                    continue
                yield ft, frame

    def _lose(self, t: float) -> None:
        self.lost.append((t, t + self.frame_step))
        self._damage.append(t)

    def _damaged_between(self, after: float, upto: float) -> bool:
        """Whether a damaged frame or packet lies in (after, upto]; damage from before `after` is forgotten."""
        self._damage = [a for a in self._damage if a > after + 1e-9]
        return any(a <= upto + 1e-9 for a in self._damage)

    def _time(self, pts, time_base) -> float | None:
        if pts is None or time_base is None:
            return None
        return float(pts * time_base) - self.origin

    def _to_array(self, frame) -> np.ndarray:
        arr = frame.to_ndarray(width=self.out_w, height=self.out_h, format="rgb24")
        return np.rot90(arr, self.k) if self.k else arr

    def read(self, times: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        """Frames shown at `times` (ascending), and for each time the index of its frame (-1: none)."""
        out: list[np.ndarray] = []
        owner = np.full(len(times), -1, dtype=np.int64)
        current_idx = -1
        for j, t in enumerate(times):
            while True:
                if self.pending is None:
                    nxt = next(self.frames, None)
                    if nxt is None:
                        break
                    self.pending = nxt
                if self.pending[0] > t + 1e-6:
                    break
                ft, frame = self.pending
                self.pending = None
                self.current = (ft, frame)
                current_idx = -1
            if self.pending is None and self.current is not None and self.ended_at is None:
                # at EOF: remember where the decodable video stopped
                peek = next(self.frames, None)
                if peek is None:
                    self.ended_at = self.current[0] + self.frame_step
                else:
                    self.pending = peek
            if self.current is None or (self.ended_at is not None and t > self.ended_at + 0.5):
                continue
            if self._damaged_between(self.current[0], t):
                continue  # the picture shown at t is damaged: the last clean frame is from before the damage
            if current_idx < 0:
                out.append(self._to_array(self.current[1]))
                current_idx = len(out) - 1
            owner[j] = current_idx
        return out, owner

    def close(self) -> None:
        self.container.close()


def _chunk_from(frames: list[np.ndarray], owner: np.ndarray, plan: SamplePlan, size: int, crop: bool) -> FrameChunk | None:
    keep = owner >= 0
    if not keep.any():
        return None
    sub = SamplePlan(plan.times[keep], plan.span_start[keep], plan.span_end[keep])
    idx, starts, ends = _merge_repeats(owner[keep], sub)
    arr = np.stack([frames[i] for i in idx])
    return FrameChunk(center_crop(arr, size) if crop else arr, starts, ends)


def _iter_pyav(path: Path, plan: SamplePlan, info: ProbeResult, size: int, crop: bool, report: DecodeReport) -> Iterator[FrameChunk]:
    w, h = scaled_size(info.width, info.height, size)
    reader = _PyAVReader(path, info, w, h)
    try:
        for a in range(0, len(plan), CHUNK_UNITS):
            part = plan.slice(a, a + CHUNK_UNITS)
            frames, owner = reader.read(part.times)
            chunk = _chunk_from(frames, owner, part, size, crop)
            if chunk is not None:
                yield chunk
        report.lost += reader.lost
        video_end = info.video_start + (info.n_frames / info.fps if info.n_frames and info.fps else info.duration - info.video_start)
        if reader.current is None:
            raise RuntimeError("PyAV decoded no frames")
        if reader.ended_at is not None and reader.ended_at < min(info.duration, video_end) - max(1.0, 3 * reader.frame_step):
            report.decoded_until = reader.ended_at
    finally:
        reader.close()


def _redecode_chunk(path: Path, part: SamplePlan, info: ProbeResult, size: int, crop: bool, report: DecodeReport) -> FrameChunk | None:
    """One chunk again with PyAV, from the keyframe before it, to find what is damaged."""
    w, h = scaled_size(info.width, info.height, size)
    reader = _PyAVReader(path, info, w, h)
    try:
        target = part.times[0] + reader.origin
        stream = reader.stream
        if stream.time_base is not None and target > 0:
            reader.container.seek(int(target / stream.time_base), stream=stream, backward=True, any_frame=False)
            reader.frames = reader._frames()
        frames, owner = reader.read(part.times)
        report.lost += [r for r in reader.lost if r[1] > part.span_start[0] and r[0] < part.span_end[-1]]
        return _chunk_from(frames, owner, part, size, crop)
    finally:
        reader.close()


def _iter_decord(path: Path, plan: SamplePlan, info: ProbeResult, size: int, crop: bool, report: DecodeReport) -> Iterator[FrameChunk]:
    import decord

    w, h = scaled_size(info.width, info.height, size)  # decord applies the rotation; sizes are displayed
    capture = _StderrCapture()

    def reader():
        return decord.VideoReader(str(path), ctx=decord.cpu(0), width=w, height=h, num_threads=1)

    try:
        vr = reader()
        n = len(vr)
        if n == 0:
            raise RuntimeError("decord found no frames")
        raw = vr.get_frame_timestamp(np.arange(n))[:, 0]
        if not np.all(np.isfinite(raw)) or raw.min() < -1e-3 or np.any(np.diff(raw) < -1e-3):
            # an MP4 edit list (a `-ss X -c copy` trim: decord lists the hidden pre-roll at negative
            # times and its frame numbers no longer match what it returns), or negative/unset timestamps
            # (Matroska written with `-avoid_negative_ts disabled`): PyAV decodes such files as a player does
            raise RuntimeError("decord's frame timestamps are not player times (edit list or negative timestamps)")
        frame_starts = raw + info.video_start  # decord counts from the stream start
        # a file cut short whose container still says its whole length (a Matroska download stopped
        # part way: decord indexes the frames that are there): what is past its last frame is not
        # stretched over by that frame; it is reported, as the PyAV path reports it
        step = float(np.median(np.diff(frame_starts))) if n > 1 else (1.0 / info.fps if info.fps else 0.04)
        ended_at = float(frame_starts[-1]) + step
        video_end = info.video_start + (info.n_frames / info.fps if info.n_frames and info.fps else info.duration - info.video_start)
        if ended_at < min(info.duration, video_end) - max(1.0, 3 * step):
            report.decoded_until = ended_at
            plan = plan.slice(0, max(1, int(np.searchsorted(plan.times, ended_at, side="left"))))
        idx_all = frames_for_times(frame_starts, plan.times)
        capture.new_errors()
        for a in range(0, len(plan), CHUNK_UNITS):
            part = plan.slice(a, a + CHUNK_UNITS)
            idx, starts, ends = _merge_repeats(idx_all[a : a + CHUNK_UNITS], part)
            if vr is None:
                vr = reader()
            frames = vr.get_batch(idx.tolist()).asnumpy()
            # closed while the chunk is used: a reader left open goes on decoding into memory while its
            # consumer works (OCR, the indexer's encoder): 2.6 GB after four minutes of a 480x360 video
            # read 64 frames at a time with two seconds between chunks, against 0.2 GB closed. Opening
            # one reads the whole file for its index, hence DECORD_MAX_BYTES (_decoders).
            vr = None
            if capture.new_errors():  # concealed damage: find out what is lost with PyAV
                chunk = _redecode_chunk(path, part, info, size, crop, report)
                if chunk is not None:
                    yield chunk
                continue
            yield FrameChunk(center_crop(frames, size) if crop else frames, starts, ends)
    finally:
        capture.close()


def _decoders(info: ProbeResult, size_bytes: int | None = None) -> tuple:
    """decord for containers with an index it seeks in reliably; PyAV, reading in order, for the rest
    (in MPEG transport and program streams decord's frame numbers drift: a cut at 2.0 s came out at 1.0 s),
    for codecs whose frames are drawn over the previous one (decord's seeks skip what they build on), for
    files with more than one video stream (decord reads the one it thinks best, by bitrate: a dashcam's
    second camera, while the probe describes and PyAV reads the default one), and for files past
    DECORD_MAX_BYTES (or of unknown size: a URL)."""
    small = size_bytes is not None and size_bytes <= DECORD_MAX_BYTES
    one_stream = info.video_streams <= 1
    if small and one_stream and set(info.format_name.split(",")) & DECORD_FORMATS and info.video_codec not in DELTA_CODECS:
        return (("decord", _iter_decord), ("pyav", _iter_pyav))
    return (("pyav", _iter_pyav),)


def iter_frames(path: Path, plan: SamplePlan, info: ProbeResult, size: int, report: DecodeReport, crop: bool = True) -> Iterator[FrameChunk]:
    """Chunks of frames (short side `size`; centre-cropped square for the encoder, whole for OCR)."""
    errors = []
    try:
        size_bytes = None if is_url(path) else os.path.getsize(path)
    except OSError:
        size_bytes = None
    for name, decoder in _decoders(info, size_bytes):
        produced = False
        try:
            for chunk in decoder(path, plan, info, size, crop, report):
                produced = True
                yield chunk
            report.decoder = report.decoder or name
            return
        except Exception as exc:  # noqa: BLE001 - each decoder fails in its own words
            if produced:  # part of the file came out: PyAV takes over for the rest
                done = float(chunk.unit_end[-1])
                rest = np.searchsorted(plan.span_start, done - 1e-6)
                if name == "decord" and rest < len(plan):
                    report.decoder = "decord+pyav"
                    yield from _iter_pyav(path, plan.slice(rest, len(plan)), info, size, crop, report)
                    return
                raise
            errors.append(f"{name}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__}")
            report.decoded_until = None  # what this decoder found is the next one's to say
    raise RuntimeError("could not decode frames (" + "; ".join(errors) + ")")


def decode_frames(path: Path, plan: SamplePlan, info: ProbeResult, size: int, crop: bool = True) -> tuple[FrameChunk, DecodeReport]:
    """All sampled frames at once (short clips: training data, tests)."""
    report = DecodeReport()
    chunks = list(iter_frames(path, plan, info, size, report, crop))
    return FrameChunk(
        np.concatenate([c.frames for c in chunks]),
        np.concatenate([c.unit_start for c in chunks]),
        np.concatenate([c.unit_end for c in chunks]),
    ), report


def ffmpeg_audio_cmd(path: Path, rate: int = AUDIO_RATE, stream: int = 0) -> list[str]:
    """ffmpeg reading audio stream `stream` (counted among audio streams, ProbeResult.audio_stream) as
    float32 mono at `rate` Hz on stdout."""
    return ["ffmpeg", "-nostdin", "-v", "error", "-i", str(Path(path).absolute()), "-map", f"0:a:{stream}", "-vn",
            "-ac", "1", "-ar", str(rate), "-f", "f32le", "pipe:1"]  # fmt: skip


def read_audio(path: Path, rate: int = AUDIO_RATE, stream: int = 0) -> np.ndarray:
    """Audio stream `stream` (ProbeResult.audio_stream: the one a player plays) as float32 mono at `rate`
    Hz, whole (short clips; long ones are streamed)."""
    proc = subprocess.run(ffmpeg_audio_cmd(path, rate, stream), capture_output=True, timeout=3600, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(f"audio could not be decoded: {failure_line(proc)}")
    return np.frombuffer(proc.stdout, dtype=np.float32).copy()
