"""csdeploy's parallel-isolation verification, run on the host being verified.

The agent loads this file and calls run(args) inside its apply step, so a
`csdeploy verify` costs a host one remote command. It repeats, through the
deployed launcher, the proof the LXC 122 report made by hand, and more: N
sessions are started at once with a client that behaves like Claude Code
(`probe`) or the real Claude Code (`claude`), then every check is judged from
what really happened on the filesystem. Each check returns a stable id, a
status (pass|fail|warn|skip) and, on failure, what was expected and what was
found. The verifier reads the registry format itself rather than importing the
deployed registry library: the code under test does not get to grade itself.

How the verifier and the probes meet (work/ is a private temporary directory):

  work/started   FIFO the verifier holds open read-write. Each probe, once it
                 has written its history line and its report files, writes
                 one line, its token (a write below PIPE_BUF is atomic).
  work/release   FIFO the verifier holds open read-write for the whole run.
                 Each probe then blocks in `read` on it; the verifier writes
                 one newline per start marker it has read, and a shell's
                 `read` takes exactly one (it reads a pipe byte by byte).
  work/all-started  created just before the release when all N markers came
                 in first: a probe that finds it after its `read` was
                 released because everybody had started.

The verifier releases the probes once every session has sent its marker and
been seen running (registry entry "active" or its active link), or when
`wait` seconds have passed; a marker read after that is answered as soon as
that session has been looked at. Nothing polls in the normal course: the
verifier sleeps in select() on the `started` FIFO and on a pipe SIGCHLD
writes to, with a deadline, and a probe runs shell builtins only. (Looked for
every POLL or so: a session that has started but is not yet in the registry
or sessions/active, and the real client's sessions, which send no markers.)
Since no probe can end before its release, sessions whose markers all arrived
before the release ran at once; the times in the report are the verifier's
(marker read, launcher reaped).

A probe must not outlive its verifier: when the verifier ends or dies, its
descriptors close and a probe blocked in `read` gets an end of file; an
interrupted verifier removes work/ first, so a probe that comes later finds
nothing to wait on; and a probe waits only while the verifier's process
exists (`kill -0`), since opening `release` with no writer left would block.
A verifier stopped by SIGTERM or SIGHUP (run() catches them) first kills
the launchers still running and removes this run's sessions with the
cleaner, then dies of the signal. The sessions run in work/cwd, neither HOME
nor the verifier's directory, so a relative CLAUDE_CONFIG_DIR cannot pass.

Cost matters (one verification per host, many hosts per controller): the
launchers are started with posix_spawn (setsid and file actions in one call),
and the deployed cleaner runs once for all of a run's sessions.

The verifier is one source on the wire, kept as a few files by concern in
src/remote/verify/ and joined by src/builtin.rs after ../common.py (the
helpers every host-side program shares), in this order: main.py (this
text, the shared constants, run), probe.py (the stand-in client), launch.py
(starting and watching the sessions), client.py (the real client through a
terminal), checks.py (the judgements), cleanup.py (leaving the host as it
was). They share one namespace; each imports the modules it uses.

Python 3.8+ standard library only.
"""
import json
import os
import signal
import sys
import time


class _Uuid4:
    """The launcher's session names: UUID v4, lower case."""

    HEX = frozenset("0123456789abcdef")

    def match(self, name):
        parts = name.split("-")
        return ([len(p) for p in parts] == [8, 4, 4, 4, 12] and set(name) - {"-"} <= self.HEX
                and parts[2][0] == "4" and parts[3][0] in "89ab")


UUID_RE = _Uuid4()
SESSION_MB = 500
LAUNCHER_FAILURES = (64, 70, 75)
# Only for what has no event to wait for: a session that started but is not
# yet in the registry or sessions/active, and the real client (no markers).
POLL = 0.02
POLL_MAX = 0.2
WALK_LIMIT = 20000
# The deployed scripts people (and the launcher) run as programs.
EXECUTABLES = ("claude-session", "claude-session-list", "cleanup-sessions.py")


