"""Calibrated relevance: the probability that a result is what the query describes.

Rank fusion gives a score that only says the rank (1/(k+1), 1/(k+2), ... for every query), so it
cannot tell a match from a miss, and a query for something the library does not hold would return
ten confident-looking results. The per-channel evidence does separate the two (the X-Pool score of
a match is far above the pool's typical score; for an absent thing nothing stands out), so a small
model maps that evidence to a probability. Two routes lead to relevance, and either suffices:

    p_all   = sigmoid(w · standardise(features) + b)            what is seen and heard, and the rank
    p_words = sigmoid(v · standardise(text features) + c)       the words said or shown alone
    p       = 1 - (1 - p_all) (1 - p_words)                     relevant if either route says so

fitted jointly by maximum likelihood on labelled queries (positives and several kinds of negatives,
see `vidsearch calibrate`, which leaves the text features out of the first route so that each route
reads its own evidence; the file format allows both). The second route is there because a single linear model adds evidence:
a perfect on-screen or spoken match in a video the visual tower cannot read (a real recording, not
the synthetic renderer the calibration saw) would be pulled to ~0 by "nothing stands out visually",
and hidden. It is cheap (two matrix products per search, columnar over the candidates) and, fitted
by maximum likelihood, calibrated on the data it was fitted on; its reliability on held-out queries
is measured by `vidsearch calibrate` (binned expected calibration error) and printed in the README.
A file without the words route (`words_coef` null) reads as the single linear model.

A linear model is only evidence where the fit saw data: evidence outside the range the fitting rows
covered (`lo`..`hi`, the 0.5th and 99.5th percentiles of each feature) is read at the nearest edge of
that range instead of extrapolated. Without this, a channel the fit (almost) never saw match (say,
speech on an index fitted with speech off, where a small negative weight was learned on noise) turns
a strong match into a probability of 0 and hides it.

A calibration belongs to one model (its fingerprint id: the X-Pool score of another model means
something else) and to the timed text channels of the index it was fitted on (recorded in
`fitted_on.text_channels`), and lives in a small JSON file: beside the shipped checkpoint
(`encoders/weights/<name>.calibration.json`, speech and OCR on; `<name>.visual.calibration.json`,
off; `find_calibration` picks by the index's channels), or `<db>/calibration.json` for a model a user
calibrated on their own labels, or wherever `--calibration` points. A file for another fingerprint
is ignored with a warning that says how to fit one; without a calibration results carry no
relevance and nothing is dropped.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

from vidsearch.api_models import TEXT_CHANNELS

from .text_channels import MIN_COSINE

if TYPE_CHECKING:  # only for annotations: ranking.py imports this module
    from .ranking import Candidate

__all__ = [
    "CALIBRATION_FORMAT",
    "Calibration",
    "CalibrationError",
    "FEATURES",
    "WORD_FEATURES",
    "evidence",
    "find_calibration",
    "with_relevance",
]

log = logging.getLogger(__name__)

CALIBRATION_FORMAT = "vidsearch-calibration/1"
DB_FILE = "calibration.json"  # a user's own calibration, beside the index it was fitted on

# What the probability is read from, per candidate (columns of `evidence`):
#   visual         the final visual score (X-Pool / TEFAL fused cosine; 0 when the query names no visual channel)
#   visual_margin  visual minus the median visual score of this query's candidates: a match stands out
#                  from the pool, while for an absent thing every video scores alike
#   visual_z       that margin in units of the pool's spread (median absolute deviation): queries differ in spread
#   frame_max      the best single unit's cosine to the query (what the relevance curve peaks at)
#   audio          the TEFAL head's audio part (0 without an audio head)
#   text_best      the best sentence-vector cosine among the text channels that matched (0: none)
#   text_hits      how many text channels matched: speech, ocr, subtitle, and metadata by meaning (cosine >= 0.35)
#   inv_rank       1 / the candidate's rank in the fused order: the ranking's own opinion
FEATURES: tuple[str, ...] = ("visual", "visual_margin", "visual_z", "frame_max", "audio", "text_best", "text_hits", "inv_rank")
WORD_FEATURES: tuple[str, ...] = ("text_best", "text_hits")  # what the words route reads
TIMED_TEXT = tuple(c for c in TEXT_CHANNELS if c != "metadata")


class CalibrationError(ValueError):
    """A calibration file that cannot be used (unreadable, another format, features we do not compute)."""


def evidence(candidates: Sequence[Candidate]) -> np.ndarray:
    """The (N, len(FEATURES)) evidence matrix of one query's candidates, in their order."""
    n = len(candidates)
    x = np.zeros((n, len(FEATURES)))
    if n == 0:
        return x
    scores = [c.channel_scores for c in candidates]
    visual = np.array([s.get("visual", np.nan) for s in scores], dtype=np.float64)
    has_visual = np.isfinite(visual)
    if has_visual.any():
        v = visual[has_visual]
        median = np.median(v)
        spread = max(float(np.median(np.abs(v - median))), 1e-3)
        x[:, 0] = np.where(has_visual, visual, 0.0)
        x[:, 1] = np.where(has_visual, visual - median, 0.0)
        x[:, 2] = np.where(has_visual, (visual - median) / spread, 0.0)
    x[:, 3] = [float(c.relevance.max()) if c.relevance.size else 0.0 for c in candidates]
    x[:, 4] = [s.get("audio", 0.0) for s in scores]
    text = np.array([[s.get(c, np.nan) for c in TEXT_CHANNELS] for s in scores], dtype=np.float64)
    x[:, 5] = np.where(np.isfinite(text), text, 0.0).max(axis=1)
    timed = [TEXT_CHANNELS.index(c) for c in TIMED_TEXT]
    meta = TEXT_CHANNELS.index("metadata")
    # a metadata match by meaning (a title, a description, a chapter the file or a manifest names: human
    # words about the video) counts as a text channel agreeing; a word shared with a file name does not.
    # The calibration corpus never matched its file names (`synth_00003`), so its fitted figures stand,
    # and an exact title or chapter is no longer read as "no text evidence" (relevance ~0: media verify N1)
    named = np.nan_to_num(text[:, meta], nan=0.0) >= MIN_COSINE
    x[:, 6] = np.isfinite(text[:, timed]).sum(axis=1) + named
    x[:, 7] = 1.0 / np.arange(1, n + 1)
    return np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)


