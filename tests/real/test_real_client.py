"""The real Claude Code, interactively, as a person uses it (issue #10, item 7).

Two groups:
- `test_raw_*` start the client binary directly.  They pin what the launcher
  relies on (the .claude.json keys that skip onboarding, the credential-store
  variable, --continue) and prove that the harness sees what it claims to see
  (the negative controls must show the onboarding, or two refreshes).
- `test_launcher_*` go through the launcher that `csdeploy push` deployed
  into a throw-away HOME, with an onboarded, logged-in (dummy) default dir.

Nothing here reaches beyond loopback (see conftest.py).
"""
import glob
import json
import os
import stat

import pytest

import realclient
from realclient import PLAN, history, pump_all, read_json, wait_all, wait_history

MINIMAL = lambda work: {"hasCompletedOnboarding": True,  # noqa: E731
                        "projects": {work: {"hasTrustDialogAccepted": True}}}


def transcripts(config_dir):
    return glob.glob(os.path.join(config_dir, "projects", "*", "*.jsonl"))


def user_prompts(transcript):
    """The user messages of a transcript (strings only)."""
    out = []
    with open(transcript) as f:
        for line in f:
            entry = json.loads(line)
            msg = entry.get("message") or {}
            if entry.get("type") == "user" and isinstance(msg.get("content"), str):
                out.append(msg["content"])
    return out


def top_level(directory, skip=("sessions",)):
    """Names directly in directory with their type and bytes (files), to prove nothing changed."""
    out = {}
    for name in sorted(os.listdir(directory)):
        if name in skip:
            continue
        path = os.path.join(directory, name)
        st = os.lstat(path)
        if stat.S_ISREG(st.st_mode):
            with open(path, "rb") as f:
                out[name] = ("file", f.read())
        else:
            out[name] = (stat.filemode(st.st_mode)[0], None)
    return out


# ====================================================================== raw client
def test_raw_seeded_dir_reaches_prompt_and_keeps_history_in_its_dir(lab):
    """Two keys in <dir>/.claude.json are all 2.1.x needs to skip onboarding and the
    trust dialog; the login comes from the store CLAUDE_SECURESTORAGE_CONFIG_DIR names;
    a submitted prompt lands in <dir>/history.jsonl and the transcript in <dir>/projects."""
    lab.onboard()
    d = os.path.join(lab.tmp, "sessiondir")
    realclient.write_json(os.path.join(d, ".claude.json"), MINIMAL(lab.work))
    c = lab.start_raw(d, "raw")
    screen = c.wait_prompt()
    assert PLAN in screen, "the banner does not show the dummy login's plan: not read from the store?\n" + screen
    c.type_line("raw prompt 0451")
    wait_history([c], os.path.join(d, "history.jsonl"), "raw prompt 0451")
    assert c.exit() == 0
    entries = history(os.path.join(d, "history.jsonl"))
    assert [e["display"] for e in entries] == ["raw prompt 0451", "/exit"]
    assert entries[0]["project"] == lab.work
    sid = entries[0]["sessionId"]
    [transcript] = transcripts(d)
    assert os.path.basename(transcript) == sid + ".jsonl"
    assert "raw prompt 0451" in user_prompts(transcript)
    assert not os.path.lexists(os.path.join(d, ".credentials.json"))
    assert not os.path.lexists(os.path.join(lab.claude_home, "history.jsonl"))


@pytest.mark.parametrize("seed, screen_text", [
    (None, "Welcome to Claude Code"),                        # no .claude.json: no fallback to ~/.claude.json
    ({"hasCompletedOnboarding": True}, "Quick safety check"),  # onboarded, but the cwd is not trusted
], ids=["no-claude-json", "no-trust"])
def test_raw_unseeded_dir_stops_before_the_prompt(lab, seed, screen_text):
    """Negative control: what a session dir without the seed shows although
    ~/.claude.json is onboarded (so wait_prompt's blocker detection is real)."""
    lab.onboard()
    d = os.path.join(lab.tmp, "sessiondir")
    os.makedirs(d)
    if seed is not None:
        realclient.write_json(os.path.join(d, ".claude.json"), seed)
    c = lab.start_raw(d, "raw")
    with pytest.raises(AssertionError) as err:
        c.wait_prompt(timeout=30)
    assert screen_text in str(err.value)
    assert not os.path.exists(os.path.join(d, "history.jsonl"))


