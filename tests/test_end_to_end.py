"""End to end, as an operator and a user meet the product: render a library the shipped model never
saw, index it with the CLI, start `vidsearch serve` on a free loopback port, and search it over HTTP.

The library is a synthetic corpus with a seed the shipped model was not trained on (it trained on seed
7), and the queries are its held-out phrasings ("a deep beep rings out as a green box drifts
upward"), so a pass means the model generalises, not that it remembers. Only events whose caption
has no spoken or on-screen words are asked for, so the trained frame/audio towers answer rather than
the speech or OCR channel, and only events that no other video of the library repeats (same look and
sound), so exactly one video is right.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from api_fixtures import ServerProcess, free_port
from vidsearch.client import VidsearchClient
from vidsearch.search.moments import temporal_iou

N_VIDEOS = 8  # unseen_synth_corpus (conftest): seed 11, where the shipped model trained on seed 7


def _vidsearch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vidsearch.cli", *args], capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def indexed_library(tmp_path_factory, unseen_synth_corpus) -> tuple[Path, Path, list[dict]]:
    corpus = unseen_synth_corpus
    db = tmp_path_factory.mktemp("e2e") / "db"
    done = _vidsearch("index", str(corpus / "videos"), "--db", str(db), "--model", "tiny", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary["indexed"] == N_VIDEOS and summary["failed"] == 0, summary
    events = [json.loads(line) for line in (corpus / "events.jsonl").read_text().splitlines()]
    return corpus, db, events


def _askable(events: list[dict]) -> list[dict]:
    """Events with no words to read or hear whose look and sound no other video of the library repeats."""
    key = lambda e: (e["colour"], e["shape"], e["motion"], e["sound"], e["background"])  # noqa: E731
    videos_with = Counter(k for k, _ in {(key(e), e["video"]) for e in events})
    return [e for e in events if not e["spoken"] and not e["onscreen"] and videos_with[key(e)] == 1]


def _words_said_or_shown(events: list[dict]) -> dict[str, set[str]]:
    """Each on-screen word and spoken phrase of the library, with the videos that show or say it."""
    out: dict[str, set[str]] = {}
    for e in events:
        for text in (e["spoken"], e["onscreen"]):
            if text:
                out.setdefault(text, set()).add(e["video"])
    return out


@pytest.mark.slow
def test_caption_search_over_http_finds_the_video_and_the_moment(indexed_library, tmp_path):
    corpus, db, events = indexed_library
    asked = _askable(events)
    assert len(asked) >= 8, "the library should offer enough unambiguous events"
    port = free_port()
    command = [sys.executable, "-m", "vidsearch.cli", "serve", "--db", str(db), "--model", "tiny", "--host", "127.0.0.1", "--port", str(port),
               "--library-root", str(corpus)]  # fmt: skip
    env = {**os.environ, "VIDSEARCH_REFRESH_SECONDS": "0.5", "VIDSEARCH_HEADER_TIMEOUT": "2"}
    with ServerProcess("vidsearch serve", command, f"http://127.0.0.1:{port}", "/readyz", tmp_path / "serve.log", env=env, timeout=120) as server:
        # a client that never finishes its request's headers is closed (server/connections.py), not held
        with socket.create_connection(("127.0.0.1", port), timeout=10) as stalled:
            stalled.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\n")
            opened = time.monotonic()
            answer = stalled.recv(1024)  # a 408 (part of a request arrived), then the close
            assert answer.startswith(b"HTTP/1.1 408 ") and time.monotonic() - opened < 8, answer  # 2 s, up to 4 with the bytes sent
            assert stalled.recv(1024) == b""
        outcomes = []
        with VidsearchClient(server.url) as client:
            uri_of = {v.id: v.uri for v in client.videos().videos}  # relative to the library root: no key
            assert len(uri_of) == N_VIDEOS
            for e in asked:
                query = e["captions"]["test"]
                top = client.search(query, top_k=5, min_relevance=0).results[0]  # the ranking, whatever its relevance
                first_right = (corpus / uri_of[top.video.id]).resolve() == (corpus / e["video"]).resolve()
                best = float(temporal_iou([[m.start, m.end] for m in top.moments[:1]], [[e["start"], e["end"]]]).max(initial=0.0))
                outcomes.append((query, first_right, best))
            # the shipped model's calibration: what the library does not hold finds nothing, and says so.
            # Nonsense never; of a dozen unrelated subjects at most one may pass the threshold (a
            # probability of ~10% per absent query is what the calibration promises, not zero: a model
            # trained on 2026-12-05 with the shape negative alone read "a cat playing the piano" at 16%
            # on this library, clapping and notes being near "playing" and "piano", against a threshold
            # of 14%; the shipped one reads it 10%)
            resp = client.search("blorft quazzle snorp vintle", top_k=5)
            assert resp.results == [] and "well enough" in resp.message and resp.min_relevance is not None, resp.message
            unrelated = ("a cat playing the piano", "a chef cooks pasta in a kitchen", "a dog barking at the mailman",
                         "fireworks over a city at night", "a man riding a bicycle", "waves crashing on a beach",
                         "a car driving on a highway", "children playing football", "a woman singing on a stage",
                         "a plane landing at an airport", "snow falling on a forest", "a baby laughing")  # fmt: skip
            answered = {}
            for absent in unrelated:
                resp = client.search(absent, top_k=5)
                if resp.results:
                    answered[absent] = resp.results[0].relevance
                else:
                    assert "well enough" in resp.message and resp.min_relevance is not None, resp.message
            assert len(answered) <= 1 and all(r < 0.5 for r in answered.values()), answered  # never a "good" match
            # what only the speech or OCR channel answers is found with the default threshold, not hidden
            words = _words_said_or_shown(events)
            found = {}
            for text, videos in words.items():
                results = client.search(text, top_k=3).results
                found[text] = bool(results) and (corpus / uri_of[results[0].video.id]).resolve() in {(corpus / v).resolve() for v in videos}
                assert not results or found[text], f"{text!r}: first result {results[0].video.id} holds none of {videos}"

    hits = [o for o in outcomes if o[1] and o[2] >= 0.5]
    first = [o for o in outcomes if o[1]]
    report = "\n".join(f"{'ok ' if o in hits else 'MISS'} right_video={o[1]} iou={o[2]:.2f} {o[0]}" for o in outcomes)
    print(f"\n{len(first)}/{len(outcomes)} right video first, {len(hits)}/{len(outcomes)} also with a moment of IoU >= 0.5\n{report}")
    # The shipped calibration (fitted with speech and OCR on) measured all 7 found first here, the
    # weakest "please open the door" at 17% (ASR heard "please open the bullet"); the one fitted with
    # them off found none (relevance ~0 for a text-only match). The bar leaves two to ASR/OCR noise.
    assert len(words) >= 6 and sum(found.values()) >= len(words) - 2, found
    # the bar: a caption's video comes first, with a moment of IoU >= 0.5 on the event
    assert hits, report
    # and not by luck. Chance: the right video first 1/8, and then a moment of IoU >= 0.5 about one
    # time in three, ~4% together: 4 or more such hits of 15 happen by chance 0.3% of the time
    # (binomial tail). The shipped model with the motion channel measured 13/15 right first, 9 with the
    # moment (14/15 and 10 before the channel and its calibration; the model before it 13/15 and 10;
    # round 3 12/15 and 9; round 2, without direction, 5/15 and 5/15; the round-1 model 8/15 and 5/15):
    # the bar is above
    # what the models without direction reached and leaves three queries to flip on another CPU's
    # bf16 arithmetic.
    assert len(hits) >= 6, report