@dataclass(frozen=True)
class Calibration:
    """A fitted map from channel evidence to the probability that a result is relevant."""

    fingerprint: str  # the model's fingerprint id: whose scores these are
    model: str  # the model, as people read it (Fingerprint.describe)
    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    threshold: float  # the default min_relevance (chosen on the fitting data, see `vidsearch calibrate`)
    fitted_on: dict = field(default_factory=dict)  # what it was fitted on and how well it did
    lo: tuple[float, ...] | None = None  # per feature, the range the fitting evidence covered: evidence
    hi: tuple[float, ...] | None = None  # is read within it, never extrapolated (None: a file without it)
    words_coef: tuple[float, ...] | None = None  # the words route, over WORD_FEATURES (None: no such route)
    words_intercept: float = 0.0
    # the words route read from another calibration of this model (find_calibration: where this one's
    # fit saw no text, so its own words route reads nothing); not saved with this one
    words_from: Calibration | None = field(default=None, compare=False, repr=False)

    def probability(self, x: np.ndarray) -> np.ndarray:
        """P(relevant) for each row of an `evidence` matrix (each feature held to the fitted range)."""
        raw = np.asarray(x, dtype=np.float64).reshape(-1, len(self.features))
        z = self._standardised(raw)
        miss = 1.0 - _sigmoid(z @ np.asarray(self.coef) + self.intercept)
        # its own words route as fitted (jointly with the first: it may carry part of the base rate), and
        # the one borrowed to read words where its own fit saw none (find_calibration)
        for words in (self, self.words_from):
            if words is not None and words.words_coef is not None:
                miss = miss * (1.0 - _sigmoid(words._standardised(raw)[:, [words.features.index(f) for f in WORD_FEATURES]]
                                              @ np.asarray(words.words_coef) + words.words_intercept))  # fmt: skip
        return 1.0 - miss

    def _standardised(self, x: np.ndarray) -> np.ndarray:
        """Evidence held to the fitted range and standardised as the fit was."""
        if self.lo is not None and self.hi is not None:
            x = np.clip(x, self.lo, self.hi)
        return (x - np.asarray(self.mean)) / np.asarray(self.scale)

    @property
    def reads_words(self) -> bool:
        """Whether the words route was fitted on text evidence: a fit on an index with no text channel
        saw no text match (its text features held at 0), and its words route reads nothing; nor does
        one that only learned to distrust text (no positive weight: fitted on the few loose title
        matches of a visual-only index, as the refit of 2026-12-06 was, -0.18 on both word features)."""
        if self.words_coef is None or max(self.words_coef) < 1e-2:
            return False
        return self.hi is None or self.hi[self.features.index("text_hits")] > 0

    @property
    def text_channels(self) -> tuple[str, ...] | None:
        """The timed text channels (speech, ocr, subtitle) the fitting index held; None: not recorded."""
        chans = self.fitted_on.get("text_channels")
        return None if chans is None else tuple(sorted(chans))

    def to_json(self) -> dict:
        data = asdict(replace(self, words_from=None))
        data.pop("words_from", None)
        return {"format": CALIBRATION_FORMAT, **data}

    def save(self, path: Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: Path) -> Calibration:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise CalibrationError(f"calibration file {path} cannot be read: {exc}") from exc
        if not isinstance(data, dict) or data.get("format") != CALIBRATION_FORMAT:
            raise CalibrationError(f"calibration file {path} is not a {CALIBRATION_FORMAT} file")
        feats = tuple(data.get("features", ()))
        if feats != FEATURES:
            raise CalibrationError(
                f"calibration file {path} uses features {list(feats)}, this version computes {list(FEATURES)}: "
                "fit it again with `vidsearch calibrate`"
            )
        try:
            cal = cls(
                fingerprint=str(data["fingerprint"]), model=str(data.get("model", "")), features=feats,
                mean=tuple(map(float, data["mean"])), scale=tuple(map(float, data["scale"])),
                coef=tuple(map(float, data["coef"])), intercept=float(data["intercept"]),
                threshold=float(data["threshold"]), fitted_on=dict(data.get("fitted_on", {})),
                lo=None if data.get("lo") is None else tuple(map(float, data["lo"])),
                hi=None if data.get("hi") is None else tuple(map(float, data["hi"])),
                words_coef=None if data.get("words_coef") is None else tuple(map(float, data["words_coef"])),
                words_intercept=float(data.get("words_intercept", 0.0)),
            )  # fmt: skip
        except (KeyError, TypeError, ValueError) as exc:
            raise CalibrationError(f"calibration file {path} is missing or has a bad field: {exc}") from exc
        ranges = [r for r in (cal.lo, cal.hi) if r is not None]
        if not (len(cal.mean) == len(cal.scale) == len(cal.coef) == len(feats)) or any(len(r) != len(feats) for r in ranges) \
                or not 0 <= cal.threshold <= 1:
            raise CalibrationError(f"calibration file {path}: mean/scale/coef/lo/hi must have one value per feature, threshold in [0, 1]")
        if cal.words_coef is not None and len(cal.words_coef) != len(WORD_FEATURES):
            raise CalibrationError(f"calibration file {path}: words_coef must have one value per word feature {list(WORD_FEATURES)}")
        if (cal.lo is None) != (cal.hi is None) or (ranges and any(a > b for a, b in zip(cal.lo, cal.hi))):
            raise CalibrationError(f"calibration file {path}: lo and hi come together, lo <= hi for every feature")
        return cal


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -40, 40)))


