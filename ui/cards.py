"""One search result as a card: title and score, per-channel badges, a strip of thumbnails at the
moments (each a button that plays from there), the matching spoken or on-screen text with the query's
words marked, and — for the card being played — the player at the moment with the match
timeline under it.

Cards are keyed by rank (`card-0`, `card-1`...), which also gives each one a stable CSS class
(`st-key-card-0`) that the browser test finds it by.
"""

from __future__ import annotations

import hashlib
import math
import re
from functools import partial

import streamlit as st

from vidsearch.api_models import SearchResult

from . import cache
from .backend import Backend, BackendError
from .highlight import highlight_html, snippet
from .takeaway import render_takeaway
from .timeline import seek_target, timeline_chart

PLAY = "play"  # session key: which card plays what, from when
LIKE = "like"  # session key: the moment "more like this" searches from (ui/query_inputs.py)
# Material icons, not emoji: Streamlit ships their font, so they render on machines without emoji fonts
CHANNEL_STYLE = {
    "visual": ("blue", ":material/movie:"),
    "audio": ("violet", ":material/graphic_eq:"),
    "speech": ("green", ":material/record_voice_over:"),
    "ocr": ("orange", ":material/text_fields:"),
    "subtitle": ("gray", ":material/subtitles:"),
    "metadata": ("red", ":material/sell:"),
}
SOURCE_LABEL = {"speech": "said", "ocr": "on screen", "subtitle": "subtitle", "metadata": "metadata"}


