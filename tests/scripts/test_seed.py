"""What a new session starts with: its .claude.json seeded from the user's
(no onboarding, same trust, no other session's history) and the inherit
policy, which never shares per-session state."""
import json
import os
import stat

import pytest

import session_registry as sr

WORK = "/home/u/work"
USER_STATE = {
    "hasCompletedOnboarding": True, "theme": "light", "numStartups": 12, "migrationVersion": 15,
    "oauthAccount": {"accountUuid": "00000000-0000-4000-8000-000000000001", "emailAddress": "t@example.invalid"},
    "mcpServers": {"files": {"command": "mcp-files", "args": []}},
    "customApiKeyResponses": {"approved": ["dummy"], "rejected": []},
    "projects": {
        WORK: {
            "hasTrustDialogAccepted": True, "allowedTools": ["Bash(ls)"],
            "mcpServers": {"proj": {"command": "p"}}, "enabledMcpjsonServers": ["a"],
            "disabledMcpjsonServers": ["b"], "hasCompletedProjectOnboarding": True,
            "projectOnboardingSeenCount": 2, "hasClaudeMdExternalIncludesApproved": True,
            "hasClaudeMdExternalIncludesWarningShown": True,
            "history": [{"display": "secret earlier prompt"}], "lastSessionId": "1234",
            "lastCost": 1.25, "lastDuration": 99, "lastTotalInputTokens": 7, "lastModelUsage": {},
            "lastGracefulShutdown": True, "exampleFiles": ["a.py"],
        },
        "/srv/untrusted": {"history": [], "lastSessionId": "5678", "lastCost": 0},
    },
}
SEEDED_PROJECT_KEYS = {"hasTrustDialogAccepted", "allowedTools", "mcpServers", "enabledMcpjsonServers",
                       "disabledMcpjsonServers", "hasCompletedProjectOnboarding",
                       "projectOnboardingSeenCount", "hasClaudeMdExternalIncludesApproved",
                       "hasClaudeMdExternalIncludesWarningShown"}


def write_json(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f)


def seeded(env, sid):
    path = os.path.join(env.sdir(sid), ".claude.json")
    st = os.lstat(path)
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    with open(path) as f:
        return json.load(f)


def test_new_session_is_seeded_from_the_users_claude_json(env):
    write_json(os.path.join(env.home, ".claude.json"), USER_STATE)
    write_json(os.path.join(env.claude_home, ".claude.json"), {"theme": "not this one"})
    r = env.run()
    assert r.returncode == 0 and r.stderr == b"", r.stderr
    (sid,) = env.session_ids()
    state = seeded(env, sid)
    # User-level state whole: onboarding, theme, account, user MCP servers, migrations done.
    for key in ("hasCompletedOnboarding", "theme", "numStartups", "migrationVersion", "oauthAccount",
                "mcpServers", "customApiKeyResponses"):
        assert state[key] == USER_STATE[key], key
    # Per project only trust and permissions; a project with none is left out.
    assert list(state["projects"]) == [WORK]
    project = state["projects"][WORK]
    assert set(project) == SEEDED_PROJECT_KEYS
    assert {k: USER_STATE["projects"][WORK][k] for k in SEEDED_PROJECT_KEYS} == project
    assert "secret earlier prompt" not in json.dumps(state)
    assert not [n for n in os.listdir(env.sdir(sid)) if n.endswith(".tmp")]


@pytest.mark.parametrize("spelling", ["exact", "trailing-slash", "through-a-link"])
def test_seed_comes_from_claude_home_when_the_users_config_dir_is_claude_home(env, spelling):
    write_json(os.path.join(env.home, ".claude.json"), {"theme": "home"})
    write_json(os.path.join(env.claude_home, ".claude.json"), {"theme": "claude_home"})
    incoming = {"exact": env.claude_home, "trailing-slash": env.claude_home + "/"}.get(spelling)
    if incoming is None:
        incoming = os.path.join(env.tmp, "link-to-claude-home")
        os.symlink(env.claude_home, incoming)
    r = env.run(CLAUDE_CONFIG_DIR=incoming)
    assert r.returncode == 0, r.stderr
    (sid,) = env.session_ids()
    assert seeded(env, sid)["theme"] == "claude_home"


