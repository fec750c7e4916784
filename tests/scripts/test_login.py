"""One login for every session: the launcher points the client at the default
credential store, never puts credentials into a session, and brings back the
newer tokens an older launcher's session may hold (launcher and cleaner)."""
import json
import os
import stat
import time

import pytest

from test_launcher import history_lines


def write_credentials(path, token, age=0.0):
    """A dummy credentials file whose mtime is `age` seconds in the past."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"claudeAiOauth": {"accessToken": token, "refreshToken": token + "-r"}}, f)
    os.chmod(path, 0o600)
    when = time.time() - age
    os.utime(path, (when, when))


def token(path):
    with open(path) as f:
        return json.load(f)["claudeAiOauth"]["accessToken"]


def default_store(env):
    return os.path.join(env.claude_home, ".credentials.json")


def session_store(env, sid):
    return os.path.join(env.sdir(sid), ".credentials.json")


def test_sessions_use_the_default_store_and_get_no_credentials(env):
    write_credentials(default_store(env), "default")
    env.write_conf("inherit_copy=.credentials.json\ninherit_link=.credentials.json settings.json\n")
    r = env.run()
    assert r.returncode == 0, r.stderr
    (sid,) = env.session_ids()
    (line,) = history_lines(env.sdir(sid))
    assert line["store"] == env.claude_home and os.path.isabs(line["store"])
    assert line["config_dir"] == env.sdir(sid)
    assert not os.path.lexists(session_store(env, sid))
    # Both lists named it: skipped with a warning each time.
    assert r.stderr.count(b"'.credentials.json': Claude Code keeps per-session state there") == 2
    assert token(default_store(env)) == "default"


def test_the_store_is_absolute_for_a_relative_claude_home(env):
    env.write_conf("claude_home=rel/claude\n")
    assert env.run().returncode == 0
    sessions = os.path.join(env.home, "rel", "claude", "sessions")
    (sid,) = [n for n in os.listdir(sessions) if len(n) == 36]
    (line,) = history_lines(os.path.join(sessions, sid))
    assert line["store"] == os.path.join(env.home, "rel", "claude")


def test_launcher_rescues_the_newest_session_credentials(env):
    write_credentials(default_store(env), "stale", age=3000)
    older = env.make_session(history=b"x\n")
    newest = env.make_session(history=b"x\n")
    linked = env.make_session(history=b"x\n")
    write_credentials(session_store(env, older), "rotated-once", age=2000)
    write_credentials(session_store(env, newest), "rotated-twice", age=1000)
    os.symlink(default_store(env), session_store(env, linked))   # an older launcher's link
    r = env.run()
    assert r.returncode == 0, r.stderr
    assert token(default_store(env)) == "rotated-twice"
    st = os.lstat(default_store(env))
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert ("copied the newer credentials of session %s" % newest).encode() in r.stderr
    # The sessions keep theirs; nothing is copied the other way.
    assert token(session_store(env, older)) == "rotated-once"
    assert token(session_store(env, newest)) == "rotated-twice"
    assert os.path.islink(session_store(env, linked))
    assert not [n for n in os.listdir(env.claude_home) if n.endswith(".tmp")]


def test_older_session_credentials_never_overwrite_the_default(env):
    write_credentials(default_store(env), "current", age=10)
    sid = env.make_session(history=b"x\n")
    write_credentials(session_store(env, sid), "used-up", age=1000)
    r = env.run()
    assert r.returncode == 0 and r.stderr == b"", r.stderr
    assert token(default_store(env)) == "current"
    assert token(session_store(env, sid)) == "used-up"


def test_credentials_are_rescued_when_there_is_no_default_store(env):
    sid = env.make_session(history=b"x\n")
    write_credentials(session_store(env, sid), "only-copy", age=5000)
    assert env.run().returncode == 0
    assert token(default_store(env)) == "only-copy"
    assert stat.S_IMODE(os.stat(default_store(env)).st_mode) == 0o600


# ---------------------------------------------------------------- the cleaner

def test_cleaner_rescues_then_removes_the_session(env):
    write_credentials(default_store(env), "stale", age=3000)
    sid = env.make_session(history=b"")                       # empty: would be removed
    write_credentials(session_store(env, sid), "rotated", age=1000)
    result = env.clean_json()
    assert result["credentials_rescued"] == [{"id": sid, "dir": env.sdir(sid), "to": default_store(env),
                                              "error": None}]
    assert {r["id"]: r["reason"] for r in result["removed"]} == {sid: "empty"}
    assert token(default_store(env)) == "rotated"
    assert env.session_ids() == []


def test_cleaner_dry_run_copies_nothing_and_says_what_it_would(env):
    write_credentials(default_store(env), "stale", age=3000)
    sid = env.make_session(history=b"")
    write_credentials(session_store(env, sid), "rotated", age=1000)
    r = env.clean("--dry-run")
    assert r.returncode == 0, r.stderr
    assert ("would copy the credentials of %s" % sid).encode() in r.stdout
    assert ("would remove %s (empty)" % sid).encode() in r.stdout
    assert token(default_store(env)) == "stale"
    result = env.clean_json("--dry-run")
    assert result["credentials_rescued"][0]["id"] == sid and result["dry_run"] is True
    assert env.session_ids() == [sid]


def _unwritable_default(env):
    """A default store the rescue cannot replace: a directory (rename(2)
    refuses to put a file there, even for root), older than the session's."""
    os.makedirs(default_store(env))
    old = time.time() - 3000
    os.utime(default_store(env), (old, old))


@pytest.mark.parametrize("args", [[], ["--days", "0"]])
def test_cleaner_keeps_a_session_whose_newer_credentials_it_could_not_copy(env, args):
    _unwritable_default(env)
    sid = env.make_session(history=b"", age_days=30)
    write_credentials(session_store(env, sid), "only-copy", age=1000)
    result = env.clean_json(*args)
    assert result["removed"] == []
    assert {k["id"]: k["reason"] for k in result["kept"]} == {sid: "credentials-newer-than-default"}
    (rescued,) = result["credentials_rescued"]
    assert rescued["id"] == sid and rescued["error"]
    text = env.clean(*args)
    assert text.returncode == 0
    assert b"keeping" in text.stderr and b"newer than" in text.stderr and b"copying it there failed" in text.stderr
    assert token(session_store(env, sid)) == "only-copy"


def test_cleaner_session_option_does_not_remove_the_only_login(env):
    _unwritable_default(env)
    sid = env.make_session(history=b"x\n")
    write_credentials(session_store(env, sid), "only-copy", age=1000)
    r = env.clean("--session", sid)
    assert r.returncode == 1
    assert b"holds the newest login" in r.stderr
    assert os.path.isdir(env.sdir(sid))


def test_cleaner_removes_a_session_whose_credentials_are_only_a_link_or_older(env):
    write_credentials(default_store(env), "current", age=10)
    linked = env.make_session(history=b"")
    os.symlink(default_store(env), session_store(env, linked))
    older = env.make_session(history=b"")
    write_credentials(session_store(env, older), "used-up", age=1000)
    result = env.clean_json()
    assert {r["id"] for r in result["removed"]} == {linked, older}
    assert result["credentials_rescued"] == []
    assert token(default_store(env)) == "current"            # the link was not followed into it
