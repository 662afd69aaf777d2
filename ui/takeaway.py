"""Taking a moment away: bounds the user widens or narrows, the moment as a clip file, the moment as
an edit decision list (OpenTimelineIO or CMX 3600), and a link that opens the UI at the moment.

Shown under the player of the card being played, and for a shared link (`?video=ID&t=12.5&start=
10&end=15`, which the search page opens before anything else). Files are made by the API only when
a download button is pressed (Streamlit calls the data function then), so adjusting the bounds costs
nothing.
"""

from __future__ import annotations

from urllib.parse import urlencode

import streamlit as st

from vidsearch.api_models import VideoInfo

from .backend import Backend

__all__ = ["render_takeaway", "share_url", "shared_moment"]


def share_url(video_id: str, t: float, start: float, end: float) -> str:
    """The UI's own address of a moment (this page's URL, with the video and times as parameters)."""
    try:
        base = str(st.context.url or "").split("?")[0]
    except Exception:  # noqa: BLE001 - no browser context (AppTest): a relative link still works
        base = ""
    return f"{base}?{urlencode({'video': video_id, 't': f'{t:.2f}', 'start': f'{start:.2f}', 'end': f'{end:.2f}'})}"


def shared_moment() -> dict | None:
    """The moment a shared link names (`?video=&t=&start=&end=`), or None."""
    q = st.query_params
    if "video" not in q:
        return None
    try:
        t = float(q.get("t", 0.0))
        start = float(q.get("start", t))
        end = float(q.get("end", start + 5.0))
    except ValueError:
        return None
    return {"video": q["video"], "t": max(t, 0.0), "start": max(start, 0.0), "end": max(end, start + 0.1)}


def render_takeaway(be: Backend, key: str, video: VideoInfo, start: float, end: float, t: float) -> None:
    """Bounds, padding, clip download, EDL/OTIO export and the share link for one moment."""
    with st.expander("Take this moment away", icon=":material/content_cut:", expanded=False):
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
                             mime="video/mp4", icon=":material/movie:", key=f"clip-{key}", on_click="ignore")  # fmt: skip
        otio.download_button("OTIO", data=lambda: be.export_text(item, "otio", pad), file_name=f"{stem}.otio",
                             mime="application/json", icon=":material/timeline:", key=f"otio-{key}", on_click="ignore")  # fmt: skip
        edl.download_button("EDL", data=lambda: be.export_text(item, "edl", pad), file_name=f"{stem}.edl",
                            mime="text/plain", icon=":material/list:", key=f"edl-{key}", on_click="ignore")  # fmt: skip
        st.caption("Link to this moment:")
        st.code(share_url(video.id, t, lo, hi), language=None)