class Interrupted(BaseException):
    """SIGTERM or SIGHUP while the test sessions run (a CI job cancelled, a
    connection gone): unwind to run()'s clean-up, then die of the signal."""


class Stop:
    """The first SIGTERM/SIGHUP seen. While `armed` it interrupts the run;
    once the clean-up has begun it is only remembered, so the clean-up
    (and the cleaner, which runs in a session of its own) completes first."""

    signum = None
    armed = False


VERIFY_PREFIX = "csdeploy-verify-"


def other_runs(registry, prefix):
    """Ids of the test sessions of other verifications (named
    csdeploy-verify-<their run>-*), which are not this run's to judge."""
    return {sid for sid, entry in (registry or {}).items()
            if isinstance(entry, dict) and str(entry.get("name") or "").startswith(VERIFY_PREFIX)
            and not str(entry.get("name")).startswith(prefix)}

def _on_stop(signum, _frame):
    if Stop.signum is None:
        Stop.signum = signum
    if Stop.armed:
        Stop.armed = False
        raise Interrupted()


def run(args):
    saved = {}
    Stop.signum, Stop.armed = None, False
    try:
        for signum in (signal.SIGTERM, signal.SIGHUP):
            saved[signum] = signal.signal(signum, _on_stop)
    except ValueError:  # not the main thread: the caller owns the signals
        pass
    try:
        return {"ok": True, "checks": _run(args)}  # what the agent's program() takes
    except Interrupted:
        pass
    finally:
        Stop.armed = False
        for signum, handler in saved.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        if Stop.signum is not None and saved:
            # Cleaned up: now end as the signal meant us to.
            sys.stdout.flush()
            sys.stderr.flush()
            signal.signal(Stop.signum, signal.SIG_DFL)
            os.kill(os.getpid(), Stop.signum)
    raise SystemExit(128 + (Stop.signum or 15))  # not reached unless the signal is blocked


