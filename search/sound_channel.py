"""The sound channel: a window's soundtrack does what the query says it does.

After the shape channel, the sound was what most often kept the described event's video from the
top on the held-out renderer (the first result had the caption's sound 80-83% of the time; among
the selection set's misses, 44 of 123 had every attribute but the sound and 25 more missed the sound
and the motion). The audio tower learned its own renderer's sounds; the signal says plainly how loud a
moment is, whether one pitch dominates and which, and whether it comes in bursts. The indexer stores
every quarter second's level, peak frequency, tonality and crest (encoders/sound_cues.py, for every
model, from the soundtrack the audio tower reads or one decoded for it), and a query that names one
sound (`named_sound`: silence, a clap or applause, or a low, middle or high tone / beep / whistle /
note / hum; quoted speech and on-screen words left out; none when it names two) adds

    SOUND_WEIGHT * agreement,  agreement in [-1, 1]

to the event window's score (event_windows.py), beside the motion and shape channels. A window reads
the mean level L (dB full scale), tonality T, crest C and the tonality-weighted mean pitch (in
octaves) of the rows whose half-second frame lies inside it (and inside the search's time window),
and

* silence agrees as L falls from -40 dB (-1) to -50 dB (+1), or where a louder bed has no pitch and
  no bursts (room tone, hiss, a fan: L under -35 dB, T under 0.15 and C under 3.5 read as +1; -25 dB,
  0.3 and 4.5 as -1; the better of the two readings: measured, white hiss crests at 1.1 and a rumbling
  room tone at 2.3-3.0 on this 10 ms envelope, claps at 4.8-8.9),
* a clap needs sound (L over SILENT_DB), bursts (C from 3 to 4.5 goes from -1 to +1: a rumbling room
  tone crests at up to 3 on the 10 ms envelope, the claps measured at 4.8 and over) and no dominant
  pitch (T from 0.45 down to 0.25 goes from -1 to +1): the least of the three,
* a tone needs sound (L over QUIET_DB), a dominant pitch (T from 0.2 to 0.4 goes from -1 to +1) and
  that pitch in the named band: low under LOW_HZ, high over HIGH_HZ, middle between (+1 inside,
  -1 outside, a third of an octave of ramp at each edge): the least of the three.

A window with fewer than MIN_ROWS rows, or a video indexed before the channel, adds 0; a video with
no soundtrack is stored as silent rows (it agrees with silence, not with a tone). The bands are
where everyday words put pitch (a hum, a note, a whistle) and where the synthetic tones sit (220,
660 and 1760 Hz, +-4% on the held-out renderer); "a high-pitched whistle" in real footage is a
whistle over 1.2 kHz too, but speech, music and noise under a named tone lower its tonality, so the
channel counts less there (0 at T = 0.3, against it below).
"""

from __future__ import annotations

import re

import numpy as np

from vidsearch.encoders.shape_swaps import unquoted_spans

__all__ = ["SOUNDS", "SOUND_WEIGHT", "agreement", "named_sound", "query_sound", "window_sound"]

SOUNDS: tuple[str, ...] = ("low", "middle", "high", "clap", "silence")
SOUND_WEIGHT = 0.3
MIN_ROWS = 2  # rows (a quarter second apart) a window needs
SILENT_DB, QUIET_DB = -50.0, -45.0
LOW_HZ, HIGH_HZ = 400.0, 1200.0
EDGE_OCTAVES = 1 / 3

_PITCH = {
    "low": ("low", "lower", "deep", "deeper", "bass", "low-pitched", "low pitched", "low-frequency", "low frequency"),
    "middle": ("middle", "mid", "mid-pitched", "mid pitched", "mid-range", "midrange", "medium", "medium-pitched", "medium pitched",
               "medium-frequency", "medium frequency", "moderate", "intermediate"),
    "high": ("high", "higher", "high-pitched", "high pitched", "high-frequency", "high frequency", "shrill", "treble", "piercing",
             "squeaky"),
}
_TONE_NOUNS = ("tone", "tones", "beep", "beeps", "beeping", "bleep", "whistle", "whistles", "whistling", "note", "notes", "hum", "hums",
               "humming", "buzz", "buzzing", "chime", "chimes", "ping", "pings", "drone", "whine", "sine wave", "sine waves", "sine tone", "sinusoid")
# "sound" names a pitch only after a word that is about pitch: "a high-pitched sound", not "high quality
# sound", "a low battery signal" or "high-frequency trading"
_PITCHED = ("low-pitched", "low pitched", "mid-pitched", "mid pitched", "medium-pitched", "medium pitched", "high-pitched", "high pitched",
            "shrill", "treble", "bass")
# plain pitch words right before "sound" ("a low sound plays", "a deep sound"), but not a sound's other
# qualities ("high sound quality", "low sound levels")
_PLAIN_PITCH = ("low", "deep", "high", "medium", "mid", "middle")
_PITCH_OF = {word: pitch for pitch, words in _PITCH.items() for word in words}
_TONE = re.compile(r"\b(?P<adj>" + "|".join(sorted(map(re.escape, _PITCH_OF), key=len, reverse=True)) + r")\b"
                   r"(?:[\s,-]+(?:and\s+|,\s*)?[a-z]+(?:-[a-z]+)?){0,1}?[\s-]+(?:" + "|".join(_TONE_NOUNS) + r")\b"
                   r"|\b(?P<pitched>" + "|".join(sorted(map(re.escape, _PITCHED + _PLAIN_PITCH), key=len, reverse=True)) + r")[\s-]+sounds?\b"
                   r"(?!-|\s+(?:quality|level|levels|volume|barrier|system|systems|check|effects?|track|engineer|design|bite|pressure|"
                   r"output|outputs|problems?|issues?|fix|on|and|card|bar|sleep)\b)"
                   r"|\b(?:" + "|".join(_TONE_NOUNS) + r"|sound|sounds)\s+of\s+(?:a\s+)?(?P<after>low|medium|middle|high)\s+(?:pitch|frequency)\b",
                   re.IGNORECASE)  # fmt: skip
