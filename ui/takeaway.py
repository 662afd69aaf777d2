"""Taking a moment away: bounds the user widens or narrows, the moment as a clip file, the moment as
an edit decision list (OpenTimelineIO or CMX 3600), and a link that opens the UI at the moment.

Shown under the player of the card being played, and for a shared link (`?video=ID&t=12.5&start=
10&end=15`, which the search page opens before anything else). Files are made by the API only when
a download button is pressed (Streamlit calls the data function then), so adjusting the bounds costs
nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from urllib.parse import urlencode

import streamlit as st

from vidsearch.api_models import VideoInfo

from .backend import Backend

__all__ = ["SharedLinkError", "fit_to_video", "parse_shared", "render_takeaway", "share_url", "shared_moment"]

TIMES = ("t", "start", "end")


class SharedLinkError(ValueError):
    """A shared link whose time is not a number of seconds (`nan`, `inf`, text): `param` and `raw`
    say which, for the page to say so and carry on with the search box."""

    def __init__(self, param: str, raw: str):
        super().__init__(f"{param}={raw!r} is not a time in seconds")
        self.param, self.raw = param, raw


def share_url(video_id: str, t: float, start: float, end: float) -> str:
    """The UI's own address of a moment (this page's URL, with the video and times as parameters)."""
    try:
        base = str(st.context.url or "").split("?")[0]
    except Exception:  # noqa: BLE001 - no browser context (AppTest): a relative link still works
        base = ""
    return f"{base}?{urlencode({'video': video_id, 't': f'{t:.2f}', 'start': f'{start:.2f}', 'end': f'{end:.2f}'})}"


def parse_shared(params: Mapping[str, str]) -> dict | None:
    """The moment a link's parameters name (`video`, and `t`, `start`, `end` in seconds), or None
    when they name no video. SharedLinkError for a time that is not a finite number: `float()` takes
    "nan" and "inf", which then broke every time shown and the player's start."""
    if "video" not in params:
        return None
    times: dict[str, float] = {}
    for name in TIMES:
        raw = params.get(name)
        if raw is None:
            continue
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise SharedLinkError(name, str(raw))
        times[name] = value
    t = max(times.get("t", 0.0), 0.0)
    start = max(times.get("start", t), 0.0)
    end = max(times.get("end", start + 5.0), start + 0.1)
    return {"video": params["video"], "t": t, "start": start, "end": end}


def shared_moment() -> dict | None:
    """The moment this page's link names (`?video=&t=&start=&end=`), or None; SharedLinkError as
    `parse_shared`."""
    return parse_shared(st.query_params.to_dict())


def fit_to_video(moment: dict, duration: float) -> tuple[dict, str | None]:
    """The moment kept inside the video, and a note when it was not (a link made for another cut of
    the file, or edited by hand): a moment that starts past the end shows the whole video from its
    start; one that only ends past it is cut at the end. None: nothing to say."""
    if duration <= 0 or not any(moment[name] > duration + 0.05 for name in TIMES):
        return moment, None
    told = f"This link points past the end of the video (it is {duration:.1f} s long): "
    if moment["start"] >= duration:
        return {**moment, "t": 0.0, "start": 0.0, "end": duration}, told + "showing the whole video from its start."
    end = min(moment["end"], duration)
    t = moment["t"] if moment["start"] <= moment["t"] <= end else moment["start"]
    return {**moment, "t": t, "end": end}, told + "the moment is cut at the video's end."


def render_takeaway(be: Backend, key: str, video: VideoInfo, start: float, end: float, t: float) -> None:
    """Bounds, padding, clip download, EDL/OTIO export and the share link for one moment. `key` must
    change with the moment (cards.takeaway_key): Streamlit keeps a keyed widget's value and ignores
    its new default, so a key that outlived its moment kept exporting the previous moment's bounds."""
    with st.expander("Take this moment away", expanded=False):
        top = max(float(video.duration), 0.1)
        lo, hi = st.slider("Bounds (seconds)", 0.0, top, (min(start, top), min(max(end, start + 0.1), top)), 0.1, key=f"bounds-{key}",
                           help="Widen or narrow the moment before taking it away.")  # fmt: skip
        pad = st.number_input("Padding (seconds, each side)", 0.0, 30.0, 0.0, 0.5, key=f"pad-{key}")
        a, b = max(0.0, lo - pad), min(top, hi + pad)
        if b <= a:
            st.caption("The moment is empty: widen the bounds.")
            return
        st.caption(f"{a:.1f}–{b:.1f} s ({b - a:.1f} s)")
        item = [{"video_id": video.id, "start": lo, "end": hi, "name": video.title[:200]}]  # a clip name's limit
        stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in video.title)[:60] or video.id
        clip, otio, edl = st.columns(3)
        clip.download_button("Clip", data=lambda: be.clip_bytes(video, a, b), file_name=f"{stem}_{a:.1f}-{b:.1f}.mp4",
                             mime="video/mp4", key=f"clip-{key}", on_click="ignore")  # fmt: skip
        otio.download_button("OTIO", data=lambda: be.export_text(item, "otio", pad), file_name=f"{stem}.otio",
                             mime="application/json", key=f"otio-{key}", on_click="ignore")  # fmt: skip
        edl.download_button("EDL", data=lambda: be.export_text(item, "edl", pad), file_name=f"{stem}.edl",
                            mime="text/plain", key=f"edl-{key}", on_click="ignore")  # fmt: skip
        st.caption("Link to this moment:")
        st.code(share_url(video.id, t, lo, hi), language=None, wrap_lines=True)  # a long link wraps on a phone
