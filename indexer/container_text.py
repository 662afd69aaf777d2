"""Text a video file carries in its own container: its tags and its named chapters.

Downloaded and edited videos describe themselves: yt-dlp writes the title, the uploader and the
description into the file's tags, editors and phones a title or a comment, and a film's or a
recording's MKV/MP4 chapters name its parts ("Kilimanjaro summit"). Nothing else knows these words
(the file name rarely holds them), so they become `metadata` spans: the tags cover the whole video,
as a manifest's text does, and each chapter covers its own stretch, so a query naming a chapter
finds the video and the moment. Tags that are no words anyone searches by (the muxer's `encoder`,
brands, dates, URLs, a phone's model or an app's id in `comment`) are left out.
"""

from __future__ import annotations

import re

from vidsearch.encoders.sentence import TextSpan

from .probe import ProbeResult
from .sidecar import metadata_spans

__all__ = ["container_spans"]

# tag keys (lower case) by what they say: ffprobe reports MP4's ©nam as `title`, MKV's TITLE as `TITLE`
TITLE_TAGS = ("title", "show", "episode_id")
DESCRIPTION_TAGS = ("description", "synopsis", "comment")
TAG_TAGS = ("keywords", "genre", "artist", "album_artist")
# values written by tools, not people: muxers, encoders, cameras' and phones' stock titles
_MACHINE = re.compile(r"^(?:lav[fc]\d|lavf|isom|mp4[12]|gopro|dji|core media|handbrake|x26[45]|mainconcept|"
                      r"sony|canon|nikon|panasonic|android|iphone|apple|samsung|vid:|video handler)", re.IGNORECASE)  # fmt: skip


def _is_words(text: str) -> bool:
    """Whether a tag value is text a person wrote: a word of three letters or more, not a bare URL, an
    id or a tool's stock string."""
    text = text.strip()
    return (bool(re.search(r"[^\W\d_]{3,}", text)) and not _MACHINE.match(text)
            and not re.fullmatch(r"\S*://\S*|[\w:+/=.-]{24,}", text))  # fmt: skip


def container_spans(info: ProbeResult, file_title: str | None, duration: float | None) -> list[TextSpan]:
    """`metadata` spans from the file's own tags and named chapters (`file_title`: the title the video
    already has, not repeated)."""
    tags = dict(info.tags)
    shown = " ".join((file_title or "").split()).casefold()

    def words(keys: tuple[str, ...]) -> list[str]:
        found = [" ".join(tags[k].split()) for k in keys if k in tags and _is_words(tags[k])]
        return [t for t in dict.fromkeys(found) if t.casefold() != shown]

    spans: list[TextSpan] = []
    for title in words(TITLE_TAGS):
        spans += metadata_spans(title, None, duration)
    for text in words(DESCRIPTION_TAGS):
        spans += metadata_spans(None, {"description": text}, duration)
    keywords = words(TAG_TAGS)
    if keywords:
        spans += metadata_spans(None, {"tags": keywords}, duration)
    spans += [TextSpan("metadata", start, end, title) for start, end, title in info.chapters]
    return spans