def shipped_calibrations() -> list[Path]:
    """Calibrations shipped beside the package's model weights (`encoders/weights/*.calibration.json`)."""
    weights = resources.files("vidsearch.encoders") / "weights"
    return sorted(Path(str(weights)).glob("*.calibration.json"))


def find_calibration(
    fingerprint_id: str, db: Path | None = None, explicit: Path | None = None, text_channels: Iterable[str] | None = None
) -> Calibration | None:
    """The calibration for this model: `explicit` (must fit), else `<db>/calibration.json`, else a
    shipped one whose fingerprint matches; None (with a warning naming the fix) when none does.

    Among shipped ones, the one fitted with the index's timed text channels (`text_channels`: the
    speech / ocr / subtitle sources the index holds) wins, then one that agrees on having any, then
    the first: evidence means something else when a channel is on (a text-on index's pools carry
    passing text matches that a visual-only fit never saw, and the reverse)."""
    if explicit is not None:
        cal = Calibration.load(explicit)
        if cal.fingerprint != fingerprint_id:
            raise CalibrationError(
                f"calibration file {explicit} was fitted for model fingerprint {cal.fingerprint}, "
                f"not this index's {fingerprint_id}: fit one with `vidsearch calibrate --data LABELS.jsonl --db DB`"
            )
        return cal
    own = _load_for(fingerprint_id, Path(db) / DB_FILE) if db is not None else None
    if own is not None:  # the user's own, fitted on this index
        return own
    found = [cal for cal in (_load_for(fingerprint_id, path) for path in shipped_calibrations()) if cal is not None]
    if found:
        if text_channels is None:
            return found[0]
        wanted = timed_text_channels(text_channels)
        best = max(found, key=lambda c: (c.text_channels == wanted, c.text_channels is not None and bool(c.text_channels) == bool(wanted)))
        return _with_words_route(best, found)
    log.warning(
        "no relevance calibration for model fingerprint %s: results carry no relevance and none are dropped; "
        "fit one with `vidsearch calibrate --data LABELS.jsonl --db %s`", fingerprint_id, db or "DB",
    )  # fmt: skip
    return None