def test_raw_shared_store_one_refresh_for_two_sessions(lab):
    """Two clients at once, each with its own config dir and
    CLAUDE_SECURESTORAGE_CONFIG_DIR=~/.claude, an expired access token: one
    refresh between them (the proxy answers after 1 s, so a second one would
    overlap), the rotated tokens in ~/.claude/.credentials.json, none in the dirs."""
    lab.need_token_endpoint()
    lab.onboard(expired=True)
    dirs = [os.path.join(lab.tmp, "s%d" % i) for i in (1, 2)]
    for d in dirs:
        realclient.write_json(os.path.join(d, ".claude.json"), MINIMAL(lab.work))
    clients = [lab.start_raw(d, os.path.basename(d)) for d in dirs]
    for c in clients:
        c.wait_prompt()
    store = os.path.join(lab.claude_home, ".credentials.json")
    wait_all(clients, lambda: read_json(store)["claudeAiOauth"]["refreshToken"] != realclient.OLD_REFRESH,
             20, "the refreshed tokens in the default store")
    pump_all(clients, 2.5)  # room for a second (wrong) refresh
    assert len(lab.proxy.refreshes) == 1, lab.proxy.refreshes
    assert lab.proxy.refreshes[0]["request"]["refresh_token"] == realclient.OLD_REFRESH
    oauth = read_json(store)["claudeAiOauth"]
    new = lab.proxy.refreshes[0]["answer"]
    assert (oauth["accessToken"], oauth["refreshToken"]) == (new["access_token"], new["refresh_token"])
    assert stat.S_IMODE(os.stat(store).st_mode) == 0o600
    for d in dirs:
        assert not os.path.lexists(os.path.join(d, ".credentials.json"))
    for c in clients:
        assert c.exit() == 0


def test_raw_linked_store_refreshes_once_per_session(lab):
    """Negative control, the layout of the previous launcher: a symlinked
    <dir>/.credentials.json and no store variable.  Each client refreshes with
    the same old token, the refresh replaces the link by a file, and the default
    store keeps the used refresh token (the bug issue #10 fixes)."""
    lab.need_token_endpoint()
    lab.onboard(expired=True)
    store = os.path.join(lab.claude_home, ".credentials.json")
    dirs = [os.path.join(lab.tmp, "s%d" % i) for i in (1, 2)]
    for d in dirs:
        realclient.write_json(os.path.join(d, ".claude.json"), MINIMAL(lab.work))
        os.symlink(store, os.path.join(d, ".credentials.json"))
    clients = [lab.start_raw(d, os.path.basename(d), store=False) for d in dirs]
    for c in clients:
        c.wait_prompt()
    wait_all(clients, lambda: len(lab.proxy.refreshes) >= 2, 20, "a refresh from each session")
    assert [r["request"]["refresh_token"] for r in lab.proxy.refreshes] == [realclient.OLD_REFRESH] * 2
    assert read_json(store)["claudeAiOauth"]["refreshToken"] == realclient.OLD_REFRESH
    wait_all(clients, lambda: not any(os.path.islink(os.path.join(d, ".credentials.json")) for d in dirs),
             10, "the links replaced by the refreshed files")
    for c in clients:
        assert c.exit() == 0


