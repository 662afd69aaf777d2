"""The relevance timeline under the player: the query's relevance over the whole video, the moments
shaded, and a playhead. It shows where *else* the video matches, which a list of three moments hides;
a click on it plays from there (from the moment's start when the click lands inside a moment)."""

from __future__ import annotations

import altair as alt
import pandas as pd

from vidsearch.api_models import SearchResult

SEEK = "seek"  # the chart's point selection; its clicked time comes back in the selection state


def timeline_chart(result: SearchResult, playing: float | None = None, height: int = 130) -> alt.LayerChart | None:
    """The chart for one result, or None when the result carries no curve."""
    curve = result.curve
    if curve is None or not curve.times:
        return None
    duration = max(result.video.duration, curve.times[-1])
    points = pd.DataFrame({"t": curve.times, "relevance": curve.values})
    moments = pd.DataFrame(
        [
            {"start": m.start, "end": m.end, "score": m.score, "moment": f"moment {i + 1}: {m.start:.1f}–{m.end:.1f} s",
             "playing": playing is not None and m.start <= playing < max(m.end, m.start + 1e-3)}
            for i, m in enumerate(result.moments)
        ]  # fmt: skip
        or [{"start": 0.0, "end": 0.0, "score": 0.0, "moment": "", "playing": False}]
    )
    x = alt.X("t:Q", title="seconds", scale=alt.Scale(domain=[0, duration], nice=False))
    shade = (
        alt.Chart(moments)
        .mark_rect(color="#f59e0b")
        .encode(
            x=alt.X("start:Q", scale=alt.Scale(domain=[0, duration], nice=False), title="seconds"),
            x2="end:Q",
            opacity=alt.condition("datum.playing", alt.value(0.45), alt.value(0.2)),
            tooltip=[alt.Tooltip("moment:N", title="moment"), alt.Tooltip("score:Q", format=".3f")],
        )
    )
    y = alt.Y("relevance:Q", title="relevance", scale=alt.Scale(zero=False), axis=alt.Axis(tickCount=3))
    line = alt.Chart(points).mark_line(color="#2563eb", strokeWidth=2).encode(x=x, y=y)
    seek = alt.selection_point(name=SEEK, fields=["t"], nearest=True, on="click", empty=False, clear=False)
    hits = (
        alt.Chart(points)
        .mark_point(opacity=0, size=10)
        .encode(x=x, y=y, tooltip=[alt.Tooltip("t:Q", title="seconds", format=".1f"), alt.Tooltip("relevance:Q", format=".3f")])
        .add_params(seek)
    )
    layers = [shade, line, hits]
    if playing is not None:
        head = pd.DataFrame({"t": [playing]})
        layers.append(alt.Chart(head).mark_rule(color="#dc2626", strokeWidth=2).encode(x=x))
    return alt.layer(*layers).properties(height=height)


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
