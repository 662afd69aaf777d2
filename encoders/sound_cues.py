"""What the soundtrack does every quarter second, read from the samples: the sound channel's evidence.

The model's audio tower learned its renderer's sounds: on the held-out renderer (other timbres, a
vibrato, clap pairs with a reverberant tail, a room-noise bed) the first result had the caption's
sound 77-83% of the time, and it was half of what still kept the right video from the top. Yet the
sounds a query names are plain in the signal whatever made them: how loud it is, whether one pitch
dominates and which, whether it comes in sharp bursts.

Every HOP seconds a WINDOW-second frame of the soundtrack (mono, any sample rate) gives one row:

* its start (s),
* its level: mean power in dB relative to full scale (silence and a room's hiss sit near -60),
* its peak frequency (Hz): the strongest bin of its Hann-windowed spectrum between 60 Hz and 7 kHz,
* its tonality: the share of that band's power within 3% of the peak (a steady tone 0.45-0.75, a
  clap or noise under 0.2),
* its crest: the loudest 10 ms of the frame against the frame's mean (sustained sound ~1-2, a clap
  4-8).

Measured on the held-out selection set's events (each event's median over its frames, 5th-95th
percentiles): tones of 220 / 660 / 1760 Hz peak at 212-226 / 638-682 / 1685-1808 Hz with tonality
0.45-0.74 and crest 1.0-2.0; clap pairs crest 4.3-8.2, tonality 0.01-0.16; silence (the room bed)
-62 dB. search/sound_channel.py turns a window's rows into agreement with the sound a query names.

Streamed: `SoundCueReader` takes the soundtrack in blocks as they are decoded (the audio tower's own
stream where there is one), keeps only the part of a frame that spans two blocks, and reads each
block's frames at once (a strided view, one FFT per block), so memory does not grow with a video's
length.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = ["HOP", "NO_SOUND_DB", "SOUND_COLUMNS", "WINDOW", "SoundCueReader", "silent_rows", "sound_cues"]

WINDOW = 0.5  # seconds a row reads
HOP = 0.25  # seconds between rows
SOUND_COLUMNS = 5  # start, level_db, peak_hz, tonality, crest
BAND = (60.0, 7000.0)  # Hz the peak is looked for in
NEAR = 0.03  # the peak's own share: power within this fraction of its frequency
ENVELOPE = 0.01  # seconds per envelope step of the crest
BATCH = 32  # frames read at once (bounds the FFT's working memory whatever the sample rate)
NO_SOUND_DB = -120.0  # the level of digital silence (and of a video with no soundtrack)


class SoundCueReader:
    """Feed a soundtrack's blocks in order (`feed`), then `rows()`: (N, SOUND_COLUMNS) float32."""

    def __init__(self, sample_rate: int):
        self.rate = int(sample_rate)
        self.size = int(round(WINDOW * self.rate))
        self.hop = int(round(HOP * self.rate))
        self._tail = np.zeros(0, np.float32)
        self._consumed = 0  # samples before the tail's first one
        self._rows: list[np.ndarray] = []
        freqs = np.fft.rfftfreq(self.size, 1.0 / self.rate)
        self._band = (freqs >= BAND[0]) & (freqs <= min(BAND[1], self.rate / 2))
        self._freqs = freqs[self._band]
        self._taper = np.hanning(self.size).astype(np.float32)
        self._step = max(1, int(round(ENVELOPE * self.rate)))

    def feed(self, block: np.ndarray) -> None:
        """One more block of mono samples in [-1, 1] (NaN and infinities, which a broken decode can
        hand over, read as 0 and full scale: one bad sample must not make a window unreadable)."""
        block = np.clip(np.nan_to_num(np.asarray(block, np.float32).ravel(), nan=0.0, posinf=1.0, neginf=-1.0), -1.0, 1.0)
        x = np.concatenate([self._tail, block])
        if len(x) < self.size:
            self._tail = x
            return
        frames = sliding_window_view(x, self.size)[:: self.hop]
        for i in range(0, len(frames), BATCH):  # a few frames at a time: a 30 s block at 48 kHz is 120 frames of 24,000
            self._rows.append(self._read(frames[i : i + BATCH], self._consumed + i * self.hop))
        used = len(frames) * self.hop
        self._tail, self._consumed = x[used:], self._consumed + used

    def rows(self) -> np.ndarray:
        """The rows read so far; a soundtrack shorter than one frame gives one row of what there is."""
        if not self._rows and len(self._tail) > self._step:
            padded = np.zeros(self.size, np.float32)
            padded[: len(self._tail)] = self._tail
            self._rows.append(self._read(padded[None, :], self._consumed))
            self._tail = np.zeros(0, np.float32)
        return np.concatenate(self._rows) if self._rows else np.zeros((0, SOUND_COLUMNS), np.float32)

    def _read(self, frames: np.ndarray, offset: int) -> np.ndarray:
        n = len(frames)
        power = np.abs(np.fft.rfft(frames * self._taper, axis=1)) ** 2  # float32 in, complex64 out (numpy >= 2)
        band = power[:, self._band]
        total = band.sum(axis=1) + 1e-20
        peak = self._freqs[np.argmax(band, axis=1)] if band.shape[1] else np.zeros(n)
        near = np.abs(self._freqs[None, :] - peak[:, None]) <= NEAR * peak[:, None]
        tonality = (band * near).sum(axis=1) / total
        steps = self.size // self._step
        envelope = np.abs(frames[:, : steps * self._step]).reshape(n, steps, self._step).mean(axis=2)
        crest = envelope.max(axis=1) / np.maximum(envelope.mean(axis=1), 1e-9)
        level = np.maximum(10.0 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12), NO_SOUND_DB)
        start = (offset + np.arange(n) * self.hop) / self.rate
        return np.column_stack([start, level, peak, tonality, crest]).astype(np.float32)


def silent_rows(duration: float | None) -> np.ndarray:
    """The rows of a video with no soundtrack: silence from start to end (it has no tone and no clap,
    and a query for silence should find it)."""
    n = int(max(float(duration or 0.0) - WINDOW, 0.0) // HOP) + 1 if duration and duration > 0 else 0
    rows = np.zeros((n, SOUND_COLUMNS), np.float32)
    rows[:, 0] = np.arange(n) * HOP
    rows[:, 1] = NO_SOUND_DB
    return rows


def sound_cues(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """A whole soundtrack's rows at once (tests, short clips)."""
    reader = SoundCueReader(sample_rate)
    reader.feed(samples)
    return reader.rows()
