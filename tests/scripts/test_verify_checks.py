"""verify.py's new judgements on fake trees: the client wrapper, the inherit
policy, the credential store a client uses, and putting back what a broken
real-client run changed outside sessions/."""
import json
import os


def test_a_shell_wrapper_setting_the_config_dir_is_named(verify, tmp_path):
    wrapper = tmp_path / "claude"
    wrapper.write_text('#!/bin/sh\nexport CLAUDE_CONFIG_DIR="$HOME/.mine"\nexec /opt/claude "$@"\n')
    assert "sets CLAUDE_CONFIG_DIR itself" in verify["wrapper_problem"](str(wrapper))
    env_wrapper = tmp_path / "claude-env"
    env_wrapper.write_text("#!/usr/bin/env bash\nCLAUDE_SECURESTORAGE_CONFIG_DIR=/x exec /opt/claude \"$@\"\n")
    assert "CLAUDE_SECURESTORAGE_CONFIG_DIR" in verify["wrapper_problem"](str(env_wrapper))
    plain = tmp_path / "claude-plain"
    plain.write_text('#!/bin/sh\nexec /opt/claude "$@"\n')
    assert verify["wrapper_problem"](str(plain)) is None
    node = tmp_path / "cli.js"
    node.write_text("#!/usr/bin/env node\nprocess.env.CLAUDE_CONFIG_DIR\n")
    assert verify["wrapper_problem"](str(node)) is None, "Claude Code's own script reads it, of course"
    binary = tmp_path / "claude-bin"
    binary.write_bytes(b"\x7fELF CLAUDE_CONFIG_DIR")
    assert verify["wrapper_problem"](str(binary)) is None


def test_session_conf_sharing_per_session_state_fails(verify, tmp_path):
    conf = {"inherit_link": "settings.json projects/", "inherit_copy": "CLAUDE.md ./history.jsonl"}
    result = verify["check_inherit_policy"](conf, ["history.jsonl", "projects", ".claude.json"], [], str(tmp_path))
    assert result["status"] == "fail"
    assert "inherit_link shares projects/" in result["actual"]
    assert "inherit_copy shares ./history.jsonl" in result["actual"]
    ok = verify["check_inherit_policy"]({"inherit_link": "settings.json agents"}, ["projects"], [], str(tmp_path))
    assert ok["status"] == "pass"


def test_the_store_follows_securestorage_then_the_config_dir(verify, tmp_path):
    home = str(tmp_path)
    store_of = verify["store_of"]
    assert store_of({"store": "/a", "config_dir": "/b"}, home, "/")[0] == "/a"
    assert store_of({"store": "", "config_dir": "/b"}, home, "/")[0] == os.path.join(home, ".claude")
    assert store_of({"store": None, "config_dir": "/b"}, home, "/") == ("/b", False)
    assert store_of({"store": None, "config_dir": None}, home, "/")[0] == os.path.join(home, ".claude")


def test_what_a_broken_run_changed_outside_sessions_is_put_back(verify, tmp_path):
    home = tmp_path / "home"
    claude_home = home / ".claude"
    (claude_home / "sessions").mkdir(parents=True)
    (claude_home / "projects" / "-other").mkdir(parents=True)
    user = home / ".claude.json"
    user.write_text('{"hasCompletedOnboarding":true}')
    old_history = b'{"display":"mine","project":"/home/u"}\n'
    (claude_home / "history.jsonl").write_bytes(old_history)
    cwd = "/tmp/csdeploy-verify-x/cwd"
    saved = verify["save_state_files"](str(home), str(claude_home))
    before = verify["snapshot_default"](str(claude_home), str(home))

    # What a client without its own config dir does.
    user.write_text('{"hasCompletedOnboarding":true,"numStartups":9}')
    with open(str(claude_home / "history.jsonl"), "ab") as f:
        f.write(b'{"display":"x","project":%s,"sessionId":"s-1"}\n' % json.dumps(cwd).encode())
    mine = claude_home / "projects" / verify["mangle"](cwd)
    mine.mkdir()
    (mine / "s-1.jsonl").write_text("{}")
    (claude_home / "backups").mkdir()
    (claude_home / "backups" / ".claude.json.backup.1").write_text("{}")
    (claude_home / "projects" / "-other" / "kept.jsonl").write_text("{}")  # not provably ours

    notes = verify["restore_default"](saved, before, str(claude_home), str(home), cwd, ["s-1"],
                                      str(claude_home / "history.jsonl"), len(old_history))
    assert user.read_text() == '{"hasCompletedOnboarding":true}'
    assert (claude_home / "history.jsonl").read_bytes() == old_history
    assert not mine.exists() and not (claude_home / "backups").exists()
    assert (claude_home / "projects" / "-other" / "kept.jsonl").exists()
    assert any("put back" in n for n in notes), notes


