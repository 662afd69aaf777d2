"""The match timeline under the player: how closely each part of the video matches the query, the
moments shaded, and a playhead. It shows where *else* the video matches, which a list of three
moments hides; a click on it plays from there (from the moment's start when the click lands inside
a moment).

The curve is the engine's raw similarity (about -0.2 to 0.1 for a good match), on another scale
than the card's relevance (a calibrated probability, "69% · good match"): shown with numbers, a
negative "relevance" sat under a 69% card. So the curve is drawn as its shape within the video
(0 at its lowest, 1 at its highest) with no numbers on the axis, and the moments' tooltips give the
card's terms: their relevance in percent when the model is calibrated, nothing numeric otherwise.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

from vidsearch.api_models import MomentOut, SearchResult

SEEK = "seek"  # the chart's point selection; its clicked time comes back in the selection state
MIN_MARK = 1 / 100  # a moment's shading is at least this share of the video wide (~4 px of a 450 px chart)


def shape(values: list[float]) -> list[float]:
    """The curve as its shape: 0 at its lowest, 1 at its highest (a flat curve sits at the middle)."""
    lo, hi = min(values), max(values)
    if hi - lo <= 1e-12:
        return [0.5] * len(values)
    return [(v - lo) / (hi - lo) for v in values]


def shown_span(start: float, end: float, duration: float) -> tuple[float, float]:
    """Where a moment is shaded: its own span, widened about its middle to MIN_MARK of the video so a
    one-second moment of a ten-minute video is not drawn under a pixel wide (it was invisible)."""
    width = duration * MIN_MARK
    if end - start >= width:
        return start, end
    left = min(max((start + end) / 2 - width / 2, 0.0), max(duration - width, 0.0))
    return left, left + width


def moment_label(i: int, m: MomentOut) -> str:
    """A moment's tooltip, in the card's terms (relevance in percent), never the raw score."""
    label = f"moment {i + 1}: {m.start:.1f}–{m.end:.1f} s"
    return label + (f" · relevance {m.relevance:.0%}" if m.relevance is not None else "")


def timeline_chart(result: SearchResult, playing: float | None = None, height: int = 130) -> alt.LayerChart | None:
    """The chart for one result, or None when the result carries no curve."""
    curve = result.curve
    if curve is None or not curve.times:
        return None
    duration = max(result.video.duration, curve.times[-1])
    points = pd.DataFrame({"t": curve.times, "match": shape(curve.values)})
    moments = pd.DataFrame(
        [
            {"start": m.start, "end": m.end, "shown_start": a, "shown_end": b, "moment": moment_label(i, m),
             "playing": playing is not None and m.start <= playing < max(m.end, m.start + 1e-3)}
            for i, m in enumerate(result.moments)
            for a, b in [shown_span(m.start, m.end, duration)]
        ]  # fmt: skip
        or [{"start": 0.0, "end": 0.0, "shown_start": 0.0, "shown_end": 0.0, "moment": "", "playing": False}]
    )
    domain = alt.Scale(domain=[0, duration], nice=False)
    x = alt.X("t:Q", title="seconds", scale=domain)
    shade = (
        alt.Chart(moments)
        .mark_rect(color="#f59e0b")
        .encode(
            x=alt.X("shown_start:Q", scale=domain, title="seconds"),
            x2="shown_end:Q",
            opacity=alt.condition("datum.playing", alt.value(0.5), alt.value(0.3)),
            tooltip=[alt.Tooltip("moment:N", title="moment")],
        )
    )
    y = alt.Y("match:Q", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(title="match", labels=False, ticks=False, grid=False))
    line = alt.Chart(points).mark_line(color="#2563eb", strokeWidth=2).encode(x=x, y=y)
    seek = alt.selection_point(name=SEEK, fields=["t"], nearest=True, on="click", empty=False, clear=False)
    hits = (
        alt.Chart(points)
        .mark_point(opacity=0, size=10)
        .encode(x=x, y=y, tooltip=[alt.Tooltip("t:Q", title="play from (s)", format=".1f")])
        .add_params(seek)
    )
    layers = [shade, line, hits]
    if playing is not None:
        head = pd.DataFrame({"t": [playing]})
        layers.append(alt.Chart(head).mark_rule(color="#dc2626", strokeWidth=2).encode(x=x))
    return alt.layer(*layers).properties(height=height, description=describe(result))


def describe(result: SearchResult) -> str:
    """The chart's text alternative (a screen reader announced only "Vega visualization")."""
    spans = ", ".join(f"{m.start:.0f}–{m.end:.0f} s" for m in result.moments) or "none"
    return f"How closely {result.video.title} matches the query along its {result.video.duration:.0f} s; moments at {spans}."


def seek_target(selection: dict | None, result: SearchResult) -> float | None:
    """Where a click on the chart should play from: the clicked time, or the start of the moment the
    click landed in. `selection` is Streamlit's chart state (`{"selection": {"seek": [...]}}`)."""
    if not selection:
        return None
    picked = (selection.get("selection") or {}).get(SEEK) or []
    if not picked or "t" not in picked[0]:
        return None
    t = float(picked[0]["t"])
    for m in result.moments:
        if m.start <= t <= m.end:
            return m.start
    return t
