"""Fitting and measuring the relevance calibration (search/relevance.py) on labelled queries.

Labelled queries are JSONL, one query a line:

    {"query": "a red ball sinks as a deep beep rings out", "relevant": ["videos/synth_00007.mp4"], "kind": "positive"}
    {"query": "a cat playing the piano", "relevant": [], "kind": "unrelated"}

`relevant` names the videos that show what the query describes (video ids, titles, or paths,
absolute or relative to the labels file); an empty list is a query for something the library does
not hold. `kind` is free text reported separately (the synthetic labels use positive, text_speech,
text_screen, unrelated, near_miss_word, near_miss_combo, near_miss_text and nonsense); `split` ("fit"
or "held_out") is optional, otherwise a stable hash of the query decides.

Each query is searched with nothing dropped; its top candidates' evidence rows (what a user would
see) are labelled relevant or not and the two-route model of search/relevance.py (everything the
search saw, or the words alone) is fitted on the fit split by maximum likelihood (standardised
features held to the range the fitting rows cover, L2, scipy's L-BFGS). The default threshold is
the one that best balances, on the fit split, the share of absent-thing queries that return nothing
against the share of answerable queries that keep a relevant result (`balance`), while every kind
of answerable query keeps at least half of what it finds with no threshold.
Held-out queries then give the figures the README quotes: binned calibration error (ECE) and a
reliability table, the share of each negative kind that returns nothing, P@1 and recall@10 kept on
answerable queries, and the ranking by fusion vs by relevance.

`synthetic_labels` writes such a file for a corpus made by `vidsearch synth`: every test caption as
a positive (relevant: every video with an event of the same colour, shape, motion and sound), every
phrase spoken and word shown as queries only the speech and OCR channels answer (relevant: every
video that says or shows it), and negatives of five kinds: unrelated subjects, near misses that name
a colour, shape or sound the library does not have, near misses that combine colour, shape, motion
and sound in a way no video does, near misses by text (phrases and words no video says or shows),
and nonsense. Fitted on these with the text channels on (the default), the calibration learns what a
speech or OCR match is worth instead of never having seen one.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from vidsearch.search.relevance import FEATURES, WORD_FEATURES, Calibration, evidence

from .synth import ON_SCREEN, SPOKEN_ABOUT, TEST_PHRASING, Event, caption_text, plan

__all__ = ["LabelledQuery", "Observations", "collect", "default_threshold", "fit", "read_labels", "report", "synthetic_labels"]

TOP = 10  # candidates per query that are labelled and measured (what a first page shows)
RANGE_TAIL = 0.005  # each feature's fitted range leaves out this share of the rows at either end
KEEP_SHARE = 0.5  # the default threshold hides at most half of what each kind of answerable query finds (default_threshold)
MIN_QUERIES = 100  # fewer fitting queries than this (or fewer than 20 of each class) is refused
NEW_COLOURS = ("orange", "pink", "brown", "grey", "black", "cyan")
NEW_SHAPES = {"hexagon": ("hexagon", "six-sided shape"), "heart": ("heart", "heart shape"), "cross": ("cross", "plus sign"), "crescent": ("crescent", "crescent moon")}  # fmt: skip
NEW_SOUNDS = {
    "bark": (("a dog barking", "a dog barks"),), "siren": (("a siren", "a siren wails"),),
    "guitar": (("a guitar chord", "a guitar strums"),), "bell": (("a church bell", "a bell rings"),),
}  # fmt: skip
UNRELATED_SUBJECTS = ("a cat", "a dog", "an old man", "two children", "a woman in a red coat", "a horse", "a chef",
                      "a crowd of tourists", "a fisherman", "a drummer", "a parrot", "a football team")  # fmt: skip
UNRELATED_ACTIONS = ("plays the piano", "rides a bicycle through a park", "swims in a lake", "cooks pasta in a kitchen",
                     "walks along a snowy street", "reads a newspaper on a bench", "dances at a wedding",
                     "climbs a mountain", "waits for a train", "eats an ice cream on the beach")  # fmt: skip
# Queries that only the words heard or shown can answer (the speech and OCR channels), and the
# words no video says or shows, for near misses by text.
SPEECH_QUERIES = ('someone says "{words}"', 'a voice saying "{words}"', "{words}")
SCREEN_QUERIES = ('the word "{words}" on screen', "a sign that reads {words}", "{words}")
NEW_SPOKEN = ("the profits fell", "good night everyone", "the bus is early", "please close the window", "welcome to the lecture",
              "time to wake up", "the game starts now", "turn off the radio", "the shop is closed", "we won the match")  # fmt: skip
NEW_ON_SCREEN = ("CLOSED", "PUSH", "FIRE", "TAXI", "HOTEL", "EXIT ONLY", "LOST", "PARKING", "SILENCE", "BANK")
NONSENSE_WORDS = ("blorft", "quazzle", "dree", "snorp", "vintle", "graxx", "plimb", "zorvat", "the", "of", "mumble", "ktch")


@dataclass(frozen=True)
class LabelledQuery:
    query: str
    relevant: frozenset[str]  # video ids
    kind: str
    split: str  # "fit" | "held_out"


def _split_of(query: str, held_out_fraction: float) -> str:
    h = int(hashlib.sha256(query.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "held_out" if h < held_out_fraction else "fit"


def read_labels(path: Path, videos: dict[str, dict], held_out_fraction: float = 0.5) -> list[LabelledQuery]:
    """Labelled queries from JSONL, their video references resolved against the index's videos
    (`Snapshot.videos`: id -> row); an unknown reference is an error naming the line."""
    path = Path(path)
    by_path = {str(Path(r["path"]).resolve()): vid for vid, r in videos.items()}
    by_title = {r["title"]: vid for vid, r in videos.items()}
    out = []
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ValueError(f"labels file {path} cannot be read: {exc}") from exc
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            query, refs = str(rec["query"]), list(rec.get("relevant", []))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{n}: expected {{\"query\": ..., \"relevant\": [...]}}: {exc}") from exc
        ids = set()
        for ref in refs:
            vid = ref if ref in videos else by_title.get(ref) or by_path.get(str((path.parent / ref).resolve()))
            if vid is None:
                raise ValueError(f"{path}:{n}: video {ref!r} is not in the index (give a video id, title or path)")
            ids.add(vid)
        kind = str(rec.get("kind", "positive" if ids else "negative"))
        split = rec.get("split") or _split_of(query, held_out_fraction)
        out.append(LabelledQuery(query, frozenset(ids), kind, split))
    return out


@dataclass
class Observations:
    """Every labelled query's candidates: evidence rows (the first TOP), labels, and the fused order."""

    queries: list[LabelledQuery]
    x: list[np.ndarray]  # per query: (n, F) evidence of its first TOP candidates, fused order
    y: list[np.ndarray]  # per query: (n,) 1 where that candidate is relevant
    x_all: list[np.ndarray]  # per query: evidence of every candidate (what the threshold sees)

    def rows(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        keep = [i for i, q in enumerate(self.queries) if q.split == split]
        if not keep:
            return np.zeros((0, len(FEATURES))), np.zeros(0)
        return np.concatenate([self.x[i] for i in keep]), np.concatenate([self.y[i] for i in keep])


def collect(engine, queries: list[LabelledQuery], progress=None) -> Observations:
    """Search every labelled query with nothing dropped and keep its candidates' evidence."""
    from vidsearch.api_models import SearchRequest

    xs, ys, alls = [], [], []
    for q in queries:
        ranking = engine.rank(engine.plan(SearchRequest(query=q.query, top_k=TOP, min_relevance=0.0)))
        cands = ranking.fused  # the evidence reads the fused order (inv_rank), whatever calibration the engine has
        x = evidence(cands)
        alls.append(x)
        xs.append(x[:TOP])
        ys.append(np.array([c.video_id in q.relevant for c in cands[:TOP]], dtype=np.float64))
        if progress:
            progress()
    return Observations(queries, xs, ys, alls)


def fit(obs: Observations, fingerprint, c: float = 1.0, text_channels: tuple[str, ...] | None = None) -> Calibration:
    """The two-route model of search/relevance.py (everything seen, or the words alone; either makes
    a result relevant) fitted jointly by maximum likelihood on the fit split's rows, L2-penalised as
    scikit-learn's logistic regression with C=c; the default threshold: `default_threshold`, given
    the timed text channels the index holds (None: not known)."""
    x, y = obs.rows("fit")
    n_fit = sum(q.split == "fit" for q in obs.queries)
    if n_fit < MIN_QUERIES or y.sum() < 20 or (1 - y).sum() < 20:
        raise ValueError(
            f"too little labelled data to fit a calibration: {n_fit} fitting queries, {int(y.sum())} relevant and "
            f"{int((1 - y).sum())} irrelevant results; need at least {MIN_QUERIES} queries (several hundred are better: "
            "the README's fit used ~700) with both answerable queries and queries for things the library does not hold"
        )
    lo, hi = np.quantile(x, [RANGE_TAIL, 1 - RANGE_TAIL], axis=0)
    x = np.clip(x, lo, hi)  # fitted as it will be read: within the range the evidence covers
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    z = (x - mean) / scale
    words = [FEATURES.index(f) for f in WORD_FEATURES]
    seen = z.copy()
    seen[:, words] = 0.0  # the first route reads what is seen and the ranking; the words are the second route's
    w_all, b_all, w_words, b_words = _fit_two_routes(seen, z[:, words], y, c)
    cal = Calibration(
        fingerprint=fingerprint.id, model=fingerprint.describe(), features=FEATURES,
        mean=tuple(mean.tolist()), scale=tuple(scale.tolist()), coef=tuple(w_all.tolist()), intercept=b_all,
        threshold=0.5, lo=tuple(lo.tolist()), hi=tuple(hi.tolist()), words_coef=tuple(w_words.tolist()), words_intercept=b_words,
    )  # fmt: skip
    return replace(cal, threshold=default_threshold(cal, obs, text_channels))


def _fit_two_routes(z: np.ndarray, zw: np.ndarray, y: np.ndarray, c: float) -> tuple[np.ndarray, float, np.ndarray, float]:
    """Maximum likelihood of p = 1 - (1 - sigmoid(z w + b)) (1 - sigmoid(zw v + d)) with an L2
    penalty |w|^2 + |v|^2 over 2c (intercepts free), by L-BFGS with the analytic gradient. Not
    convex; the routes read disjoint evidence, which keeps them apart, and the start is each route's
    own logistic fit."""
    from scipy.optimize import minimize
    from scipy.special import expit
    from sklearn.linear_model import LogisticRegression

    n_all, n_words = z.shape[1], zw.shape[1]

    def split(theta):
        return theta[:n_all], theta[n_all], theta[n_all + 1 : n_all + 1 + n_words], theta[-1]

    def loss(theta):
        w, b, v, d = split(theta)
        pa, pw = expit(z @ w + b), expit(zw @ v + d)
        p = np.clip(1.0 - (1.0 - pa) * (1.0 - pw), 1e-12, 1 - 1e-12)
        nll = -(y * np.log(p) + (1 - y) * np.log(1 - p)).sum() + (w @ w + v @ v) / (2 * c)
        dp = -(y / p - (1 - y) / (1 - p))  # d nll / d p, per row
        ga, gw = dp * pa * (1 - pa) * (1 - pw), dp * pw * (1 - pw) * (1 - pa)  # d nll / d logit, each route
        grad = np.concatenate([z.T @ ga + w / c, [ga.sum()], zw.T @ gw + v / c, [gw.sum()]])
        return nll, grad

    seen, said = (LogisticRegression(C=c, max_iter=1000).fit(m, y) for m in (z, zw))
    theta0 = np.concatenate([seen.coef_[0], seen.intercept_, said.coef_[0], said.intercept_])
    theta = minimize(loss, theta0, jac=True, method="L-BFGS-B", options={"maxiter": 2000}).x
    w, b, v, d = split(theta)
    return w, float(b), v, float(d)


def default_threshold(cal: Calibration, obs: Observations, text_channels: tuple[str, ...] | None = None) -> float:
    """The min_relevance searches use by default: on the fit split, the one that best `balance`s absent
    things returning nothing against answerable queries keeping a relevant result, among those that
    keep, for every kind of answerable query, at least KEEP_SHARE of the queries that find a relevant
    result with no threshold. Without that floor a weak model's plateau (each step up hides a few
    more near misses and a few more right answers) walks the threshold up until caption searches
    come back empty while the easy kinds (words said or shown) still pass.

    The floor holds for the kinds the index has a channel for: words said (`text_speech`) need speech
    or subtitles, words shown (`text_screen`) OCR (`text_channels`: the index's timed text channels;
    None, not known: every kind). On an index built without them the frames find such a phrase only
    where it also describes the picture, and those few would otherwise hold the threshold at the
    grid's bottom, returning something for every absent thing (measured: 0.02 on the visual-only
    corpus once the shape and sound channels made captions' relevance sharper)."""
    grid = np.round(np.arange(0.02, 0.96, 0.01), 2)
    base = threshold_figures(cal, obs, "fit", 0.0)
    channel_of = {"kept:text_speech": ("speech", "subtitle"), "kept:text_screen": ("ocr",)}
    kinds = [k for k in base if k.startswith("kept:") and k != "kept:recall"
             and (text_channels is None or k not in channel_of or set(channel_of[k]) & set(text_channels))]  # fmt: skip
    score = []
    for t in grid:
        figures = threshold_figures(cal, obs, "fit", t)
        floor_kept = all(figures[k] >= KEEP_SHARE * base[k] for k in kinds)
        score.append(balance(figures) if floor_kept else -1.0)
    return float(grid[int(np.argmax(score))])  # the lowest when none keeps the floor


def balance(figures: dict[str, float]) -> float:
    """Half the share of absent-thing queries (all kinds together) that return nothing, half the
    share of answerable queries that keep a relevant result: what the default threshold maximises."""
    return 0.5 * figures.get("empty:all", 0.0) + 0.5 * figures.get("kept:recall", 0.0)


def threshold_figures(cal: Calibration, obs: Observations, split: str, t: float) -> dict[str, float]:
    """At threshold t, on one split: per negative kind the share of queries that return nothing
    (`empty:KIND`), and for answerable queries the share that keep a relevant result in their first
    TOP (`kept:recall`, and `kept:KIND` per kind) and whose first result, in the served order (by
    relevance), is relevant and shown (`p_at_1`)."""
    empty: dict[str, list[bool]] = {}
    kept_by: dict[str, list[bool]] = {}
    kept, p1 = [], []
    for q, x_all, y in zip(obs.queries, obs.x_all, obs.y):
        if q.split != split:
            continue
        p = cal.probability(x_all)
        shown = p[:TOP] >= t
        if q.relevant:
            kept.append(bool((y[shown[: len(y)]] > 0).any()))
            kept_by.setdefault(q.kind, []).append(kept[-1])
            top = int(np.argmax(p))  # served first: the highest relevance (the first of equals, as the stable sort)
            p1.append(bool(p[top] >= t and top < len(y) and y[top] > 0))
        else:
            empty.setdefault(q.kind, []).append(not (p >= t).any())
    out = {f"empty:{k}": float(np.mean(v)) for k, v in sorted(empty.items())}
    if empty:
        out["empty:all"] = float(np.mean([x for v in empty.values() for x in v]))
    if kept:
        out["kept:recall"] = float(np.mean(kept))
        out["p_at_1"] = float(np.mean(p1))
        out.update({f"kept:{k}": float(np.mean(v)) for k, v in sorted(kept_by.items())})
    return out


def reliability(p: np.ndarray, y: np.ndarray, bins: int = 10) -> tuple[float, list[dict]]:
    """Binned expected calibration error and the reliability table (equal-width bins of p)."""
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        m = idx == b
        if not m.any():
            continue
        conf, acc = float(p[m].mean()), float(y[m].mean())
        ece += m.sum() / len(p) * abs(conf - acc)
        table.append({"bin": f"{edges[b]:.1f}-{edges[b + 1]:.1f}", "n": int(m.sum()), "mean_relevance": round(conf, 3), "share_relevant": round(acc, 3)})
    return float(ece), table


def ranking_figures(cal: Calibration, obs: Observations, split: str) -> dict[str, dict[str, float]]:
    """P@1 and R@10 of answerable queries, ordered by rank fusion vs by calibrated relevance (only
    candidates among the first TOP are labelled, so the relevance order re-sorts those)."""
    out = {"fusion": [], "relevance": []}
    for q, x, y in zip(obs.queries, obs.x, obs.y):
        if q.split != split or not q.relevant or len(y) == 0:
            continue
        order = np.argsort(-cal.probability(x), kind="stable")
        out["fusion"].append((y[0], y.max()))
        out["relevance"].append((y[order[0]], y.max()))
    return {k: {"p_at_1": float(np.mean([a for a, _ in v])), "recall_at_10": float(np.mean([b for _, b in v]))} for k, v in out.items() if v}


def report(cal: Calibration, obs: Observations, split: str = "held_out") -> dict:
    """The figures a calibration is judged by, on one split."""
    x, y = obs.rows(split)
    p = cal.probability(x)
    ece, table = reliability(p, y)
    base = threshold_figures(cal, obs, split, 0.0)
    return {
        "split": split,
        "queries": {k: sum(q.split == split and q.kind == k for q in obs.queries) for k in sorted({q.kind for q in obs.queries})},
        "rows": int(len(y)),
        "ece": round(ece, 4),
        "reliability": table,
        "threshold": cal.threshold,
        "at_threshold": {k: round(v, 4) for k, v in threshold_figures(cal, obs, split, cal.threshold).items()},
        "without_threshold": {k: round(v, 4) for k, v in base.items() if not k.startswith("empty:")},
        "by_threshold": {f"{t:.2f}": {k: round(v, 4) for k, v in threshold_figures(cal, obs, split, t).items()}
                         for t in sorted({0.03, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, cal.threshold})},
        "ranking": ranking_figures(cal, obs, split),
    }


# -- labelled queries for a synthetic corpus ----------------------------------------------------------------


def synthetic_labels(corpus: Path, per_kind: int = 150, seed: int = 0) -> list[dict]:
    """Labelled queries for a corpus made by `vidsearch synth` (its synth.json says how to replan it)."""
    corpus = Path(corpus)
    params = json.loads((corpus / "synth.json").read_text())
    plans = plan(params["videos"], params["seed"], params["test_fraction"])
    rng = random.Random(seed)
    key = lambda e: (e.colour, e.shape, e.motion, e.sound)  # noqa: E731 - what a caption describes
    holders: dict[tuple, set[str]] = {}
    events = []
    for v in plans:
        for e in v.events:
            holders.setdefault(key(e), set()).add(v.video)
            events.append(e)
    out = []
    for v in plans:
        if v.split != "test":
            continue
        for e in v.events:
            out.append({"query": e.captions["test"], "relevant": sorted(holders[key(e)]), "kind": "positive"})
    out += _text_labels([(v.video, e) for v in plans for e in v.events], rng, per_kind)
    bare = [replace(e, spoken=None, onscreen=None) for e in events]
    wider = replace(TEST_PHRASING, nouns={**TEST_PHRASING.nouns, **NEW_SHAPES}, sounds={**TEST_PHRASING.sounds, **NEW_SOUNDS})
    for _ in range(per_kind):
        e = rng.choice(bare)
        which = rng.choice(("colour", "shape", "sound"))
        new = {"colour": {"colour": rng.choice(NEW_COLOURS)}, "shape": {"shape": rng.choice(sorted(NEW_SHAPES))},
               "sound": {"sound": rng.choice(sorted(NEW_SOUNDS))}}[which]  # fmt: skip
        out.append({"query": caption_text(replace(e, **new), wider, rng), "relevant": [], "kind": "near_miss_word"})
    colours, shapes = sorted({e.colour for e in events}), sorted({e.shape for e in events})
    motions, sounds = sorted({e.motion for e in events}), sorted({e.sound for e in events})
    absent = [k for k in ((c, s, m, so) for c in colours for s in shapes for m in motions for so in sounds) if k not in holders]
    for k in rng.sample(absent, min(per_kind, len(absent))):
        e = replace(rng.choice(bare), colour=k[0], shape=k[1], motion=k[2], sound=k[3])
        out.append({"query": caption_text(e, TEST_PHRASING, rng), "relevant": [], "kind": "near_miss_combo"})
    for _ in range(per_kind):
        out.append({"query": f"{rng.choice(UNRELATED_SUBJECTS)} {rng.choice(UNRELATED_ACTIONS)}", "relevant": [], "kind": "unrelated"})
    for _ in range(per_kind):
        if rng.random() < 0.5:
            words = " ".join(rng.choice(NONSENSE_WORDS) for _ in range(rng.randint(2, 6)))
        else:
            words = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz  ") for _ in range(rng.randint(6, 30))).strip() or "xq"
        out.append({"query": words, "relevant": [], "kind": "nonsense"})
    seen, unique = set(), []
    for rec in out:  # one label per query text (two events can share a caption; a bare word can be both kinds)
        if rec["query"] not in seen:
            seen.add(rec["query"])
            unique.append(rec)
    return unique


def _text_labels(events: list[tuple[str, Event]], rng: random.Random, per_kind: int) -> list[dict]:
    """Queries answered by what is said or shown: every phrase spoken and word shown in the corpus, a
    few ways each (relevant: every video that says or shows it), and near misses by text: phrases
    and words no video has (some close to ones it has: "the profits fell", "look at the orange ball")."""
    holders: dict[tuple[str, str], set[str]] = {}
    for video, e in events:
        if e.spoken:
            holders.setdefault(("speech", e.spoken), set()).add(video)
        if e.onscreen:
            holders.setdefault(("screen", e.onscreen), set()).add(video)
    forms = {"speech": SPEECH_QUERIES, "screen": SCREEN_QUERIES}
    about = tuple(t.split("{")[0] for t in SPOKEN_ABOUT)  # "look at the red ball" bare also describes a picture: quoted only
    out = [{"query": form.format(words=words), "relevant": sorted(videos), "kind": f"text_{where}"}
           for (where, words), videos in sorted(holders.items()) for form in forms[where]
           if form != "{words}" or not words.startswith(about)]  # fmt: skip
    shapes = sorted({e.shape for _, e in events})
    absent_speech = [*NEW_SPOKEN, *(t.format(colour=c, shape=sh) for t in SPOKEN_ABOUT for c in NEW_COLOURS for sh in shapes)]
    absent = [("speech", w) for w in absent_speech if ("speech", w) not in holders]
    absent += [("screen", w) for w in NEW_ON_SCREEN if ("screen", w) not in holders and w not in ON_SCREEN]
    for where, words in rng.sample(absent, min(per_kind, len(absent))):
        out.append({"query": rng.choice(forms[where]).format(words=words), "relevant": [], "kind": "near_miss_text"})
    return out
