"""The registry helper beside each session: one interpreter per session, its
JSON codec, its command line, and what happens when it or the launcher dies."""
import json
import os
import random
import signal
import subprocess
import sys

import pytest

from conftest import python_shim, python_starts, registry_helper_of, snapshot, wait_for
from test_static import PYTHONS

import session_registry as sr


# ---------------------------------------------------------------- the JSON codec

REGISTRY_SHAPES = [
    {"version": 1, "sessions": {}},
    {"version": 1, "extra": [1, 2.5, None, True, False], "sessions": {
        "0b9c6a34-3e6a-4d3c-9f57-0d6d1f0c2a11": {
            "id": "0b9c6a34-3e6a-4d3c-9f57-0d6d1f0c2a11", "name": "n\u00e4me \"quoted\" \\ \t tab",
            "host": "lxc122", "pid": 123, "pid_start": 456789012345, "boot_id": None,
            "started": "2026-01-01T00:00:00Z", "status": "active", "ended": None,
            "exit_code": -1, "dir": "/home/u/.claude/sessions/x", "emoji": "\U0001f600"},
        "ffffffff-ffff-4fff-bfff-ffffffffffff": {"id": "x", "pid": 1, "pid_start": 0,
                                                 "status": "ended", "exit_code": 0}}},
]


@pytest.mark.parametrize("data", REGISTRY_SHAPES)
def test_registry_text_is_the_json_it_was_made_from(data):
    text = sr.registry_text(data)
    assert json.loads(text) == data
    assert sr.json_loads(text) == data
    # One entry per line, sorted: a diff of two registries reads entry by entry.
    lines = text.splitlines()
    assert len(lines) == (2 + len(data["sessions"]) if data["sessions"] else 1)
    assert [line.split('"')[1] for line in lines[1:-1]] == sorted(data["sessions"])


def test_json_loads_agrees_with_json_on_valid_and_invalid_text():
    rng = random.Random(7)
    valid = [json.dumps(v) for v in REGISTRY_SHAPES] + [
        " \n{\"a\": [1, 2, {\"b\": null}]}\t\r\n", "[]", "0", "-1.5e3", "\"\\u00e9\\ud83d\\ude00\"", "true"]
    for text in valid:
        assert sr.json_loads(text) == json.loads(text)
    invalid = ["", "   ", "{", "{\"a\": 1,}", "{\"a\": 1} x", "[1] [2]", "NaN", "Infinity", "-Infinity",
               "{'a': 1}", "\"unterminated", "[1, 2", "\"bad \x01 control\"", "[" * 100000]
    # Every prefix of a registry that was cut short is rejected, as json rejects it.
    whole = sr.registry_text(REGISTRY_SHAPES[1])
    invalid += [whole[:n] for n in sorted(rng.sample(range(len(whole) - 1), 40))]
    for text in invalid:
        with pytest.raises((ValueError, RecursionError)):   # json: too deep is a RecursionError
            json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
        with pytest.raises(ValueError):                    # the registry reader: always ValueError
            sr.json_loads(text)


def test_unreadable_registry_text_is_a_registry_error(tmp_path):
    (tmp_path / ".registry").write_text('{"version": 1, "sessions": {NaN}}')
    with pytest.raises(sr.RegistryError, match="not valid JSON"):
        sr.read_registry(str(tmp_path))


# ---------------------------------------------------------------- command line

@pytest.mark.parametrize("argv", [
    [], ["register"], ["session"], ["session", "--id", "x", "--pid", "1"],
    ["session", "--id", "0b9c6a34-3e6a-4d3c-9f57-0d6d1f0c2a11"],
    ["session", "--id", "0b9c6a34-3e6a-4d3c-9f57-0d6d1f0c2a11", "--pid", "one"],
    ["session", "--id", "0b9c6a34-3e6a-4d3c-9f57-0d6d1f0c2a11", "--pid", "1", "--force=yes"],
    ["session", "--id", "0b9c6a34-3e6a-4d3c-9f57-0d6d1f0c2a11", "--pid", "1", "--name"],
    ["finish", "--id", "0b9c6a34-3e6a-4d3c-9f57-0d6d1f0c2a11", "--exit-code", "x"],
    ["config", "--bogus"],
])
def test_usage_errors_exit_64(argv, capsys):
    try:
        code = sr.main(argv)
    except SystemExit as e:
        code = e.code
    assert code == sr.EX_USAGE
    assert "usage: session_registry.py" in capsys.readouterr().err