def test_history_lines_of_others_are_left(verify, tmp_path):
    home = tmp_path / "home"
    claude_home = home / ".claude"
    claude_home.mkdir(parents=True)
    path = claude_home / "history.jsonl"
    path.write_bytes(b"")
    saved = verify["save_state_files"](str(home), str(claude_home))
    before = verify["snapshot_default"](str(claude_home), str(home))
    cwd = "/tmp/csdeploy-verify-y/cwd"
    added = (b'{"display":"x","project":%s}\n' % json.dumps(cwd).encode()) + b'{"display":"a person","project":"/w"}\n'
    path.write_bytes(added)
    notes = verify["restore_default"](saved, before, str(claude_home), str(home), cwd, [], str(path), 0)
    assert path.read_bytes() == added
    assert any("left" in n for n in notes), notes


def test_another_runs_session_being_registered_is_not_taken_for_a_pre_existing_one(verify, tmp_path):
    """The registry helper makes a session's directory, then its entry, under
    an exclusive lock: the verifier's view of what existed before it must
    wait for the entry, or another verify's session looks pre-existing and
    its removal by that verify fails this one ("pre-existing sessions gone")."""
    import fcntl
    import threading
    import time

    sessions = tmp_path / "sessions"
    sessions.mkdir()
    sid = "0b5c1a52-7d0e-4c3f-9a1b-2c3d4e5f6a7b"
    lock = os.open(str(sessions / ".registry.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    (sessions / sid).mkdir()  # the helper is between its mkdir and its entry
    seen = []
    reader = threading.Thread(target=lambda: seen.append(verify["sessions_and_registry"](str(sessions))))
    reader.start()
    time.sleep(0.3)
    assert not seen, "read while the registry was being written"
    entry = {"id": sid, "name": "csdeploy-verify-0a1b2c3d-0", "status": "active"}
    (sessions / ".registry").write_text(json.dumps({"sessions": {sid: entry}}))
    os.close(lock)
    reader.join(10)
    ids, registry = seen[0]
    assert ids == [sid] and sid in registry, "the directory and its entry, seen together"
    assert verify["other_runs"](registry, "csdeploy-verify-ffffffff-") == {sid}


def test_sessions_are_read_without_a_lock_file_and_past_a_stuck_holder(verify, tmp_path):
    import fcntl

    assert verify["sessions_and_registry"](str(tmp_path / "none")) == ([], None)
    sessions = tmp_path / "sessions"
    sessions.mkdir()
    lock = os.open(str(sessions / ".registry.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        assert verify["sessions_and_registry"](str(sessions), timeout=0.2) == ([], None)
    finally:
        os.close(lock)


def test_a_retried_request_is_seen_in_the_pieces_ink_redraws(verify):
    """What Claude Code 2.1.337 drew while it retried its request (a session
    that sees the login), as the verifier reads it: words in pieces, the
    retry counter whole. Before, this was "no answer" and passed anyway."""
    seen = "ctointerrupt·←foragents3321…·attemp3/10in5s·atempt4/104321…·attemp4/10in9s·atempt5/108"
    assert verify["made_a_request"](seen)
    assert verify["made_a_request"]("APIError:ConnectionrefusedRetryingin1s")
    assert not verify["made_a_request"]("Notloggedin·Run/logintosignin")
    assert not verify["made_a_request"]("❯Try\"howdoesthiswork\"")


def test_a_session_whose_client_never_answered_does_not_pass_onboarding(verify):
    import types

    s = verify["Session"](0, "run-0")
    s.drive = types.SimpleNamespace(login=None, landed=("h", "id"), seen="❯ typed", step="exit", showed=None,
                                    api=types.SimpleNamespace(prompted=False))
    result = verify["check_onboarding"]([s], False, True, True)
    assert result["status"] == "fail"
    assert "did not answer its prompt" in result["actual"]
    s.drive.login = True
    assert verify["check_onboarding"]([s], False, True, True)["status"] == "pass"
    s.drive.api.prompted = True
    assert "the verifier's loopback API took each request" in verify["check_onboarding"]([s], False, True, True)["actual"]
    s.drive.login = False
    assert "Not logged in" in verify["check_onboarding"]([s], False, True, True)["actual"]


def test_the_loopback_api_knows_a_prompt_sent_to_it(verify):
    """What tells a session that sees the login from one that does not: its
    client sends the typed prompt to the API, here the verifier's port."""
    import select
    import socket

    def heard(request):
        api = verify["ApiListener"]()
        try:
            assert set(api.environ().values()) == {api.url}
            client = socket.create_connection(("127.0.0.1", int(api.url.rsplit(":", 1)[1])))
            client.sendall(request)
            for _ in range(20):
                api.serve(select.select(api.fds(), [], [], 0.5)[0])
                if api.prompted or api.heard:
                    break
            client.close()
            return api.prompted
        finally:
            api.close()

    assert heard(b"POST /v1/messages?beta=true HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert heard(b"POST http://127.0.0.1:9/v1/messages HTTP/1.1\r\n\r\n")  # through the proxy variables
    assert not heard(b"GET /api/hello HTTP/1.1\r\n\r\n")