def test_raw_continue_shows_and_continues_the_first_conversation(lab):
    """A second run in the same config dir with --continue shows the first
    conversation's prompt on screen and carries on in the same session id."""
    lab.onboard()
    d = os.path.join(lab.tmp, "sessiondir")
    realclient.write_json(os.path.join(d, ".claude.json"), MINIMAL(lab.work))
    hist = os.path.join(d, "history.jsonl")
    first = lab.start_raw(d, "first")
    first.wait_prompt()
    first.type_line("first conversation 4711")
    wait_history([first], hist, "first conversation 4711")
    assert first.exit() == 0
    sid = history(hist)[0]["sessionId"]

    again = lab.start_raw(d, "continue", args=["--continue"])
    screen = again.wait_prompt()
    assert "❯ first conversation 4711" in screen
    again.type_line("second turn 4712")
    wait_history([again], hist, "second turn 4712")
    assert again.exit() == 0
    [entry] = [e for e in history(hist) if e["display"] == "second turn 4712"]
    assert entry["sessionId"] == sid
    [transcript] = transcripts(d)
    assert user_prompts(transcript)[:2] == ["first conversation 4711", "second turn 4712"]


# ====================================================================== through the launcher
def session_dir_of(lab, client):
    env = client.client_env()
    assert env, "%s: no client process with CLAUDE_CONFIG_DIR found in its process group" % client.name
    d = env["CLAUDE_CONFIG_DIR"]
    assert os.path.dirname(d) == lab.sessions, "%s: CLAUDE_CONFIG_DIR=%s is not a session dir" % (client.name, d)
    return d, env


def list_json(lab):
    r = lab.launcher_run("list", "--json")
    assert r.returncode == 0, r.stderr.decode()
    return {row["id"]: row for row in json.loads(r.stdout)}


def test_launcher_two_sessions_in_parallel(lab):
    """Two sessions started at once through the deployed launcher, with an
    onboarded, logged-in default dir: both reach the prompt (no onboarding,
    trust or login screen) showing the default login's plan; each typed prompt
    lands in its own session's history.jsonl (distinct files), each session has
    its own .claude.json and transcript, no credentials file in either, nothing
    in the default history, and the default dir and ~/.claude.json unchanged;
    `claude-session list --json` reads each one's first prompt from the real
    client's history."""
    lab.deploy()
    lab.onboard()
    user_json = os.path.join(lab.home, ".claude.json")
    before_home, before_json = top_level(lab.claude_home), open(user_json, "rb").read()
    clients = [lab.start_session("session-%s" % n) for n in ("a", "b")]
    for c in clients:
        screen = c.wait_prompt()
        assert PLAN in screen, "%s: not logged in with the default store's login:\n%s" % (c.name, screen)
    dirs = [session_dir_of(lab, c)[0] for c in clients]
    assert dirs[0] != dirs[1], "both sessions got %s" % dirs[0]
    texts = ["parallel prompt alpha", "parallel prompt beta"]
    for c, text in zip(clients, texts):
        c.type_line(text)
    for d, text in zip(dirs, texts):
        wait_history(clients, os.path.join(d, "history.jsonl"), text)
    for c in clients:
        assert c.exit() == 0
    inodes = set()
    for d, text, other in zip(dirs, texts, reversed(texts)):
        path = os.path.join(d, "history.jsonl")
        displays = [e["display"] for e in history(path)]
        assert text in displays and other not in displays, (d, displays)
        st = os.lstat(path)
        assert stat.S_ISREG(st.st_mode)
        inodes.add((st.st_dev, st.st_ino))
        cj = os.path.join(d, ".claude.json")
        assert stat.S_ISREG(os.lstat(cj).st_mode), "%s is not a file of its own" % cj
        assert len(transcripts(d)) == 1, os.listdir(d)
        assert not os.path.lexists(os.path.join(d, ".credentials.json"))
    assert len(inodes) == 2
    listed = list_json(lab)
    for d, text in zip(dirs, texts):
        row = listed[os.path.basename(d)]
        assert (row["state"], row["first_prompt"], row["exit_code"]) == ("ended", text, 0), row
    assert not os.path.lexists(os.path.join(lab.claude_home, "history.jsonl"))
    assert not os.path.lexists(os.path.join(lab.claude_home, "projects"))
    assert open(user_json, "rb").read() == before_json, "~/.claude.json changed"
    after_home = top_level(lab.claude_home)
    changed = sorted(k for k in set(before_home) | set(after_home) if before_home.get(k) != after_home.get(k))
    assert not changed, "changed in the default dir outside sessions/: %s" % changed


