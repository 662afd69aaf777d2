"""Search by example in the UI: a picture dropped (or picked) under the query box, and the moment
chosen with "more like this" on a result card (cards.py).

Both compose with the words in the box (the API combines the inputs, search/examples.py). The
picture lives in the uploader widget; the chosen "like" moment lives in `st.session_state[LIKE]`
until the user clears it, so paging and choosing moments keep the same request.
"""

from __future__ import annotations

import base64

import streamlit as st

from .cards import LIKE, fmt_time, md_escape

IMAGE_TYPES = ["png", "jpg", "jpeg", "webp", "gif", "bmp", "tiff"]


def example_inputs() -> dict:
    """The picture uploader and the current "more like this" moment -> SearchRequest fields."""
    fields: dict = {}
    picture = st.file_uploader(
        "Search by picture", type=IMAGE_TYPES, key="image",
        help="Drop a picture or a screenshot to find moments that look like it; words in the box compose with it.",
    )  # fmt: skip
    if picture is not None:
        fields["image"] = base64.b64encode(picture.getvalue()).decode()
    like = st.session_state.get(LIKE)
    if like:
        text, clear = st.columns([6, 1], vertical_alignment="center")
        text.markdown(f":material/image_search: More like **{md_escape(like['title'])}** {fmt_time(like['start'])}–{fmt_time(like['end'])}")
        clear.button("Clear", key="like-clear", icon=":material/close:", on_click=st.session_state.pop, args=(LIKE, None))
        fields["like"] = {"video_id": like["video_id"], "start": like["start"], "end": like["end"]}
    return fields
