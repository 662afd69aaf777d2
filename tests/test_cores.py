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
     (None, ("50000", "100000"), 0.5), (None, ("-1", "100000"), None), (None, None, None),
     ("100000 0", None, None), ("-1 100000", None, None), ("lots 100000", None, None)],
)  # fmt: skip
def test_the_cgroup_quota_is_read_from_v2_or_v1(tmp_path, v2, v1, quota):
    assert cores._quota(_cgroup(tmp_path, v2, v1), proc=tmp_path / "no-proc-file") == quota


def test_a_quota_on_the_processs_own_cgroup_or_above_counts(tmp_path):
    """A systemd unit's CPUQuota= (or a batch job's cgroup) sits below the mount: the tightest quota
    from the process's own cgroup up to the root binds it."""
    unit = tmp_path / "system.slice" / "vidsearch.service"
    unit.mkdir(parents=True)
    (unit / "cpu.max").write_text("250000 100000\n")
    (unit.parent / "cpu.max").write_text("150000 100000\n")
    proc = tmp_path / "proc-cgroup"
    proc.write_text("0::/system.slice/vidsearch.service\n")
    assert cores._quota(tmp_path, proc) == 1.5
    v1 = tmp_path / "v1"
    (v1 / "cpu" / "docker" / "abc").mkdir(parents=True)
    (v1 / "cpu" / "docker" / "abc" / "cpu.cfs_quota_us").write_text("300000\n")
    (v1 / "cpu" / "docker" / "abc" / "cpu.cfs_period_us").write_text("100000\n")
    proc.write_text("12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n")
    assert cores._quota(v1, proc) == 3.0
    proc.write_text("0::/\n")  # a container's own namespace: its limit is at the mount root
    assert cores._quota(tmp_path, proc) is None


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
    for bad in ("two", "0", "-3"):
        monkeypatch.setenv("VIDSEARCH_CORES", bad)
        with pytest.raises(ValueError, match="VIDSEARCH_CORES"):
            cores.usable_cores()
