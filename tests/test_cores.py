"""Cores this process may use (vidsearch/cores.py): affinity capped by a cgroup CPU quota, or
VIDSEARCH_CORES; the thread and process counts of decoding, OCR, Whisper and search follow it."""

from __future__ import annotations

import pytest

from vidsearch import cores


def _cgroup(tmp_path, v2: str | None = None, v1: tuple[str, str] | None = None):
    if v2 is not None:
        (tmp_path / "cpu.max").write_text(v2 + "\n")
    if v1 is not None:
        (tmp_path / "cpu").mkdir()
        (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text(v1[0] + "\n")
        (tmp_path / "cpu" / "cpu.cfs_period_us").write_text(v1[1] + "\n")
    return tmp_path


@pytest.mark.parametrize(
    ("v2", "v1", "quota"),
    [("200000 100000", None, 2.0), ("150000 100000", None, 1.5), ("max 100000", None, None),
     (None, ("50000", "100000"), 0.5), (None, ("-1", "100000"), None), (None, None, None)],
)  # fmt: skip
def test_the_cgroup_quota_is_read_from_v2_or_v1(tmp_path, v2, v1, quota):
    assert cores._quota(_cgroup(tmp_path, v2, v1)) == quota


def test_a_container_quota_caps_the_affinity(monkeypatch):
    monkeypatch.delenv("VIDSEARCH_CORES", raising=False)
    monkeypatch.setattr(cores.os, "sched_getaffinity", lambda _pid: set(range(64)))
    for quota, expected in ((1.5, 2), (0.5, 1), (None, 64), (128.0, 64)):
        monkeypatch.setattr(cores, "_quota", lambda q=quota: q)
        cores._detected.cache_clear()
        assert cores.usable_cores() == expected, quota
    cores._detected.cache_clear()


def test_the_operator_can_say_how_many(monkeypatch):
    from vidsearch.indexer.worker import default_decode_workers

    monkeypatch.setenv("VIDSEARCH_CORES", "3")
    assert cores.usable_cores() == 3 and default_decode_workers() == 3
    monkeypatch.setenv("VIDSEARCH_CORES", "16")
    assert default_decode_workers() == 4  # at most four decoders, whatever the cores
    monkeypatch.setenv("VIDSEARCH_CORES", "two")
    with pytest.raises(ValueError, match="VIDSEARCH_CORES"):
        cores.usable_cores()