def _run(args):
    home = os.path.expanduser("~")
    claude_home = os.path.realpath(os.path.expanduser(args["claude_home"]))
    bindir = os.path.join(claude_home, "bin")
    sessions_dir = os.path.join(claude_home, "sessions")
    active_dir = os.path.join(sessions_dir, "active")
    launcher = os.path.join(bindir, "claude-session")
    default_history = os.path.join(claude_home, "history.jsonl")
    # No defaults here: src/modules/verify.rs has them and always sends these.
    n = int(args["sessions"])
    probe = args["client"] == "probe"
    wait_limit = float(args["wait"])
    per_session_state = list(args.get("per_session_state") or ())
    conf = read_conf(bindir)
    inherit_link = set(conf.get("inherit_link", args.get("inherit_link") or "").split())

    checks = [check_integrity(bindir, args.get("expected", {})), check_capacity(int(args.get("max_sessions") or 0))]
    why = cannot_run(launcher)
    if why:
        # A launcher nobody can run is a broken installation, not a reason
        # to skip: client and parallel-launch fail, the rest cannot be judged.
        reason = "the launcher %s cannot be run: %s" % (launcher, why)
        return checks + [Check("client").result("fail", "claude-session --which-client names the client", reason),
                         Check("parallel-launch").result(
            "fail", "%d sessions running at once through %s" % (n, launcher), reason)] + skipped(
            SESSION_CHECKS[1:], "no test session could run: " + reason)
    try:
        with open(launcher, "rb") as f:
            launcher_text = f.read()
    except OSError:
        launcher_text = b""
    env = dict(os.environ)
    # The host's own launcher settings, whatever this shell was given.
    for key in ("CLAUDE_CONFIG_DIR", "CLAUDE_SESSION_CONF", "CLAUDE_SECURESTORAGE_CONFIG_DIR", "CLAUDE_BIN"):
        env.pop(key, None)
    if not probe:
        # No request leaves the host: the API and every proxy at a closed
        # loopback port (each driven session gets a port of the verifier's
        # instead: client.py's ApiListener), nothing nonessential, no
        # update. The login is the
        # store's (what the credential-store check is about), not a token
        # from this shell's environment.
        env.update({"ANTHROPIC_BASE_URL": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
                    "HTTP_PROXY": "http://127.0.0.1:9", "ALL_PROXY": "http://127.0.0.1:9",
                    "https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9",
                    "all_proxy": "http://127.0.0.1:9",
                    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_AUTOUPDATER": "1"})
        env.setdefault("TERM", "xterm-256color")
        for key in ("NO_PROXY", "no_proxy", "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN"):
            env.pop(key, None)

    work = os.path.join(os.environ.get("TMPDIR") or "/tmp", "csdeploy-verify-" + os.urandom(8).hex())
    os.mkdir(work, 0o700)
    watch = None
    sessions = []
    run_id = os.urandom(4).hex()
    prefix = "%s%s-" % (VERIFY_PREFIX, run_id)
    before_ids = []
    outside = {}
    saved = {}
    cleaned = False
    asked = None
    Stop.armed = Stop.signum is None
    try:
        asked = ask_for_client(launcher, launcher_text, env, work)
        if not probe:
            client_check, client = check_client(probe, asked, env, work)
            checks.append(client_check)
            if client is None:
                return checks + skipped(SESSION_CHECKS, "no Claude Code to run: see the client check")
        cwd = os.path.join(work, "cwd")
        os.mkdir(cwd, 0o700)
        project = json.dumps(cwd)
        onboarded, logged_in = user_state(home, claude_home)
        if probe:
            client = os.path.join(work, "probe")
            with open(client, "w") as f:
                f.write(PROBE)
            os.chmod(client, 0o700)
            with open(os.path.join(work, "probe.env"), "w") as f:
                f.write("verifier_pid=%d\nproject=%s\nuser_home=%s\nmangled=%s\nexpect_onboarded=%s\n"
                        "expect_login=%s\n" % (os.getpid(), sh_quote(project), sh_quote(home),
                                                sh_quote(mangle(cwd)), "1" if onboarded else "",
                                                "1" if logged_in else ""))
            env["CLAUDE_BIN"] = client
        env["PWD"] = cwd
        sessions = [Session(i, "%s-%d" % (run_id, i)) for i in range(n)]
        for s in sessions:
            if probe:
                s.display = "csdeploy verify " + s.token
                s.argv = ["--name", s.name, "--force", "--", work, s.token]
                write_probe_args(s, work, project)
            else:
                s.display = s.prompt = "csdeployverify%sa%sz" % (letters(run_id), letters(str(s.index)))
                s.argv = ["--name", s.name, "--force"]
            s.log = os.path.join(work, "launcher-%s.log" % s.token)

        before_ids, before_registry = sessions_and_registry(sessions_dir)
        # Another verify running on this host at the same time owns its test
        # sessions: they come and go with it, and are not "pre-existing".
        others = other_runs(before_registry, prefix)
        before_ids = [sid for sid in before_ids if sid not in others]
        if before_registry is not None:
            before_registry = {sid: e for sid, e in before_registry.items() if sid not in others}
        default_before = snapshot_default(claude_home, home)
        history_before = file_state(default_history)
        outside = histories_outside(claude_home, sessions_dir, before_ids) if probe else {}
        saved = save_state_files(home, claude_home)

        phase = Check("parallel-launch")
        watch = Watch(work, probe)
        if probe:
            launch(sessions, launcher, env, work, cwd)
            observe(sessions, sessions_dir, active_dir, work, watch, wait_limit)
            watch.close()
            for s in sessions:
                s.report = read_report(work, s.token)
        else:
            drive_claude(sessions, sessions_dir, active_dir, default_history, watch, launcher, env, work, cwd)
            watch.close()
        launch_check = check_parallel(sessions, probe)
        launch_check["duration_ms"] = int((time.monotonic() - phase.started) * 1000)

        # Second round: each session resumed through the launcher, --continue.
        supported = b"resume" in launcher_text
        resumed = []
        for s in sessions:
            if not supported or not s.entry_id or not (s.report or {}).get("session_id"):
                continue
            r = Session(s.index, s.token + "r")
            r.of, s.resume = s, r
            if probe:
                r.display = "csdeploy verify " + r.token
                r.argv = ["resume", s.entry_id, "--", work, r.token, "--continue"]
                write_probe_args(r, work, project, [x.sid for x in sessions])
            else:
                r.display = r.prompt = "csdeployverify%sb%sz" % (letters(run_id), letters(str(s.index)))
                r.argv = ["resume", s.entry_id, "--", "--continue"]
            r.log = os.path.join(work, "launcher-%s.log" % r.token)
            r.name = s.name
            resumed.append(r)
        if resumed:
            watch = Watch(work, False)
            if probe:
                launch(resumed, launcher, env, work, cwd)
                deadline = time.monotonic() + 2 * wait_limit + 10
                while True:
                    reap(resumed, time.monotonic())
                    if all(r.exited is not None for r in resumed):
                        break  # no sleep after the last exit: nothing would wake it
                    if time.monotonic() > deadline:
                        for r in resumed:
                            if r.exited is None:
                                stop(r)
                    watch.sleep(POLL_MAX)
                for r in resumed:
                    r.report = read_report(work, r.token)
            else:
                drive_claude(resumed, sessions_dir, active_dir, default_history, watch, launcher, env, work, cwd)
            watch.close()
        others = {s.display for s in sessions} | {r.display for r in resumed}
        Stop.armed = False  # from here a signal waits until the clean-up is done

        if probe:
            # Asked before the sessions started; its answer is read now.
            checks.append(check_client(probe, asked, env, work)[0])
        checks += [
            launch_check,
            check_onboarding(sessions, probe, onboarded, logged_in),
            check_history(sessions, sessions_dir, default_history, others),
            check_directories(sessions, sessions_dir),
            check_shared_state(sessions, sessions_dir, inherit_link),
            check_inherit_policy(conf, per_session_state, sessions, sessions_dir),
            check_credential_store(sessions, sessions_dir, claude_home, home),
            check_default(default_before, snapshot_default(claude_home, home), history_before,
                          file_state(default_history), default_history),
            check_resume(sessions, sessions_dir, probe, supported),
            check_registry(sessions, sessions_dir),
            check_links(sessions, sessions_dir, active_dir),
        ]
        cleaned = True
        checks.append(cleanup(sessions, sessions_dir, bindir, env, work, before_ids, before_registry, prefix))
        undone = undo_probe_lines(outside, sessions + resumed)
        sids = [x for s in sessions + resumed for x in (s.sid, (s.report or {}).get("session_id")) if x]
        undone += restore_default(saved, default_before, claude_home, home, cwd, sids, default_history,
                                  history_before["size"] if history_before else None)
        if undone:
            checks[-1]["detail"] = "; ".join(([checks[-1]["detail"]] if checks[-1]["detail"] else []) + undone)
        return checks
    finally:
        Stop.armed = False
        if asked is not None:
            asked.stop()  # interrupted before its answer was read
        everyone = sessions + [s.resume for s in sessions if s.resume]
        if not cleaned and any(s.pid for s in everyone):
            # Interrupted (or crashed) mid-run: stop what still runs and
            # remove whatever this run left, as the cleanup check would.
            for s in everyone:
                if s.pid and s.exited is None:
                    kill_and_reap(s.pid)
                    s.exited = time.monotonic()
            if watch is not None:
                watch.restore()
            ids = test_session_ids(sessions, sessions_dir, prefix) - set(before_ids)
            if ids:
                remove_test_sessions(ids, sessions_dir, bindir, env, os.devnull)
            undo_probe_lines(outside, everyone)
        for s in everyone:
            if s.drive is not None:
                s.drive.close()
        # After an interruption probes may still run: the directory goes
        # first, so that what they do once the FIFOs close (their end of
        # file) finds nowhere to write; a file one made meanwhile means
        # another try.
        for _ in range(3):
            remove_tree(work)
            if not os.path.lexists(work):
                break
        if watch is not None:
            watch.close()