def _with_words_route(chosen: Calibration, found: list[Calibration]) -> Calibration:
    """`chosen`, reading words through another shipped calibration's words route where its own reads
    none. The visual-only calibration was fitted with no text channel, so it could not read a text
    match at all, and a title, manifest description or chapter that said the query exactly was given
    relevance ~0 and dropped (media verify N1). The words route reads the text evidence alone (the
    best sentence match, how many channels matched), whatever the other route was fitted with; where
    there is no text match it adds nothing, so what the chosen calibration says without text stands."""
    if chosen.reads_words:
        return chosen
    donor = next((c for c in found if c.reads_words), None)
    return chosen if donor is None else replace(chosen, words_from=donor)


def timed_text_channels(sources: Iterable[str]) -> tuple[str, ...]:
    """The timed text channels among an index's text sources: what a calibration records as
    `fitted_on.text_channels` and is chosen by."""
    return tuple(sorted(c for c in sources if c in TIMED_TEXT))


def _load_for(fingerprint_id: str, path: Path) -> Calibration | None:
    """The calibration at `path` if it is there and fits this model; an unusable file is a warning."""
    if not path.is_file():
        return None
    try:
        cal = Calibration.load(path)
    except CalibrationError as exc:
        log.warning("%s", exc)
        return None
    return cal if cal.fingerprint == fingerprint_id else None


def with_relevance(candidates: list[Candidate], calibration: Calibration | None) -> list[Candidate]:
    """The candidates with their calibrated relevance set (unchanged without a calibration)."""
    if calibration is None or not candidates:
        return candidates
    p = calibration.probability(evidence(candidates))
    return [replace(c, probability=float(v)) for c, v in zip(candidates, p)]
