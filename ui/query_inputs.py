"""Search by example in the UI: a picture dropped (or picked) under the query box, and the moment
chosen with "more like this" on a result card (cards.py).

Both compose with the words in the box (the API combines the inputs, search/examples.py). The
picture lives in the uploader widget; the chosen "like" moment lives in `st.session_state[LIKE]`
until the user clears it, so paging and choosing moments keep the same request.
"""

from __future__ import annotations

import base64

import streamlit as st

from . import cache
from .cards import LIKE, fmt_time, md_escape

IMAGE_TYPES = ["png", "jpg", "jpeg", "webp", "gif", "bmp", "tiff"]


def upload_limit_mb(max_image_mb: float) -> int:
    """The uploader's limit: the search's own (`max_image_mb`), not Streamlit's 200 MB, so a picture
    the search would refuse is refused on the spot, in the uploader's words. Streamlit takes whole
    MB; a picture in the sliver it rounds over, or one over a lower limit of a server in API mode
    (this reads the UI's own settings), gets the backend's plain "too large" message."""
    return max(1, round(max_image_mb))


def example_inputs() -> dict:
    """The picture uploader and the current "more like this" moment -> SearchRequest fields."""
    fields: dict = {}
    limit = upload_limit_mb(cache.config().max_image_mb)
    picture = st.file_uploader(
        "Search by picture", type=IMAGE_TYPES, key="image", max_upload_size=limit,
        help=f"Drop a picture or a screenshot (up to {limit} MB) to find moments that look like it; words in the box compose with it.",
    )  # fmt: skip
    if picture is not None:
        fields["image"] = base64.b64encode(picture.getvalue()).decode()
    like = st.session_state.get(LIKE)
    if like:
        text, clear = st.columns([6, 1], vertical_alignment="center")
        text.markdown(f":material/image_search: More like **{md_escape(like['title'])}** {fmt_time(like['start'])}–{fmt_time(like['end'])}")
        clear.button("Clear", key="like-clear", on_click=st.session_state.pop, args=(LIKE, None))
        fields["like"] = {"video_id": like["video_id"], "start": like["start"], "end": like["end"]}
    return fields