def test_launcher_token_refresh_one_for_two_sessions(lab):
    """An expired access token and two sessions started at once through the
    launcher: exactly one refresh request between them, with the stored refresh
    token; the new tokens in ~/.claude/.credentials.json (still 0600); no
    credentials file or link in either session dir."""
    lab.need_token_endpoint()
    lab.deploy()
    store = lab.onboard(expired=True)
    clients = [lab.start_session("session-%s" % n) for n in ("a", "b")]
    for c in clients:
        c.wait_prompt()
    dirs = [session_dir_of(lab, c)[0] for c in clients]
    wait_all(clients, lambda: len(lab.proxy.refreshes) >= 1, 20, "a token refresh")
    pump_all(clients, 3)  # room for a second (wrong) refresh: the proxy answers after 1 s
    assert len(lab.proxy.refreshes) == 1, "%d refreshes for two sessions sharing one login" % len(
        lab.proxy.refreshes)
    assert lab.proxy.refreshes[0]["request"]["refresh_token"] == realclient.OLD_REFRESH
    wait_all(clients, lambda: read_json(store)["claudeAiOauth"]["refreshToken"] != realclient.OLD_REFRESH,
             10, "the new tokens in the default store")
    oauth = read_json(store)["claudeAiOauth"]
    new = lab.proxy.refreshes[0]["answer"]
    assert (oauth["accessToken"], oauth["refreshToken"]) == (new["access_token"], new["refresh_token"])
    assert stat.S_IMODE(os.stat(store).st_mode) == 0o600
    for d in dirs:
        assert not os.path.lexists(os.path.join(d, ".credentials.json")), d
    for c in clients:
        assert c.exit() == 0
    for d in dirs:
        assert not os.path.lexists(os.path.join(d, ".credentials.json")), d


@pytest.mark.parametrize("where", ["work-dir", "other-dir"])
def test_launcher_resume_continues_the_first_conversation(lab, where):
    """A session ends; `claude-session resume <id>` (no client args: --continue)
    runs the client again in that session's dir and in the directory it was
    started in (also when resumed from elsewhere): the first conversation's
    prompt is on screen, the next prompt continues the same conversation (same
    sessionId, same transcript), no new session dir, the registry shows it
    active while it runs and ended afterwards."""
    lab.deploy()
    lab.onboard()
    first = lab.start_session("first")
    first.wait_prompt()
    d, _ = session_dir_of(lab, first)
    sid = os.path.basename(d)
    hist = os.path.join(d, "history.jsonl")
    first.type_line("resume me 0815")
    wait_history([first], hist, "resume me 0815")
    assert first.exit() == 0
    conversation = history(hist)[0]["sessionId"]
    assert list_json(lab)[sid]["state"] == "ended"

    cwd = lab.work if where == "work-dir" else lab.home
    again = lab.start_session("resumed", args=["resume", sid], cwd=cwd)
    screen = again.wait_prompt()
    assert "❯ resume me 0815" in screen, "the first conversation is not shown:\n" + screen
    d2, env = session_dir_of(lab, again)
    assert d2 == d
    assert list_json(lab)[sid]["state"] == "active"
    again.type_line("after resume 0816")
    wait_history([again], hist, "after resume 0816")
    assert again.exit() == 0
    [entry] = [e for e in history(hist) if e["display"] == "after resume 0816"]
    assert entry["sessionId"] == conversation
    assert entry["project"] == lab.work
    assert lab.session_dirs() == [sid]
    assert list_json(lab)[sid]["state"] == "ended"
    assert not os.path.lexists(os.path.join(lab.claude_home, "history.jsonl"))
