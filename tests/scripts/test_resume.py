"""claude-session resume: an ended session runs again in its own directory
(and where it was started), so the client's --continue finds its work."""
import json
import os
import shutil
import subprocess

import pytest

from conftest import start_time, wait_for
from test_launcher import history_lines


def launch_in(env, cwd, *args, **extra):
    return subprocess.run([env.launcher] + list(args), env=env.environ(**extra), cwd=cwd,
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=60)


@pytest.fixture
def ended(env):
    """An ended session named "work", started in <tmp>/project; returns (id, that dir)."""
    project = os.path.join(env.tmp, "project")
    os.makedirs(project)
    r = launch_in(env, project, "--name", "work", STUB_EXIT=3)
    assert r.returncode == 3, r.stderr
    (sid,) = env.session_ids()
    return sid, project


@pytest.mark.parametrize("by", ["id", "name"])
def test_resume_runs_the_client_again_in_the_same_dir_and_cwd(env, ended, by):
    sid, project = ended
    before = env.read_registry()["sessions"][sid]
    elsewhere = os.path.join(env.tmp, "elsewhere")
    os.makedirs(elsewhere)
    go = os.path.join(env.tmp, "go")
    proc = subprocess.Popen([env.launcher, "resume", sid if by == "id" else "work"],
                            env=env.environ(STUB_WAIT=go, STUB_EXIT=5), cwd=elsewhere,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    env.procs.append(proc)
    wait_for(lambda: len(history_lines(env.sdir(sid))) == 2, what="the resumed client")
    entry = env.read_registry()["sessions"][sid]
    assert (entry["status"], entry["ended"], entry["exit_code"], entry["pid"]) == \
        ("active", None, None, proc.pid)
    assert entry["pid_start"] == start_time(proc.pid)
    assert entry["resumed"]["count"] == 1 and entry["resumed"]["last"].endswith("Z")
    assert (entry["started"], entry["name"], entry["cwd"]) == (before["started"], "work", project)
    assert os.path.realpath(os.path.join(env.active, sid)) == os.path.realpath(env.sdir(sid))
    assert env.list_json()[sid]["state"] == "active"
    open(go, "w").close()
    assert proc.wait(timeout=20) == 5
    assert env.session_ids() == [sid]                        # no new session
    first, second = history_lines(env.sdir(sid))
    assert second["config_dir"] == first["config_dir"] == env.sdir(sid)
    assert second["store"] == env.claude_home
    assert second["cwd"] == project                           # where it was started, not where resumed
    assert second["args"] == ["--continue"]
    entry = env.read_registry()["sessions"][sid]
    assert (entry["status"], entry["exit_code"]) == ("ended", 5)
    assert not os.path.lexists(os.path.join(env.active, sid))


def test_resume_passes_the_given_client_args_and_counts(env, ended):
    sid, _project = ended
    assert env.run("resume", "work", "--", "--resume", "abc").returncode == 0
    assert env.run("resume", sid, "-p", "go on").returncode == 0
    lines = history_lines(env.sdir(sid))
    assert [line["args"] for line in lines[1:]] == [["--resume", "abc"], ["-p", "go on"]]
    assert env.read_registry()["sessions"][sid]["resumed"]["count"] == 2


def test_resume_whose_cwd_is_gone_starts_where_it_is_called(env, ended):
    sid, project = ended
    shutil.rmtree(project)
    here = os.path.join(env.tmp, "here")
    os.makedirs(here)
    r = launch_in(env, here, "resume", sid)
    assert r.returncode == 0, r.stderr
    assert b"is gone" in r.stderr
    assert history_lines(env.sdir(sid))[-1]["cwd"] == here


def test_resume_of_an_entry_without_cwd_from_an_older_launcher(env):
    sid = env.make_session(history=b"")
    here = os.path.join(env.tmp, "here")
    os.makedirs(here)
    r = launch_in(env, here, "resume", sid)
    assert r.returncode == 0, r.stderr
    assert history_lines(env.sdir(sid))[-1]["cwd"] == here
    entry = env.read_registry()["sessions"][sid]
    assert entry["resumed"]["count"] == 1 and "cwd" not in entry


def test_resume_of_a_live_session_exits_75(env):
    sid = env.make_session(history=b"x\n", status="active", pid=os.getpid(),
                           pid_start=start_time(os.getpid()))
    before = env.read_registry()
    r = env.run("resume", sid)
    assert r.returncode == 75
    assert b"still running" in r.stderr and r.stdout == b""
    assert env.read_registry() == before


def test_resume_of_a_session_whose_client_outlived_its_launcher_exits_75(env, ended):
    sid, _project = ended
    client = subprocess.Popen(["sleep", "30"], env=dict(os.environ, CLAUDE_CONFIG_DIR=env.sdir(sid)))
    try:
        wait_for(lambda: b"sleep" in open("/proc/%d/cmdline" % client.pid, "rb").read())
        r = env.run("resume", sid)
        assert r.returncode == 75 and b"still in use" in r.stderr
        assert env.read_registry()["sessions"][sid]["status"] == "ended"
    finally:
        client.kill()
        client.wait()
    assert env.run("resume", sid).returncode == 0


def test_resume_of_a_crashed_session_is_allowed(env):
    sid = env.make_session(history=b"x\n", status="active")     # its launcher is dead
    assert env.run("resume", sid).returncode == 0


@pytest.mark.parametrize("target", ["no-such-name", "0b9c6a34-3e6a-4d3c-9f57-0d6d1f0c2a11"])
def test_resume_of_an_unknown_session_exits_64_with_the_hint(env, ended, target):
    r = env.run("resume", target)
    assert r.returncode == 64
    assert b"see claude-session list" in r.stderr
    assert len(history_lines(env.sdir(ended[0]))) == 1


def test_resume_of_an_ambiguous_name_exits_64_naming_the_ids(env):
    a = env.make_session(history=b"x\n")
    b = env.make_session(history=b"x\n")
    reg = env.read_registry()
    for sid in (a, b):
        reg["sessions"][sid]["name"] = "twin"
    env.write_registry(reg["sessions"])
    r = env.run("resume", "twin")
    assert r.returncode == 64
    assert a.encode() in r.stderr and b.encode() in r.stderr and b"see claude-session list" in r.stderr
    assert env.run("resume", a).returncode == 0                   # the id still works


def test_resume_of_a_session_whose_dir_is_gone_exits_64(env, ended):
    sid, _project = ended
    shutil.rmtree(env.sdir(sid))
    r = env.run("resume", sid)
    assert r.returncode == 64 and b"no directory" in r.stderr
    assert not os.path.exists(env.sdir(sid))


def test_resume_obeys_the_capacity_guard(env, ended):
    sid, _project = ended
    env.write_conf("max_sessions=1\n")
    env.make_session(history=b"x\n", status="active", pid=os.getpid(), pid_start=start_time(os.getpid()))
    r = env.run("resume", sid)
    assert r.returncode == 75 and b"max_sessions=1" in r.stderr
    assert env.read_registry()["sessions"][sid]["status"] == "ended"
    assert env.run("resume", sid, "--force").returncode == 0


def test_resume_help(env):
    r = env.run("resume", "--help")
    assert r.returncode == 0 and b"resume ID|NAME" in r.stdout


@pytest.mark.parametrize("args", [["resume"], ["resume", ""], ["resume", "work", "--name", "x"],
                                  ["resume", "--force", "work"]])
def test_resume_usage_errors_exit_64(env, ended, args):
    r = env.run(*args)
    assert r.returncode == 64 and b"usage:" in r.stderr


def test_resume_removes_an_older_launchers_credentials_link(env):
    store = os.path.join(env.claude_home, ".credentials.json")
    with open(store, "w") as f:
        json.dump({"claudeAiOauth": {"accessToken": "t"}}, f)
    sid = env.make_session(history=b"x\n")
    os.symlink(store, os.path.join(env.sdir(sid), ".credentials.json"))
    assert env.run("resume", sid).returncode == 0
    assert not os.path.lexists(os.path.join(env.sdir(sid), ".credentials.json"))
    assert os.path.isfile(store)


def test_resume_seeds_a_missing_claude_json_but_keeps_an_existing_one(env, ended):
    sid, _project = ended
    with open(os.path.join(env.home, ".claude.json"), "w") as f:
        json.dump({"hasCompletedOnboarding": True, "theme": "user"}, f)
    own = os.path.join(env.sdir(sid), ".claude.json")
    assert not os.path.exists(own)             # seeded from nothing at first
    assert env.run("resume", sid).returncode == 0
    with open(own) as f:
        assert json.load(f)["theme"] == "user"
    with open(own, "w") as f:
        json.dump({"theme": "the session's own"}, f)
    assert env.run("resume", sid).returncode == 0
    with open(own) as f:
        assert json.load(f)["theme"] == "the session's own"


def test_an_older_registry_without_cwd_and_resumed_stays_readable(env):
    sid = env.make_session(history=b"x\n")
    reg = env.read_registry()
    assert "cwd" not in reg["sessions"][sid] and "resumed" not in reg["sessions"][sid]
    assert env.list_json()[sid]["cwd"] is None
    assert env.clean_json()["kept"] == [{"id": sid, "dir": env.sdir(sid), "reason": "has-history"}]


@pytest.mark.parametrize("value", [3, {"count": "1", "last": "x"}, {"count": 1}])
def test_a_wrong_resumed_field_makes_the_registry_unreadable(env, value):
    sid = env.make_session(history=b"x\n")
    reg = env.read_registry()
    reg["sessions"][sid]["resumed"] = value
    env.write_registry(reg["sessions"])
    r = env.tool("claude-session-list")
    assert r.returncode == 2 and b"resumed" in r.stderr
