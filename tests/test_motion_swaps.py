"""The motion hard negative (encoders/motion_swaps.py)."""

from __future__ import annotations

import pytest

from vidsearch.encoders.motion_swaps import swap_motions


@pytest.mark.parametrize(
    "caption, expected",
    [
        ("a red orb slides to the left while a low tone sounds",
         ["a red orb moves right while a low tone sounds", "a red orb moves up while a low tone sounds",
          "a red orb moves down while a low tone sounds", "a red orb stays still while a low tone sounds"]),
        ("while a bass note hums, a blue tile heads toward the top",
         ["while a bass note hums, a blue tile moves left", "while a bass note hums, a blue tile moves right",
          "while a bass note hums, a blue tile moves down", "while a bass note hums, a blue tile stays still"]),
        ('a green star is stationary; someone says "go left"',
         ['a green star moves left; someone says "go left"', 'a green star moves right; someone says "go left"',
          'a green star moves up; someone says "go left"', 'a green star moves down; someone says "go left"']),
        ("the ball Sinks", ["the ball moves left", "the ball moves right", "the ball moves up", "the ball stays still"]),
        ("a star rises and falls", []),  # two motions: which one a swap is about is unclear
        ("a blue square on a plain background", []),
        ("someone says \u201cit moves left\u201d", []),
    ],
)  # fmt: skip
def test_swap_motions(caption, expected):
    assert swap_motions(caption) == expected


def test_every_training_phrasing_names_its_motion_once():
    """The synthetic corpus's training phrasing: every motion phrase is found, and read as its motion."""
    from vidsearch.lab.synth import TRAIN_PHRASING

    for motion, phrases in TRAIN_PHRASING.motions.items():
        for phrase in phrases:
            swapped = swap_motions(f"a red circle {phrase} with a low tone")
            assert len(swapped) == 4, phrase
            assert not any(f"red circle {p} with" in s for s in swapped for p in [{"left": "moves left", "right": "moves right",
                           "up": "moves up", "down": "moves down", "still": "stays still"}[motion]]), (phrase, swapped)  # fmt: skip