@pytest.mark.parametrize("target", [[], ["--id", "0b9c6a34-3e6a-4d3c-9f57-0d6d1f0c2a11", "--resume", "x"]])
def test_session_needs_exactly_one_of_id_and_resume(target, capsys):
    assert sr.main(["session", "--pid", str(os.getpid())] + target) == sr.EX_USAGE
    assert "exactly one of --id and --resume" in capsys.readouterr().err


def test_options_parse_in_both_spellings():
    sid = "0b9c6a34-3e6a-4d3c-9f57-0d6d1f0c2a11"
    session = sr.COMMANDS["session"][1]
    opts = sr.parse_options(["--id=" + sid, "--pid", "12", "--name=a=b", "--force"], session)
    assert opts == {"--id": sid, "--resume": None, "--pid": 12, "--name": "a=b", "--force": True}
    opts = sr.parse_options(["--resume=my name", "--pid=3"], session)
    assert (opts["--id"], opts["--resume"], opts["--pid"]) == (None, "my name", 3)
    opts = sr.parse_options(["--id", sid], sr.COMMANDS["finish"][1])
    assert opts == {"--id": sid, "--exit-code": None}
    many = {"--session": ([sr.session_id], None), "--days": (float, None)}
    assert sr.parse_options(["--session", sid, "--session=" + sid.replace("0", "1")], many) == \
        {"--session": [sid, sid.replace("0", "1")], "--days": None}
    with pytest.raises(sr.UsageError, match="not a session id"):
        sr.parse_options(["--session", "nope"], many)
    with pytest.raises(sr.UsageError, match="unexpected argument"):
        sr.parse_options(["stray"], many)
    with pytest.raises(sr.HelpRequested):
        sr.parse_options(["--days", "1", "-h"], many)


def test_session_ids_are_canonical_lowercase_uuids():
    assert sr.is_session_id("0b9c6a34-3e6a-4d3c-9f57-0d6d1f0c2a11")
    for bad in ["0B9C6A34-3E6A-4D3C-9F57-0D6D1F0C2A11", "0b9c6a34-3e6a-4d3c-9f57-0d6d1f0c2a1",
                "0b9c6a34-3e6a-4d3c-9f57-0d6d1f0c2a11\n", "0b9c6a343e6a-4d3c-9f57-0d6d1f0c2a11-",
                "0b9c6a34-3e6a-4d3c-9f57-0d6d1f0c2a1g", "..", "active", ""]:
        assert not sr.is_session_id(bad), bad


# ---------------------------------------------------------------- processes per session

def test_a_session_costs_one_python_start(env):
    path, records = python_shim(env.tmp)
    r = env.run("--name", "counted", PATH=path, STUB_EXIT=3)
    assert r.returncode == 3, r.stderr
    starts = [line for line in python_starts(records) if env.stub not in line]  # the stub client is Python too
    assert len(starts) == 1, starts
    assert "session_registry" in starts[0] and " session " in starts[0]
    (sid,) = env.session_ids()
    entry = env.read_registry()["sessions"][sid]
    assert (entry["status"], entry["exit_code"]) == ("ended", 3)


def test_launching_leaves_claude_home_outside_sessions_as_installed(env):
    before = snapshot(env.claude_home)
    r = env.run("--name", "one")
    assert r.returncode == 0, r.stderr
    after = snapshot(env.claude_home)
    changed = sorted(k for k in set(before) | set(after)
                     if before.get(k) != after.get(k) and k.split("/")[0] != "sessions")
    assert changed == []
    # The helper's bytecode is cached, but under ~/.cache.
    cache = os.path.join(env.home, ".cache", "claude-session")
    cached = [name for _root, _dirs, files in os.walk(cache) for name in files]
    assert any(name.startswith("session_registry.") and name.endswith(".pyc") for name in cached), cached


# ---------------------------------------------------------------- when the helper dies

