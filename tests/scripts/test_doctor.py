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


def test_the_deployed_launchers_answer_about_the_client_is_final(doctor, tmp_path, monkeypatch):
    """A client the launcher does not find is one no session runs: the doctor
    must not pass it because its own search finds one elsewhere."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("CLAUDE_BIN", raising=False)
    elsewhere = tmp_path / "opt" / "claude"
    elsewhere.parent.mkdir()
    elsewhere.write_text("#!/bin/sh\necho '2.1.337 (Claude Code)'\n")
    elsewhere.chmod(0o755)
    monkeypatch.setattr(doctor, "claude_candidates", lambda home: iter([str(elsewhere)]))
    bindir = tmp_path / ".claude" / "bin"
    bindir.mkdir(parents=True)
    launcher = bindir / "claude-session"
    launcher.write_text("#!/bin/sh\necho 'no Claude Code client found; looked at: ...' >&2\nexit 127\n")
    launcher.chmod(0o755)
    result = doctor.check_claude("~/.claude")
    assert result["status"] == "fail", result
    assert "the deployed launcher finds none: no Claude Code client found" in result["actual"]

    # Not deployed: the doctor searches where the launcher would.
    launcher.unlink()
    result = doctor.check_claude("~/.claude")
    assert result["status"] == "pass" and "found by search" in result["actual"], result


def test_the_search_follows_the_launchers_order(doctor, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("NPM_CONFIG_PREFIX", raising=False)
    monkeypatch.delenv("CLAUDE_BIN", raising=False)
    home = str(tmp_path)
    assert list(doctor.claude_candidates("~/.claude")) == [
        None, home + "/.local/bin/claude", home + "/.claude/local/claude",
        home + "/.npm-global/bin/claude", "/usr/local/bin/claude"]
    # The launcher's own list, from the deployed registry helper: the same.
    import types

    import session_registry as sr

    config = types.SimpleNamespace(claude_home=home + "/.claude")

    def found(paths):
        return [p for p in paths if p]

    assert found(p for _, p in sr.client_candidates(config)) == found(doctor.claude_candidates("~/.claude"))
    monkeypatch.setenv("CLAUDE_BIN", "/opt/claude")
    assert list(doctor.claude_candidates("~/.claude")) == ["/opt/claude"]
    assert [path for _, path in sr.client_candidates(config)] == ["/opt/claude"]
