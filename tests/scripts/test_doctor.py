"""Unit tests of csdeploy doctor's judgements (src/remote/doctor.py): the
thresholds its items apply, with the inputs faked that a real host cannot
be made to show on demand (a skewed clock, a small memory). The real-sshd
suite (tests/it/day2.rs) runs it whole on hosts."""
import time

import pytest


@pytest.mark.parametrize("skew, status", [(0, "pass"), (4, "pass"), (-4, "pass"), (10, "warn"),
                                          (-10, "warn"), (61, "fail"), (-3600, "fail")])
def test_clock_skew_thresholds(doctor, skew, status):
    item = doctor.check_clock(time.time() - skew)
    assert item["status"] == status, item
    assert item["expected"] == "within 5 s"
    if status != "pass":
        assert "NTP" in item["detail"]


GIB = 1024 ** 3


@pytest.mark.parametrize("available, limit, usage, status, fit", [
    (8 * GIB, None, None, "pass", 16),
    (8 * GIB, GIB, 0, "warn", 2),           # the cgroup allows two
    (8 * GIB, 2 * GIB, 2 * GIB - 1, "fail", 0),  # its limit is used up
    (GIB // 4, None, None, "fail", 0),
])
def test_memory_counts_the_sessions_that_fit(doctor, monkeypatch, available, limit, usage,
                                              status, fit):
    monkeypatch.setattr(doctor, "meminfo", lambda: {"MemAvailable": available})
    cgroup = None if limit is None else (limit, "cgroup v2 memory.max of /test", usage)
    monkeypatch.setattr(doctor, "cgroup_memory_limit", lambda: cgroup)
    item = doctor.check_memory(4)
    assert item["status"] == status, item
    assert item["actual"].endswith("%d sessions fit" % fit), item
    if status == "warn":
        assert "lower max_sessions to %d" % fit in item["detail"]


def test_sshd_max_sessions_unknown_is_a_warning(doctor, monkeypatch):
    monkeypatch.setattr(doctor, "sshd_max_sessions", lambda: (None, "unreadable"))
    assert doctor.check_sshd(4)["status"] == "warn"
    assert doctor.check_sshd(4)["actual"] == "unknown"
    monkeypatch.setattr(doctor, "sshd_max_sessions", lambda: (2, "sshd -T"))
    assert doctor.check_sshd(4)["status"] == "warn"
    monkeypatch.setattr(doctor, "sshd_max_sessions", lambda: (10, "sshd -T"))
    assert doctor.check_sshd(4)["status"] == "pass"


def test_every_item_says_how_to_fix_what_is_not_a_pass(doctor, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(doctor, "claude_candidates", lambda home: iter(()))
    result = doctor.run({"claude_home": "~/.claude", "max_sessions": 4,
                         "controller_time": time.time()})
    assert result["ok"] is True
    ids = [c["id"] for c in result["checks"]]
    assert ids == ["python3", "bash", "coreutils", "flock", "claude", "memory", "disk",
                   "local_bin_on_path", "sshd_max_sessions", "clock_skew"]
    for item in result["checks"]:
        assert set(item) == {"id", "status", "expected", "actual", "detail", "duration_ms"}
        if item["status"] != "pass":
            assert item["detail"], item
    by_id = {c["id"]: c for c in result["checks"]}
    assert by_id["bash"]["status"] == "fail"  # not on this PATH
    assert by_id["claude"]["status"] == "fail"