_CLAP = re.compile(r"\b(?:clap|claps|clapping|clapped|applause|applauds?|applauding|hand ?claps?|noise bursts?|bursts? of noise|"
                   r"crackles?|crackling|smacks?|slaps?|slapping)\b(?! shot)", re.IGNORECASE)
_SILENCE = re.compile(r"\b(?:silence|silent|silently|soundless|no (?:sound|audio|noise|tone)s?(?: at all)?|without (?:any )?(?:sound|audio)|"
                      r"nothing (?:can be |is )?heard|(?:completely|totally|entirely|perfectly|dead) quiet|it is quiet|is hushed|"
                      r"mute(?:d)? (?:soundtrack|audio|sound)|(?:soundtrack|audio|sound) is mute(?:d)?)\b"
                      r"(?! (?:film|films|movie|movies|era|disco|auction|partner|majority|night)\b)", re.IGNORECASE)


def named_sound(text: str | None) -> str | None:
    """The one sound a query names, in SOUNDS (None when it names none, or several that differ);
    quoted words (speech, on-screen text) do not count."""
    if not text:
        return None
    found: set[str] = set()
    for a, b in unquoted_spans(text):
        part = text[a:b]
        silence = list(_SILENCE.finditer(part))
        if silence:
            found.add("silence")
            for m in reversed(silence):  # "no tone plays" is silence, not a tone
                part = part[: m.start()] + " " * (m.end() - m.start()) + part[m.end() :]
        found.update(_PITCH_OF[(m.group("adj") or m.group("pitched") or m.group("after")).lower()] for m in _TONE.finditer(part))
        if _CLAP.search(part):
            found.add("clap")
    return found.pop() if len(found) == 1 else None


query_sound = named_sound


def window_sound(rows: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Per window of rows lo..hi-1 of `rows` (N, 5: start, level_db, peak_hz, tonality, crest): (W, 5)
    = mean level, mean tonality, mean crest, the tonality-weighted mean pitch (log2 Hz) and the row
    count. Columnar: one cumulative sum, two lookups per window."""
    r = np.nan_to_num(np.asarray(rows, np.float64), nan=0.0, posinf=0.0, neginf=-120.0)  # a bad row must not spread down the cumulative sums
    tonality = np.clip(r[:, 3], 0.0, 1.0)
    cols = np.column_stack([np.ones(len(r)), r[:, 1], tonality, r[:, 4], tonality * np.log2(np.maximum(r[:, 2], 1.0))])
    acc = np.zeros((len(r) + 1, cols.shape[1]), np.float64)
    np.cumsum(cols, axis=0, out=acc[1:])
    total = acc[hi] - acc[lo]
    n = total[:, 0]
    safe = np.maximum(n, 1.0)
    pitch = total[:, 4] / np.maximum(total[:, 2], 1e-9)
    return np.column_stack([total[:, 1] / safe, total[:, 2] / safe, total[:, 3] / safe, pitch, n])


def _ramp(x: np.ndarray, at_minus_one: float, at_plus_one: float) -> np.ndarray:
    return np.clip(-1.0 + 2.0 * (x - at_minus_one) / (at_plus_one - at_minus_one), -1.0, 1.0)


def agreement(windows: np.ndarray, sound: str) -> np.ndarray:
    """How well each window's reading (`window_sound`) matches `sound`, in [-1, 1]; 0 where the
    window holds fewer than MIN_ROWS rows."""
    level, tonality, crest, pitch, n = np.asarray(windows, np.float64).T
    if sound == "silence":  # quiet, or a steady bed with nothing in it (room tone, hiss)
        bed = np.minimum(np.minimum(_ramp(level, -25.0, -35.0), _ramp(tonality, 0.3, 0.15)), _ramp(crest, 4.5, 3.5))
        out = np.maximum(_ramp(level, -40.0, SILENT_DB), bed)
    elif sound == "clap":
        out = np.minimum(np.minimum(_ramp(crest, 3.0, 4.5), _ramp(tonality, 0.45, 0.25)), np.where(level > SILENT_DB, 1.0, -1.0))
    else:
        lo = {"low": -np.inf, "middle": np.log2(LOW_HZ), "high": np.log2(HIGH_HZ)}[sound]
        hi = {"low": np.log2(LOW_HZ), "middle": np.log2(HIGH_HZ), "high": np.inf}[sound]
        outside = np.maximum(lo - pitch, pitch - hi)  # octaves outside the band (negative: inside)
        band = np.clip(-outside / (EDGE_OCTAVES / 2), -1.0, 1.0)
        out = np.minimum(np.minimum(_ramp(tonality, 0.2, 0.4), band), np.where(level > QUIET_DB, 1.0, -1.0))
    return np.where(n >= MIN_ROWS, out, 0.0)