def fmt_time(seconds: float) -> str:
    """0:03.5, 12:05.0, 1:02:03: short, and unambiguous at any video length."""
    seconds = max(0.0, float(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours >= 1:
        return f"{int(hours)}:{int(minutes):02d}:{int(secs):02d}"
    return f"{int(minutes)}:{secs:04.1f}"


def md_escape(text: str) -> str:
    """Titles and metadata come from users' files: keep markdown from interpreting them. Streamlit reads
    `:material/home:` icons and `:smile:` emoji shortcodes through a backslash before the colon (a title
    showed a house), so a colon before a word also gets an invisible word joiner (U+2060) after it."""
    text = re.sub(r":(?=[A-Za-z0-9_+-])", ":\u2060", text)
    for ch in "\\`*_{}[]()#+-.!|<>$~:":
        text = text.replace(ch, "\\" + ch)
    return text


def player_start(t: float, duration: float) -> int:
    """Where the player starts for a moment at `t`. Streamlit seeks in whole seconds only (its
    `start_time` is an integer, and the player sets it again once the file loads, so a `#t=` media
    fragment cannot refine it): the second *before* the moment, so its first words are heard (the
    nearest second started up to half a second late, cutting them off), and never past the end.
    A time that is not a number (a hand-edited link) starts at the beginning."""
    end = int(math.floor(duration)) if math.isfinite(duration) and duration > 0 else 0
    if math.isnan(t) or t <= 0:
        return 0
    return end if math.isinf(t) else min(int(math.floor(t)), end)


def play_label(t: float) -> str:
    """A play button's label, which is also its accessible name: words, not an icon (Streamlit's
    icons are font ligatures, so a screen reader read "play_arrow 0:01.6")."""
    return f"Play {fmt_time(t)}"


def relevance_text(result: SearchResult) -> str:
    """Relevance as people read it ("87% · strong match"). A search with no calibrated relevance (a
    picture or a moment alone, a model without a calibration) says so: its rank-fusion score ("score
    0.0164", 1/61 for any first result) orders results but read as a figure about the match."""
    if result.relevance is None:
        return ":gray[**ranked by match · no relevance figure for this search**]"
    color = {"strong": "green", "good": "blue"}.get(result.relevance_label or "", "gray")
    return f":{color}[**{result.relevance:.0%} · {result.relevance_label} match**]"


def badges(result: SearchResult) -> str:
    """The relevance, then the channels the match came from, strongest first. Their scores are each
    channel's own scale (a cosine, a text rank): printed beside the percentage they read as a third
    scale ("visual 1.221" by "29%"), so they only order the badges."""
    parts = [relevance_text(result)]
    for name, _ in sorted(result.channel_scores.items(), key=lambda kv: -abs(kv[1])):
        color, icon = CHANNEL_STYLE.get(name, ("gray", ":material/search:"))
        parts.append(f":{color}-badge[{icon} {md_escape(name)}]")
    return " ".join(parts)


def meta_line(result: SearchResult) -> str:
    v = result.video
    bits = [fmt_time(v.duration)]
    if v.width and v.height:
        bits.append(f"{v.width}×{v.height}")
    for k, val in list((v.metadata or {}).items())[:4]:
        bits.append(f"{md_escape(str(k))}: {md_escape(str(val))}")
    return " · ".join(bits)


def play(card: int, video_id: str, t: float, request_key: str) -> None:
    """A moment (or span, or timeline point) was chosen: play that card's video from `t`. `n` counts the
    times in a row the same second was chosen on the card (`replay_start`)."""
    before = st.session_state.get(PLAY) or {}
    same = before.get("card") == card and before.get("video") == video_id and int(before.get("t", -1)) == int(t)
    st.session_state[PLAY] = {"key": request_key, "card": card, "video": video_id, "t": float(t), "auto": True,
                              "n": before.get("n", 0) + 1 if same else 0}  # fmt: skip


def replay_start(start: int, n: int) -> int:
    """The player's start for the `n`-th choice in a row of the same second. Streamlit seeks only when
    `start_time` changes, so choosing a moment again once it had played (or after dragging the player
    elsewhere) did nothing: every other choice starts a second earlier, which is a change (a moment
    in the video's first second cannot move earlier and stays where the player is)."""
    return start - 1 if n % 2 and start > 0 else start


def _on_seek(chart_key: str, card: int, result: SearchResult, request_key: str) -> None:
    t = seek_target(st.session_state.get(chart_key), result)
    if t is not None:
        play(card, result.video.id, t, request_key)


def render_card(
    be: Backend,
    rank: int,
    result: SearchResult,
    query: str,
    thumbs: list[str | None],
    playing: dict | None,
    request_key: str,
) -> None:
    v = result.video
    is_playing = playing is not None and playing["card"] == rank and playing["video"] == v.id
    with st.container(border=True, key=f"card-{rank}"):
        # the played card puts the player beside its moments, so a whole result fits on one screen
        info, side = st.columns([1, 1], gap="medium") if is_playing else (st.container(), None)
        with info:
            st.subheader(f"{rank + 1}. {md_escape(v.title)}", anchor=False)
            st.markdown(badges(result))
            st.caption(meta_line(result))
            _moment_strip(rank, result, thumbs, playing, request_key)
            _more_like_button(rank, result)
            _spans(rank, result, query, request_key, narrow=is_playing)
        if side is not None:
            with side:
                _player(be, rank, result, playing, request_key)


def _moment_strip(rank: int, result: SearchResult, thumbs: list[str | None], playing: dict | None, request_key: str) -> None:
    if not result.moments:
        return
    cols = st.columns(max(len(result.moments), 4))
    for i, m in enumerate(result.moments):
        current = playing is not None and playing["card"] == rank and abs(playing["t"] - m.start) < 1e-6
        with cols[i]:
            thumb = thumbs[i] if i < len(thumbs) else None
            span = f"{fmt_time(m.start)}–{fmt_time(m.end)}"
            if thumb:
                best = m.best if m.best is not None else m.start
                st.image(thumb, width="stretch", caption=span, alt=f"{result.video.title}: frame at {fmt_time(best)}")
            else:
                st.caption(f"{span} (no frame)")
            st.button(
                play_label(m.start),
                key=f"moment-{rank}-{i}",
                help=f"play from {m.start:.1f} s" + (f" (relevance {m.relevance:.0%})" if m.relevance is not None else ""),
                on_click=play,
                args=(rank, result.video.id, m.start, request_key),
                type="primary" if current else "secondary",
                width="stretch",
            )


def _like(result: SearchResult) -> None:
    m = result.moments[0] if result.moments else None
    start, end = (m.start, m.end) if m else (0.0, result.video.duration)
    st.session_state[LIKE] = {"video_id": result.video.id, "start": start, "end": end, "title": result.video.title}


def _more_like_button(rank: int, result: SearchResult) -> None:
    """Search for moments of other videos like this card's best moment (its stored vectors)."""
    st.button("More like this", key=f"like-{rank}", on_click=_like, args=(result,),
              help="Find moments of other videos that look like this one (words in the box still count).")  # fmt: skip


def _spans(rank: int, result: SearchResult, query: str, request_key: str, narrow: bool = False) -> None:
    """The matched text; timed text (speech, on-screen, subtitles) gets a button that plays from it,
    metadata (title, fields) is about the whole video and gets none. `narrow`: the card shares its
    width with the player, and the button gets a wider share (an eighth of half a card clipped its
    time label)."""
    for j, span in enumerate(result.spans[:3]):
        label = SOURCE_LABEL.get(span.source, span.source)
        html = f'<div class="vs-span"><span class="vs-src">{label}</span> “{highlight_html(snippet(span.text, query), query)}”</div>'
        if span.source == "metadata":
            st.markdown(html, unsafe_allow_html=True)
            continue
        button, text = st.columns([2, 5] if narrow else [1, 7], vertical_alignment="center")
        button.button(
            play_label(span.start),
            key=f"span-{rank}-{j}",
            on_click=play,
            args=(rank, result.video.id, span.start, request_key),
            help=f"play from {span.start:.1f} s",
        )
        text.markdown(html, unsafe_allow_html=True)


def _player(be: Backend, rank: int, result: SearchResult, playing: dict, request_key: str) -> None:
    v = result.video
    box = st.container(key=f"player-{rank}")
    try:
        media, mimetype = cache.player_source(be, v)
    except BackendError as err:
        box.warning(f"{err.message} {err.hint or ''}")
    else:
        if media is None:
            box.warning(f"The file of this video is no longer at {v.uri}; reindex the library to drop or update it.")
        else:
            start = replay_start(player_start(playing["t"], v.duration), int(playing.get("n", 0)))
            box.video(media, format=mimetype, start_time=start, autoplay=bool(playing.get("auto")), alt=v.title)
    chart = timeline_chart(result, playing["t"])
    if chart is not None:
        key = f"timeline-{rank}-{v.id}"
        box.altair_chart(  # under the player
            chart,
            width="stretch",
            key=key,
            on_select=partial(_on_seek, key, rank, result, request_key),
            selection_mode=["seek"],
        )
        box.caption("How closely each part of the video matches the query (higher: closer, within this video; "
                    "the card's percentage is the relevance). Shaded: the moments. Click to play from there.")  # fmt: skip
    moment = next((m for m in result.moments if m.start <= playing["t"] <= m.end), result.moments[0] if result.moments else None)
    if moment is not None:
        with box:
            render_takeaway(be, takeaway_key(rank, v.id, moment.start, moment.end, request_key), v, moment.start, moment.end, playing["t"])


def takeaway_key(rank: int, video_id: str, start: float, end: float, request_key: str) -> str:
    """The take-away widgets' key for the moment being played: it names the moment and the search,
    so choosing another moment of the card, or a new search whose card at this rank is the same
    video, starts from that moment's bounds (Streamlit would keep the old bounds under an old key).
    Playing from a span or the timeline inside the same moment keeps the user's adjusted bounds."""
    digest = hashlib.sha256(f"{request_key}|{start:.3f}|{end:.3f}".encode()).hexdigest()[:10]
    return f"{rank}-{video_id}-{digest}"