def test_another_incoming_config_dir_seeds_from_the_home_file(env):
    write_json(os.path.join(env.home, ".claude.json"), {"theme": "home"})
    other = os.path.join(env.tmp, "other")
    write_json(os.path.join(other, ".claude.json"), {"theme": "other"})
    assert env.run(CLAUDE_CONFIG_DIR=other).returncode == 0
    (sid,) = env.session_ids()
    assert seeded(env, sid)["theme"] == "home"


def test_no_user_claude_json_means_no_seed_and_no_warning(env):
    r = env.run()
    assert r.returncode == 0 and r.stderr == b""
    (sid,) = env.session_ids()
    assert not os.path.lexists(os.path.join(env.sdir(sid), ".claude.json"))


@pytest.mark.parametrize("content", [b"{oops", b"[1, 2]", b"\xff\xfe"])
def test_an_unreadable_user_claude_json_is_a_warning_not_a_failure(env, content):
    with open(os.path.join(env.home, ".claude.json"), "wb") as f:
        f.write(content)
    r = env.run()
    assert r.returncode == 0
    assert b"cannot seed .claude.json" in r.stderr
    (sid,) = env.session_ids()
    assert not os.path.lexists(os.path.join(env.sdir(sid), ".claude.json"))


def test_seeding_leaves_the_users_file_alone(env):
    path = os.path.join(env.home, ".claude.json")
    write_json(path, USER_STATE)
    before = os.stat(path)
    with open(path, "rb") as f:
        content = f.read()
    assert env.run().returncode == 0
    after = os.stat(path)
    with open(path, "rb") as f:
        assert f.read() == content
    assert (before.st_mtime_ns, before.st_ino) == (after.st_mtime_ns, after.st_ino)


def test_seed_state_drops_non_object_projects():
    state = sr.seed_state({"a": 1, "projects": {"/x": "junk", "/y": {"allowedTools": []}}})
    assert state == {"a": 1, "projects": {"/y": {"allowedTools": []}}}
    assert sr.seed_state({"projects": []}) == {}
    assert sr.seed_state({}) == {}


# ---------------------------------------------------------------- the inherit policy

@pytest.mark.parametrize("name", sr.PER_SESSION_STATE)
@pytest.mark.parametrize("which", ["inherit_copy", "inherit_link"])
def test_per_session_state_is_never_shared(env, name, which):
    env.write_conf("%s=%s settings.json\n" % (which, name))
    path = os.path.join(env.claude_home, name)
    if name in ("projects", "sessions", "todos", "shell-snapshots", "statsig", "telemetry", "backups",
                "ide", "file-history", "session-env", "debug"):
        os.makedirs(path, exist_ok=True)
    else:
        with open(path, "w") as f:
            f.write("{}")
    with open(os.path.join(env.claude_home, "settings.json"), "w") as f:
        f.write("{}")
    r = env.run()
    assert r.returncode == 0, r.stderr
    assert ("claude-session: %s: ignoring %r: Claude Code keeps per-session state there" % (which, name)
            ).encode() in r.stderr
    (sid,) = env.session_ids()
    assert os.path.lexists(os.path.join(env.sdir(sid), "settings.json"))   # the rest still applies
    target = os.path.join(env.sdir(sid), name)
    if name == "history.jsonl":   # the stub writes its own
        assert not os.path.islink(target) and os.path.getsize(target) < 400
    elif name != "sessions":      # the client's sessions/ is its own business
        assert not os.path.lexists(target)


def test_shareable_names():
    assert sr.shareable("settings.json") is None and sr.shareable("agents") is None
    for bad in ("a/b", "/etc/passwd", "..", ".", "../x", "x/"):
        assert sr.shareable(bad), bad
    for name in sr.PER_SESSION_STATE:
        assert "per-session" in sr.shareable(name)
