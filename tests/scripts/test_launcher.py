"""claude-session: isolation, registry bookkeeping, capacity guard, inheritance,
signals, configuration."""
import fcntl
import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import time

import pytest

from conftest import start_time, wait_for

import session_registry as sr


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def history_lines(path):
    with open(os.path.join(path, "history.jsonl")) as f:
        return [json.loads(line) for line in f]


# ---------------------------------------------------------------- isolation

def test_fifty_parallel_launches_are_isolated(env):
    env.write_conf("max_sessions=0\n")
    os.makedirs(env.claude_home, exist_ok=True)
    default_history = os.path.join(env.claude_home, "history.jsonl")
    with open(default_history, "w") as f:
        f.write('{"display":"pre-existing","timestamp":1}\n')
    os.utime(default_history, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    before = (os.stat(default_history).st_size, os.stat(default_history).st_mtime_ns,
              sha256(default_history))
    go = os.path.join(env.tmp, "go")

    procs = [env.launch("--name", "p%d" % i, STUB_WAIT=go) for i in range(50)]
    # All 50 clients are running at the same time before any may finish.
    wait_for(lambda: sum(os.path.exists(os.path.join(env.sdir(s), "client.pid"))
                         for s in env.session_ids()) == 50
             or any(p.poll() is not None for p in procs), timeout=40, what="50 clients")
    assert [p.poll() for p in procs] == [None] * 50, "a launch failed early"
    assert len(os.listdir(env.active)) == 50
    assert sorted(r["state"] for r in env.list_json().values()) == ["active"] * 50
    open(go, "w").close()
    for p in procs:
        p.wait(timeout=40)
        assert p.returncode == 0, p.stderr.read().decode()

    ids = env.session_ids()
    assert len(ids) == 50
    inodes = set()
    for sid in ids:
        path = env.sdir(sid)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
        lines = history_lines(path)
        assert len(lines) == 1
        assert lines[0]["config_dir"] == path          # CLAUDE_CONFIG_DIR is the session dir
        assert lines[0]["session_dir_var"] is None     # the ignored variable is not used
        inodes.add(os.stat(os.path.join(path, "history.jsonl")).st_ino)
    assert len(inodes) == 50

    assert (os.stat(default_history).st_size, os.stat(default_history).st_mtime_ns,
            sha256(default_history)) == before
    assert stat.S_IMODE(os.stat(env.registry).st_mode) == 0o600
    sessions = env.read_registry()["sessions"]
    assert sorted(sessions) == ids
    assert {e["name"] for e in sessions.values()} == {"p%d" % i for i in range(50)}
    for e in sessions.values():
        assert e["status"] == "ended" and e["exit_code"] == 0 and e["ended"]
    assert os.listdir(env.active) == []


def test_stdout_carries_only_the_client_output(env):
    r = env.run("--name", "quiet", STUB_STDOUT="hello from client\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"hello from client\n"
    assert r.stderr == b""


def test_args_passed_through_and_exit_code_recorded(env):
    r = env.run("--name", "x", "--", "--name", "-p", "hi there", STUB_EXIT=7)
    assert r.returncode == 7
    (sid,) = env.session_ids()
    assert history_lines(env.sdir(sid))[0]["args"] == ["--name", "-p", "hi there"]
    entry = env.read_registry()["sessions"][sid]
    assert (entry["status"], entry["exit_code"], entry["name"]) == ("ended", 7, "x")
    assert entry["ended"] and entry["started"].endswith("Z")
    assert entry["pid"] > 0 and entry["pid_start"] > 0
    assert not os.path.lexists(os.path.join(env.active, sid))


def test_first_unknown_argument_starts_the_client_args(env):
    r = env.run("-p", "--force", STUB_EXIT=0)
    assert r.returncode == 0
    (sid,) = env.session_ids()
    assert history_lines(env.sdir(sid))[0]["args"] == ["-p", "--force"]


@pytest.mark.parametrize("args", [["--name"], ["--name", "bad\nname"], ["--name", "x" * 201]])
def test_usage_errors_exit_64_and_create_nothing(env, args):
    r = env.run(*args)
    assert r.returncode == 64
    assert r.stdout == b""
    assert env.session_ids() == []


def test_active_link_exists_while_client_runs(env):
    go = os.path.join(env.tmp, "go")
    p = env.launch(STUB_WAIT=go)
    sid = env.running_session(p)
    link = os.path.join(env.active, sid)
    assert os.path.islink(link) and os.path.realpath(link) == os.path.realpath(env.sdir(sid))
    assert env.read_registry()["sessions"][sid]["status"] == "active"
    assert env.list_json()[sid]["state"] == "active"
    open(go, "w").close()
    assert p.wait(timeout=20) == 0
    assert not os.path.lexists(link)
    assert env.list_json()[sid]["state"] == "ended"


# ---------------------------------------------------------------- capacity guard

def test_capacity_guard_refuses_with_75_and_force_overrides(env):
    env.write_conf("max_sessions=2\n")
    go = os.path.join(env.tmp, "go")
    running = [env.launch(STUB_WAIT=go) for _ in range(2)]
    known = []
    for p in running:
        known.append(env.running_session(p, known))

    r = env.run()
    assert r.returncode == 75
    assert r.stdout == b""
    msg = r.stderr.decode()
    assert "2 live sessions" in msg and "max_sessions=2" in msg and "--force" in msg
    assert env.session_ids() == sorted(known)          # the refused launch left nothing
    assert len(env.read_registry()["sessions"]) == 2

    forced = env.run("--force")
    assert forced.returncode == 0, forced.stderr
    assert len(env.session_ids()) == 3
    open(go, "w").close()
    assert [p.wait(timeout=20) for p in running] == [0, 0]
    assert env.run().returncode == 0                    # ended sessions no longer count


def test_capacity_guard_holds_for_concurrent_launches(env):
    env.write_conf("max_sessions=3\n")
    go = os.path.join(env.tmp, "go")
    # Hold the registry lock while the 20 launchers start, so they all reach
    # the guard at the same moment: a check made outside the lock would let
    # every one of them through.
    os.makedirs(env.active, exist_ok=True)
    lock = os.open(os.path.join(env.sessions, ".registry.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        procs = [env.launch(STUB_WAIT=go) for _ in range(20)]
        time.sleep(1.5)
    finally:
        os.close(lock)
    wait_for(lambda: sum(p.poll() is not None for p in procs) == 17, timeout=40,
             what="17 refused launches")
    assert sorted(p.returncode for p in procs if p.poll() is not None) == [75] * 17
    assert len(env.session_ids()) == 3
    open(go, "w").close()
    assert sorted(p.wait(timeout=20) for p in procs) == [0] * 3 + [75] * 17


def test_capacity_guard_ignores_dead_launchers(env):
    env.write_conf("max_sessions=1\n")
    # A launcher that died without closing its entry, and one whose pid was reused.
    env.make_session(history=b"x\n", status="active")
    env.make_session(history=b"x\n", status="active", pid=os.getpid(), pid_start=1)
    r = env.run()
    assert r.returncode == 0, r.stderr


# ---------------------------------------------------------------- inheritance

def _populate_claude_home(env, names):
    for name, content in names.items():
        path = os.path.join(env.claude_home, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(content)


DEFAULT_LINKS = ["settings.json", "CLAUDE.md", "agents", "commands", "skills", "output-styles",
                 "keybindings.json"]


def test_default_inherit_policy_links_user_config_and_shares_no_state(env):
    _populate_claude_home(env, {"settings.json": '{"theme":"dark"}', "CLAUDE.md": "# rules\n",
                                "agents/a.md": "a", "commands/c.md": "c", "skills/s/SKILL.md": "s",
                                "output-styles/o.md": "o", "keybindings.json": "[]",
                                "plugins/installed_plugins.json": "{}",
                                ".credentials.json": '{"token":"t"}', "history.jsonl": "old\n",
                                ".claude.json": "{}", "projects/p/x.jsonl": "{}\n"})
    r = env.run()
    assert r.returncode == 0, r.stderr
    assert r.stderr == b""
    (sid,) = env.session_ids()
    path = env.sdir(sid)
    for name in DEFAULT_LINKS:
        assert os.readlink(os.path.join(path, name)) == os.path.join(env.claude_home, name)
    # No credentials (the default store is used through the variable), no
    # plugins (the client writes into it), no shared state.
    assert sorted(os.listdir(path)) == sorted(DEFAULT_LINKS + ["client.pid", "history.jsonl"])
    assert len(history_lines(path)) == 1


def test_missing_inherit_sources_are_skipped_quietly(env):
    _populate_claude_home(env, {"settings.json": "{}"})
    r = env.run()
    assert r.returncode == 0
    assert r.stderr == b""
    (sid,) = env.session_ids()
    assert sorted(os.listdir(env.sdir(sid))) == ["client.pid", "history.jsonl", "settings.json"]


def test_custom_inherit_lists_from_session_conf(env):
    env.write_conf("# custom lists\ninherit_copy = notes.txt  tools\n"
                   "inherit_link=settings.json absent.json\n")
    _populate_claude_home(env, {"notes.txt": "n", "tools/a.sh": "a",
                                "settings.json": "{}", "CLAUDE.md": "not inherited",
                                ".credentials.json": "not inherited"})
    r = env.run()
    assert r.returncode == 0 and r.stderr == b"", r.stderr
    (sid,) = env.session_ids()
    path = env.sdir(sid)
    assert os.path.isfile(os.path.join(path, "notes.txt"))
    assert not os.path.islink(os.path.join(path, "notes.txt"))
    assert os.path.isfile(os.path.join(path, "tools", "a.sh"))
    assert not os.path.islink(os.path.join(path, "tools"))
    assert os.readlink(os.path.join(path, "settings.json")) == \
        os.path.join(env.claude_home, "settings.json")
    for name in ("CLAUDE.md", ".credentials.json", "absent.json"):
        assert not os.path.lexists(os.path.join(path, name))


def test_inherit_names_outside_claude_home_are_refused(env):
    env.write_conf("inherit_copy=../outside /etc/hostname . .. sub/deep.json\n"
                   "inherit_link=sub/../../outside ./settings.json\n")
    _populate_claude_home(env, {"sub/deep.json": "{}", "settings.json": "{}"})
    with open(os.path.join(env.home, "outside"), "w") as f:
        f.write("secret")
    r = env.run()
    assert r.returncode == 0
    assert r.stderr.count(b": ignoring") == 7, r.stderr
    assert r.stderr.count(b"directly in claude_home") == 7
    (sid,) = env.session_ids()
    assert sorted(os.listdir(env.sdir(sid))) == ["client.pid", "history.jsonl"]


def test_empty_inherit_lists_share_nothing(env):
    env.write_conf("inherit_copy=\ninherit_link=\n")
    _populate_claude_home(env, {"settings.json": "{}", ".credentials.json": "{}"})
    assert env.run().returncode == 0
    (sid,) = env.session_ids()
    assert sorted(os.listdir(env.sdir(sid))) == ["client.pid", "history.jsonl"]


# ---------------------------------------------------------------- signals

SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_signal_forwarded_to_client_and_its_exit_code_propagated(env, sig):
    p = env.launch(STUB_TRAP=1, STUB_SLEEP=30)
    sid = env.running_session(p)
    p.send_signal(sig)   # to the launcher only, not its process group
    assert p.wait(timeout=20) == 40 + sig
    with open(os.path.join(env.sdir(sid), "signal")) as f:
        assert f.read() == sig.name
    entry = env.read_registry()["sessions"][sid]
    assert (entry["status"], entry["exit_code"]) == ("ended", 40 + sig)
    assert not os.path.lexists(os.path.join(env.active, sid))


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_client_killed_by_forwarded_signal_gives_128_plus_n(env, sig):
    # No handlers in the client: it must not have inherited SIGINT as ignored.
    p = env.launch(STUB_SLEEP=30)
    sid = env.running_session(p)
    p.send_signal(sig)
    assert p.wait(timeout=20) == 128 + sig
    assert env.read_registry()["sessions"][sid]["exit_code"] == 128 + sig


# ---------------------------------------------------------------- configuration

def test_config_parsing(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    conf = tmp_path / "session.conf"
    conf.write_text("# comment\n\n  claude_home = ~/x y  \nmax_sessions=7\nunknown=1\n"
                    "inherit_copy=a=b  c\nhost=lxc122\nnot a key value line\n")
    cfg = sr.load_config(str(conf))
    assert cfg.claude_home == str(tmp_path / "x y")
    assert cfg.sessions_dir == str(tmp_path / "x y" / "sessions")
    assert (cfg.max_sessions, cfg.inherit_copy, cfg.inherit_link, cfg.host) == \
        (7, ["a=b", "c"], DEFAULT_LINKS, "lxc122")

    missing = sr.load_config(str(tmp_path / "absent.conf"))
    assert (missing.claude_home, missing.max_sessions, missing.inherit_copy, missing.inherit_link) == \
        (str(tmp_path / ".claude"), 4, [], DEFAULT_LINKS)
    assert missing.host  # the hostname

    conf.write_text("claude_home=~\n")
    assert sr.load_config(str(conf)).claude_home == str(tmp_path)
    conf.write_text("claude_home=/abs/dir\n")
    assert sr.load_config(str(conf)).claude_home == "/abs/dir"
    monkeypatch.setenv("CLAUDE_SESSION_CONF", str(conf))
    assert sr.load_config().claude_home == "/abs/dir"


def test_a_value_holding_another_line_separator_sets_no_other_key(tmp_path, monkeypatch):
    # Python's splitlines() also breaks at these; session.conf lines end at "\n" only.
    monkeypatch.setenv("HOME", str(tmp_path))
    conf = tmp_path / "session.conf"
    for sep in ["\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e"]:
        conf.write_text("inherit_copy=a%smax_sessions=0%sclaude_home=/elsewhere\n" % (sep, sep),
                        encoding="utf-8")
        cfg = sr.load_config(str(conf))
        assert (cfg.max_sessions, cfg.claude_home) == (4, str(tmp_path / ".claude")), repr(sep)


def test_config_is_parsed_not_sourced(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))
    conf = tmp_path / "session.conf"
    pwned = tmp_path / "pwned"
    conf.write_text("max_sessions=$(touch %s)\n" % pwned)
    assert sr.load_config(str(conf)).max_sessions == 4   # invalid: default, guard stays on
    assert "max_sessions" in capsys.readouterr().err
    assert not pwned.exists()


def test_launcher_uses_session_conf_next_to_it_through_a_symlink(env):
    env.write_conf("claude_home=~/elsewhere\n")
    linkdir = os.path.join(env.tmp, "usrbin")
    os.makedirs(linkdir)
    os.symlink(env.launcher, os.path.join(linkdir, "claude-session"))
    r = subprocess.run([os.path.join(linkdir, "claude-session")], env=env.environ(),
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    sessions = os.path.join(env.home, "elsewhere", "sessions")
    assert len([n for n in os.listdir(sessions) if len(n) == 36]) == 1
    assert env.session_ids() == []  # nothing under the default claude_home


def test_claude_session_conf_env_overrides(env):
    other = os.path.join(env.tmp, "other.conf")
    with open(other, "w") as f:
        f.write("claude_home=%s\n" % os.path.join(env.tmp, "ch2"))
    env.write_conf("claude_home=~/ignored\n")
    r = env.run(CLAUDE_SESSION_CONF=other)
    assert r.returncode == 0, r.stderr
    assert os.path.isdir(os.path.join(env.tmp, "ch2", "sessions", "active"))
    assert not os.path.exists(os.path.join(env.home, "ignored"))


# ---------------------------------------------------------------- list

LIST_KEYS = {"id", "name", "host", "state", "started", "ended", "last_activity", "pid", "exit_code",
             "first_prompt", "size_bytes", "dir", "cwd"}


def test_list_reports_state_activity_and_first_prompt(env):
    ended = env.make_session(history=b'{"display":"fix the parser\\nplease","timestamp":1}\n'
                                     b'{"display":"second","timestamp":2}\n')
    crashed = env.make_session(history=b"", status="active")         # launcher gone
    live = env.make_session(history=None, status="active", pid=os.getpid(),
                            pid_start=start_time(os.getpid()))
    orphan = env.make_session(history=b"ab", registered=False)
    gone = env.make_session(history=b"")
    shutil.rmtree(env.sdir(gone))
    old = time.time() - 3 * 86400
    for root, dirs, files in os.walk(env.sdir(ended)):
        for name in dirs + files:
            os.utime(os.path.join(root, name), (old, old))
    os.utime(env.sdir(ended), (old, old))
    rows = env.list_json()
    assert {k: rows[k]["state"] for k in rows} == {
        ended: "ended", crashed: "ended", live: "active", orphan: "orphaned", gone: "ended"}
    for row in rows.values():
        assert set(row) == LIST_KEYS
    e = rows[ended]
    assert e["first_prompt"] == "fix the parser\nplease"             # in full in JSON
    assert e["last_activity"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(old))
    assert e["size_bytes"] == os.path.getsize(os.path.join(env.sdir(ended), "history.jsonl"))
    assert (e["started"], e["ended"], e["exit_code"], e["host"]) == \
        ("2020-01-01T00:00:00Z", "2020-01-01T00:00:01Z", 0, "test")
    assert e["cwd"] is None                                            # an older entry: no cwd
    assert rows[live]["pid"] == os.getpid() and rows[live]["ended"] is None
    assert rows[live]["first_prompt"] is None and rows[live]["size_bytes"] == 0
    assert rows[orphan]["started"] is None and rows[orphan]["pid"] is None
    assert rows[orphan]["first_prompt"] is None                         # not JSON
    assert rows[gone]["last_activity"] is None and rows[gone]["size_bytes"] is None

    text = env.tool("claude-session-list")
    assert text.returncode == 0
    lines = text.stdout.decode().splitlines()
    assert len(lines) == 5
    by_id = {line.split("\t")[0]: line.split("\t") for line in lines}
    assert by_id[orphan][1:3] == ["-", "orphaned"]
    assert by_id[ended][2:] == ["ended", "2020-01-01T00:00:00Z", e["last_activity"],
                                "fix the parser please"]

    active = env.run("list", "--active", "--json")
    assert active.returncode == 0
    assert [r["id"] for r in json.loads(active.stdout)] == [live]
    via_launcher = env.run("list", "--json")
    assert via_launcher.returncode == 0
    assert {r["id"]: r for r in json.loads(via_launcher.stdout)} == rows


def test_list_cuts_a_long_first_prompt_to_80_characters_in_text(env):
    prompt = "word " * 40
    sid = env.make_session(history=(json.dumps({"display": prompt}) + "\n").encode())
    (line,) = env.tool("claude-session-list").stdout.decode().splitlines()
    shown = line.split("\t")[5]
    assert len(shown) == 80 and shown.endswith("\u2026") and prompt.startswith(shown[:-1])
    assert env.list_json()[sid]["first_prompt"] == prompt


def test_list_records_where_a_session_was_started(env):
    work = os.path.join(env.tmp, "work dir")
    os.makedirs(work)
    r = subprocess.run([env.launcher, "--name", "here"], env=env.environ(), cwd=work,
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    assert r.returncode == 0, r.stderr
    (row,) = env.list_json().values()
    assert row["cwd"] == work and row["name"] == "here"
    assert row["first_prompt"] is None       # the stub's history lines have no display
    assert row["exit_code"] == 0 and row["ended"].endswith("Z")


def test_list_with_unreadable_registry_exits_2(env):
    os.makedirs(env.sessions, exist_ok=True)
    with open(env.registry, "w") as f:
        f.write("{oops")
    r = env.tool("claude-session-list")
    assert r.returncode == 2 and b".registry" in r.stderr


@pytest.mark.parametrize("field,value", [("started", 1700000000), ("name", ["a"]), ("exit_code", "1")])
def test_list_with_a_hand_edited_wrong_type_exits_2_with_a_message(env, field, value):
    for _ in range(2):
        assert env.run().returncode == 0
    reg = env.read_registry()
    first = sorted(reg["sessions"])[0]
    reg["sessions"][first][field] = value
    env.write_registry(reg["sessions"])
    for args in ([], ["--json"]):
        r = env.tool("claude-session-list", *args)
        assert r.returncode == 2, r.stderr
        assert r.stderr.startswith(b"claude-session-list: ") and b"Traceback" not in r.stderr
        assert first.encode() in r.stderr and field.encode() in r.stderr
    r = env.run()
    assert r.returncode == 70 and field.encode() in r.stderr and b"Traceback" not in r.stderr


def test_launcher_refuses_to_overwrite_unreadable_registry(env):
    os.makedirs(env.sessions, exist_ok=True)
    with open(env.registry, "w") as f:
        f.write("{oops")
    r = env.run()
    assert r.returncode == 70 and b".registry" in r.stderr
    with open(env.registry) as f:
        assert f.read() == "{oops"
    assert env.session_ids() == []


# ---------------------------------------------------------------- names

@pytest.mark.parametrize("name", [os.fsdecode(b"caf\xe9"), "x\u009b31mred", "a\u0085b", "tab\there"],
                         ids=["not-utf8", "c1-csi", "c1-nel", "tab"])
def test_names_that_are_not_printable_text_are_refused(env, name):
    r = env.run("--name", name)
    assert r.returncode == 64, r.stderr
    assert b"--name must be UTF-8 text" in r.stderr
    assert env.session_ids() == []
    assert not os.path.exists(env.registry) or env.read_registry()["sessions"] == {}


def test_unicode_names_are_kept(env):
    assert env.run("--name", "caf\u00e9 \U0001f600").returncode == 0
    (row,) = env.list_json().values()
    assert row["name"] == "caf\u00e9 \U0001f600"


def test_list_prints_whatever_names_a_registry_holds(env):
    # Names stored by an older launcher or by hand: a lone surrogate (argv
    # bytes that were not UTF-8), a C1 escape, a line separator, plain text.
    names = {"\udce9": None, "x\u009b31mred": None, "a\u2028b\u0085c": None, "caf\u00e9": None}
    for name in names:
        sid = env.make_session(history=b"x\n")
        reg = env.read_registry()
        reg["sessions"][sid]["name"] = name
        env.write_registry(reg["sessions"])
        names[name] = sid
    for extra in ({}, {"PYTHONIOENCODING": "ascii"}, {"LC_ALL": "C"}):
        r = subprocess.run([os.path.join(env.bindir, "claude-session-list")], env=env.environ(**extra),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
        assert r.returncode == 0, (extra, r.stderr)
        lines = r.stdout.splitlines()
        assert len(lines) == 4, (extra, r.stdout)
        assert b"\x9b" not in r.stdout and b"\xc2\x9b" not in r.stdout and b"\x85" not in r.stdout
        assert all(len(line.split(b"\t")) == 6 for line in lines)
    assert env.run("list", "--json").returncode == 0
