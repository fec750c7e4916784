"""verify.py's probe client: it must mirror Claude Code 2.1.332 in what the
checks judge (see PROBE's comment and ../shared/reference/claude-code-facts.md).
Each test runs the probe script itself, as the launcher would, on a fake
HOME, with the files the verifier writes for it; nothing waits for a
release (the --continue round never does, the first round's verifier pid
is one that does not exist)."""
import json
import os
import subprocess

import pytest


def mangle(path):
    return "".join(c if c.isalnum() else "-" for c in path)


@pytest.fixture
def probe(verify, tmp_path):
    home = tmp_path / "home"
    (home / ".claude").mkdir(parents=True)
    work = tmp_path / "work"
    cwd = work / "cwd"
    cwd.mkdir(parents=True)
    script = work / "probe"
    script.write_text(verify["PROBE"])
    script.chmod(0o700)
    for name in ("started", "release"):
        os.mkfifo(str(work / name))

    def run(token, env, *, onboarded=True, login=True, cont=False, sid="11111111-1111-4111-8111-111111111111"):
        (work / "probe.env").write_text(
            "verifier_pid=999999999\nproject=%s\nuser_home=%s\nmangled=%s\nexpect_onboarded=%s\nexpect_login=%s\n"
            % (verify["sh_quote"](json.dumps(str(cwd))), verify["sh_quote"](str(home)),
               verify["sh_quote"](mangle(str(cwd))), "1" if onboarded else "", "1" if login else ""))
        (work / (token + ".args")).write_text("ms=1 sid=%s\n" % sid)
        argv = [str(script), str(work), token] + (["--continue"] if cont else [])
        full = {"PATH": os.environ["PATH"], "HOME": str(home)}
        full.update(env)
        # The first round announces itself on `started`: hold it open.
        fd = os.open(str(work / "started"), os.O_RDWR | os.O_NONBLOCK)
        try:
            subprocess.run(argv, env=full, cwd=str(cwd), check=True, timeout=20)
        finally:
            os.close(fd)
        report = verify["read_report"](str(work), token)
        return report

    return run, home, work, cwd


def seed(path, onboarded=True):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"hasCompletedOnboarding": True} if onboarded else {"theme": "dark"}))


def history(path):
    return [json.loads(l) for l in path.read_text().splitlines()]


def test_an_onboarded_session_writes_history_and_transcript_in_its_dir(probe):
    run, home, _work, cwd = probe
    sdir = home / ".claude" / "sessions" / "s1"
    seed(sdir / ".claude.json")
    (home / ".claude" / ".credentials.json").write_text("{}")
    r = run("t-0", {"CLAUDE_CONFIG_DIR": str(sdir), "CLAUDE_SECURESTORAGE_CONFIG_DIR": str(home / ".claude")})
    assert r["screen"] == "prompt" and r["store"] == str(home / ".claude")
    [line] = history(sdir / "history.jsonl")
    assert line["display"] == "csdeploy verify t-0" and line["project"] == str(cwd)
    assert line["sessionId"] == r["session_id"]
    assert (sdir / "projects" / mangle(str(cwd)) / (r["session_id"] + ".jsonl")).is_file()
    assert not (home / ".claude" / "history.jsonl").exists()


def test_a_session_without_an_onboarded_claude_json_shows_the_onboarding(probe):
    run, home, _work, _cwd = probe
    sdir = home / ".claude" / "sessions" / "s1"
    r = run("t-0", {"CLAUDE_CONFIG_DIR": str(sdir), "CLAUDE_SECURESTORAGE_CONFIG_DIR": str(home / ".claude")})
    assert r["screen"] == "onboarding"
    assert json.loads((sdir / ".claude.json").read_text()) == {"numStartups": 1}, "created as the client does"
    assert oct((sdir / ".claude.json").stat().st_mode & 0o777) == "0o600"
    assert not (sdir / "history.jsonl").exists()
    assert not (sdir / "projects").exists() or not any((sdir / "projects").rglob("*.jsonl"))