def test_launcher_outlives_a_dead_helper_and_still_closes_the_entry(env):
    go = os.path.join(env.tmp, "go")
    p = env.launch(STUB_WAIT=go, STUB_EXIT=5)
    sid = env.running_session(p)
    os.kill(registry_helper_of(sid), 9)
    open(go, "w").close()
    assert p.wait(timeout=20) == 5         # the client's code, not a SIGPIPE
    entry = env.read_registry()["sessions"][sid]
    assert (entry["status"], entry["exit_code"]) == ("ended", 5)
    assert not os.path.lexists(os.path.join(env.active, sid))


def test_helper_ignores_the_signals_meant_for_the_client(env):
    go = os.path.join(env.tmp, "go")
    p = env.launch(STUB_WAIT=go)
    sid = env.running_session(p)
    helper = registry_helper_of(sid)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        os.kill(helper, sig)
    wait_for(lambda: _signals_ignored(helper), what="signal dispositions to show")
    open(go, "w").close()
    assert p.wait(timeout=20) == 0
    assert env.read_registry()["sessions"][sid]["exit_code"] == 0


def _signals_ignored(pid):
    """The helper is alive and ignores INT, TERM and HUP (SigIgn in /proc)."""
    try:
        with open("/proc/%d/status" % pid) as f:
            status = dict(line.split(":", 1) for line in f if ":" in line)
    except OSError:
        return False
    ignored = int(status["SigIgn"].strip(), 16)
    return all(ignored & (1 << (n - 1)) for n in (1, 2, 15))  # HUP, INT, TERM


CODEC_CHECK = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import session_registry as sr
opts = sr.parse_options(["--pid=3", "--force", "--name", "a b"], sr.COMMANDS["session"][1])
assert (opts["--pid"], opts["--force"], opts["--name"]) == (3, True, "a b"), opts
data = json.loads(sys.argv[2])
assert sr.json_loads(sr.registry_text(data)) == data == json.loads(sr.registry_text(data))
for bad in ["", "{", "[1] x", "NaN", "[" * 100000, sr.registry_text(data)[:-3]]:
    try:
        sr.json_loads(bad)
    except ValueError:
        continue
    raise AssertionError("accepted %r" % bad[:20])
print("ok")
"""


@pytest.mark.parametrize("version", list(PYTHONS))
def test_json_codec_and_options_under_every_python(version):
    exe = PYTHONS[version]
    files = os.path.dirname(sr.__file__)
    r = subprocess.run([exe, "-I", "-S", "-B", "-c", CODEC_CHECK, files, json.dumps(REGISTRY_SHAPES[1])],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    assert r.returncode == 0 and r.stdout == b"ok\n", r.stderr.decode()


def test_dirs_in_use_reads_the_variable_not_a_value_that_mentions_it(tmp_path):
    sessions = tmp_path / "sessions"
    ids = ["0b9c6a34-3e6a-4d3c-9f57-0d6d1f0c2a1%d" % i for i in range(4)]
    for sid in ids:
        (sessions / sid).mkdir(parents=True)
    via_link = tmp_path / "link"
    os.symlink(str(sessions), str(via_link))
    environments = [
        {"CLAUDE_CONFIG_DIR": str(sessions / ids[0])},                         # plainly in use
        {"A": "1", "CLAUDE_CONFIG_DIR": str(via_link / ids[1]) + "/"},         # through a symlink, trailing /
        {"FOO": "CLAUDE_CONFIG_DIR=" + str(sessions / ids[2])},                # only a value mentions it
        {"XCLAUDE_CONFIG_DIR": str(sessions / ids[3])},                        # another variable
    ]
    procs = [subprocess.Popen(["sleep", "30"], env=e) for e in environments]
    try:
        wait_for(lambda: all(os.path.exists("/proc/%d/environ" % p.pid) for p in procs))
        # exec has happened once sleep's environment is the one we gave it
        wait_for(lambda: all(b"sleep" in open("/proc/%d/cmdline" % p.pid, "rb").read() for p in procs))
        assert sr.dirs_in_use(str(sessions)) == {ids[0], ids[1]}
    finally:
        for p in procs:
            p.kill()
            p.wait()