def test_a_user_who_never_ran_claude_sees_no_difference_in_a_session(probe):
    run, home, _work, _cwd = probe
    sdir = home / ".claude" / "sessions" / "s1"
    r = run("t-0", {"CLAUDE_CONFIG_DIR": str(sdir)}, onboarded=False, login=False)
    assert r["screen"] == "prompt"


def test_the_store_is_the_config_dir_unless_securestorage_is_set(probe):
    run, home, _work, _cwd = probe
    sdir = home / ".claude" / "sessions" / "s1"
    seed(sdir / ".claude.json")
    (home / ".claude" / ".credentials.json").write_text("{}")
    r = run("t-0", {"CLAUDE_CONFIG_DIR": str(sdir)})
    assert r["screen"] == "login" and r["store"] is None
    (sdir / ".credentials.json").symlink_to(home / ".claude" / ".credentials.json")
    assert run("t-1", {"CLAUDE_CONFIG_DIR": str(sdir)})["screen"] == "prompt", "a link is followed on read"
    r = run("t-2", {"CLAUDE_CONFIG_DIR": str(sdir), "CLAUDE_SECURESTORAGE_CONFIG_DIR": ""})
    assert r["store"] == ""


def test_settings_env_moves_history_and_transcripts_not_the_claude_json(probe):
    run, home, _work, cwd = probe
    sdir = home / ".claude" / "sessions" / "s1"
    seed(sdir / ".claude.json")
    elsewhere = home / "elsewhere"
    (sdir / "settings.json").write_text('{\n  "env": {\n    "CLAUDE_CONFIG_DIR": "%s"\n  }\n}\n' % elsewhere)
    r = run("t-0", {"CLAUDE_CONFIG_DIR": str(sdir)}, login=False)
    assert r["data_dir"] == str(elsewhere)
    assert history(elsewhere / "history.jsonl")[0]["display"] == "csdeploy verify t-0"
    assert (elsewhere / "projects" / mangle(str(cwd)) / (r["session_id"] + ".jsonl")).is_file()
    assert not (sdir / "history.jsonl").exists()


def test_no_config_dir_means_home_and_the_users_claude_json(probe):
    run, home, _work, _cwd = probe
    seed(home / ".claude.json")
    r = run("t-0", {}, login=False)
    assert r["config_dir"] is None and r["screen"] == "prompt"
    assert history(home / ".claude" / "history.jsonl")[0]["display"] == "csdeploy verify t-0"


def test_an_emptied_environment_still_finds_home_and_reports(probe):
    run, home, _work, _cwd = probe
    seed(home / ".claude.json")
    script_env = {"PATH": os.environ["PATH"]}
    r = run("t-0", dict(script_env, HOME=""), login=False)
    assert r is not None and r["screen"] == "prompt"
    assert (home / ".claude" / "history.jsonl").is_file(), "the verifier's home, not /"


def test_continue_picks_the_newest_conversation_of_its_projects_dir(probe):
    run, home, _work, cwd = probe
    sdir = home / ".claude" / "sessions" / "s1"
    seed(sdir / ".claude.json")
    env = {"CLAUDE_CONFIG_DIR": str(sdir)}
    first = run("t-0", env, login=False, sid="11111111-1111-4111-8111-111111111111")
    older = sdir / "projects" / mangle(str(cwd)) / "22222222-2222-4222-8222-222222222222.jsonl"
    older.write_text("{}\n")
    os.utime(str(older), (1, 1))
    again = run("t-0r", env, login=False, cont=True, sid="33333333-3333-4333-8333-333333333333")
    assert again["session_id"] == first["session_id"]
    lines = history(sdir / "history.jsonl")
    assert [l["sessionId"] for l in lines] == [first["session_id"]] * 2
    empty = home / ".claude" / "sessions" / "s2"
    seed(empty / ".claude.json")
    fresh = run("t-1r", {"CLAUDE_CONFIG_DIR": str(empty)}, login=False, cont=True,
                sid="44444444-4444-4444-8444-444444444444")
    assert fresh["session_id"] == "44444444-4444-4444-8444-444444444444", "nothing to continue: a new one"
