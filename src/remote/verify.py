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

Python 3.8+ standard library only.
"""
import json
import os
import select
import signal
import stat
import subprocess
import sys
import time
from hashlib import sha256


class _Uuid4:
    """The launcher's session names: UUID v4, lower case (no `re`: see sha256)."""

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

# The stand-in client, in POSIX sh and builtins only but one mkdir (every fork
# counts on a loaded host). It mirrors Claude Code 2.1.332 in everything the
# checks judge:
# - its config dir is $CLAUDE_CONFIG_DIR, else ~/.claude (set but empty: the
#   working directory); .claude.json goes into it (else ~/.claude.json) and
#   is created when missing;
# - history, transcripts (projects/<cwd with / as ->/<session uuid>.jsonl)
#   go where `env.CLAUDE_CONFIG_DIR` of the settings.json it sees points, as
#   the real client applies that variable at start (one line per key read);
# - its credential store is $CLAUDE_SECURESTORAGE_CONFIG_DIR (empty:
#   ~/.claude), else the config dir;
# - it shows onboarding (no history, no transcript) when its .claude.json
#   lacks hasCompletedOnboarding, or the login screen when its store has no
#   .credentials.json; the verifier tells it whether the user's own `claude`
#   would pass those screens (expect_onboarded, expect_login), since a user
#   who never ran claude sees them in plain `claude` too;
# - `--continue` continues the newest transcript of its projects/<cwd>.
# It gets the work dir and its token as arguments, the rest from files there
# (a launcher that empties the environment must not blind it); it reports
# what it saw, announces itself and waits for the release (first round only).
PROBE = r"""#!/bin/sh
work=$1 token=$2 cont=
[ "${3-}" = --continue ] && cont=1
. "$work/probe.env"
. "$work/$token.args"
home=${HOME:-$user_home}
if [ "${CLAUDE_CONFIG_DIR+set}" ]; then
  if [ -n "$CLAUDE_CONFIG_DIR" ]; then config=$CLAUDE_CONFIG_DIR state=$CLAUDE_CONFIG_DIR/.claude.json
  else config=$PWD state=$home/.claude.json; fi
else config=$home/.claude state=$home/.claude.json; fi
if [ "${CLAUDE_SECURESTORAGE_CONFIG_DIR+set}" ]; then store=${CLAUDE_SECURESTORAGE_CONFIG_DIR:-$home/.claude}
else store=$config; fi
data=$config
if [ -f "$config/settings.json" ]; then
  while IFS= read -r line || [ -n "$line" ]; do
    case $line in *'"CLAUDE_CONFIG_DIR"'*)
      v=${line#*'"CLAUDE_CONFIG_DIR"'}; v=${v#*\"}; v=${v%%\"*}; [ -n "$v" ] && data=$v ;;
    esac
  done < "$config/settings.json"
fi
dir=$data/projects/$mangled
[ -d "$dir" ] && [ -d "$config" ] || mkdir -p "$config" "$dir"
[ -e "$state" ] || { umask 077; printf '{"numStartups":1}\n' > "$state"; }
onboarded=
while IFS= read -r line || [ -n "$line" ]; do
  case $line in *'"hasCompletedOnboarding":true'*|*'"hasCompletedOnboarding": true'*) onboarded=1; break ;; esac
done < "$state"
screen=prompt
if [ -z "$onboarded" ] && [ -n "$expect_onboarded" ]; then screen=onboarding
elif [ ! -e "$store/.credentials.json" ] && [ -n "$expect_login" ]; then screen=login; fi
if [ $screen = prompt ]; then
  if [ -n "$cont" ]; then
    best=
    for f in "$dir"/*.jsonl; do
      [ -e "$f" ] || continue
      if [ -z "$best" ] || [ "$f" -nt "$best" ]; then best=$f; fi
    done
    [ -n "$best" ] && { sid=${best##*/}; sid=${sid%.jsonl}; }
  fi
  printf '{"type":"user","message":{"role":"user","content":"csdeploy verify %s"},"sessionId":"%s"}\n' \
    "$token" "$sid" >> "$dir/$sid.jsonl"
  printf '{"display":"csdeploy verify %s","pastedContents":{},"timestamp":%s,"project":%s,"sessionId":"%s"}\n' \
    "$token" "$ms" "$project" "$sid" >> "$data/history.jsonl"
fi
[ "${CLAUDE_CONFIG_DIR+set}" ] && printf %s "$CLAUDE_CONFIG_DIR" > "$work/$token.config"
[ "${CLAUDE_SESSION_DIR+set}" ] && printf %s "$CLAUDE_SESSION_DIR" > "$work/$token.legacy"
[ "${CLAUDE_SECURESTORAGE_CONFIG_DIR+set}" ] && printf %s "$CLAUDE_SECURESTORAGE_CONFIG_DIR" > "$work/$token.store"
printf '%s\n%s\n%s\n' "$screen" "$sid" "$data" > "$work/$token.seen"
all=0
if [ -z "$cont" ]; then
  printf '%s\n' "$token" 1<> "$work/started"
  kill -0 "$verifier_pid" 2>/dev/null && read -r x < "$work/release"
  [ -e "$work/all-started" ] && all=1
fi
printf %s "$all" > "$work/$token.done"
exit 0
"""


def read_report(work, token):
    """What the probe of session `token` reported, or None if it never got to the end."""
    base = os.path.join(work, token)
    done = read_text(base + ".done")
    if done is None:
        return None
    seen = (read_raw(base + ".seen") or "").split("\n")
    seen += [""] * 3
    return {"token": token, "all_started": done == "1",
            "config_dir": read_text(base + ".config"), "session_dir": read_text(base + ".legacy"),
            "store": read_raw(base + ".store"), "screen": seen[0] or None, "session_id": seen[1] or None,
            "data_dir": seen[2] or None}


def read_raw(path):
    """A file's text as it is (None if absent): "" is a value here."""
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


class Check:
    def __init__(self, check_id):
        self.id = check_id
        self.started = time.monotonic()

    def result(self, status, expected=None, actual=None, detail=None):
        return {"id": self.id, "status": status, "expected": expected, "actual": actual,
                "detail": detail, "duration_ms": int((time.monotonic() - self.started) * 1000)}

    def verdict(self, problems, expected, passed, detail=None):
        if problems:
            return self.result("fail", expected, "; ".join(problems), detail)
        return self.result("pass", expected, passed, detail)


def sha256_of(path):
    digest = sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def read_registry(sessions_dir):
    """The registry's sessions by id, or None when it is missing or unreadable."""
    try:
        with open(os.path.join(sessions_dir, ".registry")) as f:
            data = json.loads(f.read())
        sessions = data.get("sessions")
        return sessions if isinstance(sessions, dict) else None
    except (OSError, ValueError, AttributeError):
        return None


def active_links(active_dir):
    """Session id -> where its active link points. One readlink per link: the
    launcher may remove a link at any moment, and a link read half-way must
    not look like one pointing somewhere else."""
    links = {}
    try:
        names = os.listdir(active_dir)
    except OSError:
        return links
    for name in names:
        try:
            target = os.readlink(os.path.join(active_dir, name))
        except OSError:
            continue
        links[name] = os.path.normpath(os.path.join(active_dir, target))
    return links


def file_state(path):
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    state = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino}
    if stat.S_ISREG(st.st_mode):
        state["sha256"] = sha256_of(path)
    return state


def snapshot_default(claude_home, home):
    """Everything under the default config dir except sessions/, plus ~/.claude.json."""
    entries = {}
    for root, dirs, files in os.walk(claude_home):
        if root == claude_home and "sessions" in dirs:
            dirs.remove("sessions")
        for name in dirs + files:
            path = os.path.join(root, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            entries[os.path.relpath(path, claude_home)] = (st.st_mode, st.st_size, st.st_mtime_ns, st.st_ino)
            if len(entries) >= WALK_LIMIT:
                return entries
    # The user's own state file, which the launcher seeds sessions from and
    # a client without CLAUDE_CONFIG_DIR writes to.
    beside = os.path.join(home, ".claude.json")
    if os.path.lexists(beside):
        st = os.lstat(beside)
        entries["~/.claude.json"] = (st.st_mode, st.st_size, st.st_mtime_ns, st.st_ino)
    return entries


def session_ids(sessions_dir):
    try:
        return sorted(n for n in os.listdir(sessions_dir) if UUID_RE.match(n))
    except OSError:
        return []


class Session:
    """One test session: what the verifier launched and what it learned."""

    def __init__(self, index, token):
        self.index = index
        self.token = token
        self.name = "csdeploy-verify-" + token
        self.pid = None
        self.returncode = None
        # The verifier's clock (time.monotonic): launched, start marker read,
        # launcher reaped.
        self.launched = None
        self.started = None
        self.exited = None
        self.seen_active = False
        self.seen_link = None
        self.dir_hint = None
        self.report = None
        self.entry_id = None
        self.cwd = "/"
        self.history_lines = ()  # the exact lines its probe may append (see PROBE)
        self.argv = []  # the launcher's arguments
        self.sid = new_uuid()  # the probe's conversation id (the real client picks its own)
        self.resume = None  # the Session that resumed this one
        self.of = None  # for a resumption: the Session it resumes
        self.drive = None  # the real client's terminal (Drive)
        self.display = None  # the prompt's history display, exactly
        self.prompt = None  # what is typed into the real client
        self.log = None

    def label(self):
        return "session %d" % (self.index + 1)

    def seen(self):
        """Seen running: registry entry active, or active link (either will do
        to release the probes; each has its own check)."""
        return self.seen_active or self.seen_link is not None


def inherited_fds():
    """Descriptors this process got from its parent and would pass on
    (Python's own are close-on-exec): a launcher must not hold them, just as
    subprocess's close_fds would have closed them."""
    fds = []
    for name in os.listdir("/proc/self/fd") if os.path.isdir("/proc/self/fd") else ():
        try:
            if int(name) > 2 and os.get_inheritable(int(name)):
                fds.append(int(name))
        except OSError:  # the listing's own descriptor, closed by now
            pass
    return fds


def spawn(argv, env, log, close=(), tty=None):
    """Starts argv in a new session (so a hung one can be killed with all its
    children), stdin /dev/null, stdout and stderr to `log`; or, with `tty`,
    all three on that terminal, which becomes its controlling terminal (the
    new session leader opens it). posix_spawn: no fork of this interpreter,
    no subprocess module to import."""
    if tty:
        actions = [(os.POSIX_SPAWN_OPEN, 0, tty, os.O_RDWR, 0),
                   (os.POSIX_SPAWN_DUP2, 0, 1), (os.POSIX_SPAWN_DUP2, 0, 2)]
    else:
        actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                   (os.POSIX_SPAWN_OPEN, 1, log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
                   (os.POSIX_SPAWN_DUP2, 1, 2)]
    actions += [(os.POSIX_SPAWN_CLOSE, fd) for fd in close]
    # Python ignores SIGPIPE and SIGXFSZ; the launcher gets the defaults, as
    # subprocess's restore_signals would give it.
    options = {"file_actions": actions, "setsigdef": (signal.SIGPIPE, signal.SIGXFSZ)}
    try:
        return os.posix_spawn(argv[0], argv, env, setsid=True, **options)
    except NotImplementedError:  # a C library without POSIX_SPAWN_SETSID
        return os.posix_spawn(argv[0], argv, env, setpgroup=0, **options)


def new_uuid():
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    h = bytes(b).hex()
    return "%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])


def mangle(path):
    """Claude Code's projects/ name for a working directory."""
    return "".join(c if c.isalnum() else "-" for c in path)


def sh_quote(value):
    return "'%s'" % value.replace("'", "'\\''")


def write_probe_args(s, work, project, run_sids=()):
    """The probe's per-session values (see PROBE), and the history lines it
    may append with them: exactly these, for undo_probe_lines. A resumed
    probe continues whichever conversation of the run it finds (a broken
    launcher may show it another session's)."""
    ms = str(int(time.time() * 1000))
    with open(os.path.join(work, s.token + ".args"), "w") as f:
        f.write("ms=%s sid=%s\n" % (ms, s.sid))
    sids = [s.sid] + [x for x in run_sids if x != s.sid]
    s.history_lines = tuple(('{"display":"csdeploy verify %s","pastedContents":{},"timestamp":%s,"project":%s,'
                             '"sessionId":"%s"}\n' % (s.token, ms, project, sid)).encode() for sid in sids)


def launch(sessions, launcher, env, work, cwd, terminal=None):
    """Starts each session's launcher. `terminal(s)`, for the real client:
    the path of the pseudo-terminal it gets as stdin, stdout and stderr."""
    # Started from a directory of their own, neither HOME nor ours: a
    # relative CLAUDE_CONFIG_DIR must not happen to work (session_dir_of).
    # posix_spawn has no cwd argument.
    try:
        back = os.getcwd()
    except OSError:
        back = None
    os.chdir(cwd)
    close = inherited_fds()
    try:
        for s in sessions:
            s.launched = time.monotonic()
            s.cwd = cwd
            tty = terminal(s) if terminal else None
            s.pid = spawn([launcher] + s.argv, env, os.path.join(work, "launcher-%s.log" % s.token), close, tty)
    finally:
        if back is not None:
            os.chdir(back)


def _wake(_signum, _frame):
    pass  # the C handler has already written to the wakeup pipe: that is the point


class Watch:
    """What the verifier sleeps on: the `started` FIFO (probe only) and a pipe
    that SIGCHLD writes to (set_wakeup_fd), so a launcher's exit or a start
    marker wakes it at once and nothing needs polling. It also holds the
    `release` FIFO (see the module docstring)."""

    def __init__(self, work, probe):
        self.work = work
        self.probe = probe
        self.released = False
        self.owed = 0  # start markers read, not yet answered with a newline
        self.pending = b""
        self.fds = []
        self.started_fd = self.release_fd = self.wake_fd = None
        self.saved = None
        if probe:
            # Read-write: opening never blocks, and the FIFO never reads as
            # ended while we hold it, whoever else opens or closes it.
            for name in ("started", "release"):
                os.mkfifo(os.path.join(work, name), 0o600)
            self.started_fd = os.open(os.path.join(work, "started"), os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
            self.release_fd = os.open(os.path.join(work, "release"), os.O_RDWR | os.O_CLOEXEC)
            self.fds += [self.started_fd, self.release_fd]
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.fds += [r, w]
        try:
            old = signal.set_wakeup_fd(w)
        except ValueError:  # not the main thread: sleep in short steps instead
            pass
        else:
            self.saved = (signal.signal(signal.SIGCHLD, _wake), old)
            self.wake_fd = r

    def restore(self):
        """Gives SIGCHLD back to whoever had it (before the cleaner runs)."""
        if self.saved:
            handler, wakeup = self.saved
            signal.set_wakeup_fd(wakeup)
            # None: a handler not set from Python, which cannot be put back.
            signal.signal(signal.SIGCHLD, signal.SIG_DFL if handler is None else handler)
            self.saved = None

    def close(self):
        self.restore()
        for fd in self.fds:  # a probe still in `read` gets its end of file
            os.close(fd)
        self.fds = []

    def sleep(self, timeout):
        if self.wake_fd is None:
            timeout = min(timeout, POLL_MAX)
        fds = [fd for fd in (self.started_fd, self.wake_fd) if fd is not None]
        ready = select.select(fds, [], [], max(0.0, timeout))[0]
        if self.wake_fd in ready:
            try:
                os.read(self.wake_fd, 512)
            except BlockingIOError:
                pass

    def markers(self):
        """Tokens of the start markers that came in since the last call."""
        if self.started_fd is None:
            return []
        try:
            while True:
                data = os.read(self.started_fd, 65536)
                self.pending += data
                if len(data) < 65536:
                    break
        except BlockingIOError:
            pass
        lines = self.pending.split(b"\n")
        self.pending = lines.pop()
        self.owed += len(lines)
        return [line.decode("utf-8", "replace") for line in lines]

    def release(self, all_started):
        """Lets every probe that announced itself go on, now and from now on."""
        if all_started:
            open(os.path.join(self.work, "all-started"), "w").close()
        self.released = True
        self.pay()

    def pay(self):
        if self.owed:
            os.write(self.release_fd, b"\n" * self.owed)
            self.owed = 0


def reap(sessions, now):
    for s in sessions:
        if s.exited is None:
            pid, status = os.waitpid(s.pid, os.WNOHANG)
            if pid:
                s.exited = now
                s.returncode = exit_code(status)


def exit_code(status):
    """What subprocess would report: the exit status, or -N when killed by signal N."""
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def look(sessions, sessions_dir, active_dir, probe):
    """One look at the registry and the active links for the running sessions."""
    registry = read_registry(sessions_dir) or {}
    by_name = {e.get("name"): (sid, e) for sid, e in registry.items() if isinstance(e, dict)}
    links = active_links(active_dir)
    for s in sessions:
        if s.exited is not None or (probe and s.started is None):
            continue
        sid, entry = by_name.get(s.name, (None, None))
        if entry is not None:
            s.entry_id = sid
            if entry.get("status") == "active":
                s.seen_active = True
        # Links are looked for by the session's id, registered or not.
        link_id = sid or (os.path.basename(s.dir_hint) if s.dir_hint else None)
        if link_id in links:
            s.seen_link = links[link_id]


def observe(sessions, sessions_dir, active_dir, work, watch, wait_limit):
    """Watches the sessions run until every launcher has exited: registry
    entries and active links are looked at while each session is alive; the
    probes are released once all have started and been seen, or at the
    deadline. The launchers of a run that hangs are killed."""
    probe = watch.probe
    by_token = {s.token: s for s in sessions}
    first = min(s.launched for s in sessions)
    release_at = first + wait_limit
    hard_deadline = first + 2 * wait_limit * max(1, len(sessions)) + 10
    poll = POLL
    while True:
        now = time.monotonic()
        # Exits before markers: of an exit and a marker read in the same
        # round, the exit cannot be the later one.
        reap(sessions, now)
        fresh = False
        for token in watch.markers():
            s = by_token.get(token)
            if s is not None and s.started is None:
                s.started = now
                s.dir_hint = read_text(os.path.join(work, token + ".config")) or read_text(
                    os.path.join(work, token + ".legacy"))
                fresh = True
        running = [s for s in sessions if s.exited is None]
        if not running:
            return
        if now > hard_deadline:
            for s in running:
                try:
                    os.killpg(s.pid, signal.SIGKILL)
                except OSError:
                    pass
                s.returncode = exit_code(os.waitpid(s.pid, 0)[1])
                s.exited = time.monotonic()
            return
        all_started = all(s.started is not None for s in sessions)
        timeout = hard_deadline - now
        if not probe:
            # The real client sends no markers: look every POLL until each
            # session has shown both its entry and its link.
            if any(not (s.seen_active and s.seen_link) for s in running):
                look(sessions, sessions_dir, active_dir, probe)
                timeout = min(timeout, POLL)
            watch.sleep(timeout)
            continue
        unseen = [s for s in running if s.started is not None and not s.seen()]
        # Launchers register before they start the client, so one look once
        # all have started normally sees them all. A marker read after the
        # release is answered once that session has been looked at.
        if unseen and (all_started or now >= release_at or (fresh and watch.released)):
            look(sessions, sessions_dir, active_dir, probe)
            unseen = [s for s in unseen if not s.seen()]
        if watch.released:
            watch.pay()
        elif (all_started and not unseen) or now >= release_at:
            watch.release(all_started)
        else:
            timeout = min(timeout, release_at - now)
            if all_started:
                # Nothing to wait for but a registry entry or a link to appear.
                timeout = min(timeout, poll)
                poll = min(poll * 2, POLL_MAX)
        watch.sleep(timeout)


def read_text(path):
    try:
        with open(path) as f:
            return f.read().strip() or None
    except OSError:
        return None


def cannot_run(path):
    """Why the program at `path` cannot be run by this user, or None. access()
    also answers no on a file system mounted noexec."""
    if os.access(path, os.X_OK):
        return None
    try:
        st = os.stat(path)
    except OSError as err:
        return err.strerror
    if st.st_mode & 0o111 and stat.S_ISREG(st.st_mode):
        return "not executable here (mode %04o; file system mounted noexec?)" % stat.S_IMODE(st.st_mode)
    return "not executable (mode %04o)" % stat.S_IMODE(st.st_mode)


def check_integrity(bindir, expected):
    check = Check("launcher-integrity")
    problems = []
    for name, want in sorted(expected.items()):
        path = os.path.join(bindir, name)
        try:
            got = sha256_of(path)
        except OSError as err:
            problems.append("%s: %s" % (name, err.strerror))
            continue
        if got != want:
            problems.append("%s: sha256 %s, csdeploy ships %s" % (name, got[:12], want[:12]))
        why = cannot_run(path) if name in EXECUTABLES else None
        if why:
            problems.append("%s: %s" % (name, why))
    runnable = [n for n in sorted(expected) if n in EXECUTABLES]
    return check.verdict(problems, "deployed scripts match what this csdeploy ships (sha256); %s executable"
                         % ", ".join(runnable), "%d scripts match, %d executable" % (len(expected), len(runnable)))


def _read_number(path):
    """The number in a cgroup file; None for "max", absent or unreadable."""
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def cgroup_memory_limit(root="/"):
    """(bytes, what set it) of the tightest memory limit on this process's
    cgroup and its ancestors (cgroup v2 memory.max, v1
    memory.limit_in_bytes), or None without one. `root` is for tests."""
    try:
        with open(os.path.join(root, "proc/self/cgroup")) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    best = None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            mount, name, kind = os.path.join(root, "sys/fs/cgroup"), "memory.max", "cgroup v2"
        elif "memory" in parts[1].split(","):
            mount, name, kind = os.path.join(root, "sys/fs/cgroup/memory"), "memory.limit_in_bytes", "cgroup v1"
        else:
            continue
        group = parts[2].strip("/")
        # A cgroup namespace can show a path the mount does not have: then
        # the mount's root is this process's group.
        if group and not os.path.isdir(os.path.join(mount, group)):
            group = ""
        while True:
            limit = _read_number(os.path.join(mount, group, name))
            if limit is not None and (best is None or limit < best[0]):
                best = (limit, "%s %s of /%s" % (kind, name, group))
            if not group:
                break
            group = os.path.dirname(group)
    return best


def check_capacity(max_sessions, root="/"):
    check = Check("capacity")
    mem_mb = None
    try:
        with open(os.path.join(root, "proc/meminfo")) as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem_mb = int(line.split()[1]) // 1024
    except (OSError, ValueError):
        pass
    if mem_mb is None:
        return check.result("skip", detail="/proc/meminfo is not readable")
    source = "MemTotal"
    limit = cgroup_memory_limit(root)
    if limit is not None and limit[0] // (1024 * 1024) < mem_mb:
        source = "%s; MemTotal %d MB" % (limit[1], mem_mb)
        mem_mb = limit[0] // (1024 * 1024)
    expected = "max_sessions x %d MB fits in memory" % SESSION_MB
    if not max_sessions:
        return check.result("warn", expected, "max_sessions is unlimited; host has %d MB (%s)" % (mem_mb, source))
    need = max_sessions * SESSION_MB
    actual = "%d x %d MB = %d MB, host has %d MB (%s)" % (max_sessions, SESSION_MB, need, mem_mb, source)
    return check.result("pass" if need <= mem_mb else "warn", expected, actual)


def session_dir_of(s, sessions_dir):
    """The directory the launcher gave the session: what it exported (or the
    wrong variable it exported), else what it registered."""
    report = s.report or {}
    for key in ("config_dir", "session_dir"):
        if report.get(key):
            # A relative one is where the client took it: from where it ran.
            return os.path.realpath(os.path.join(s.cwd, report[key]))
    if s.entry_id:
        return os.path.join(os.path.realpath(sessions_dir), s.entry_id)
    return None


def check_parallel(sessions, probe):
    check = Check("parallel-launch")
    problems = []
    codes = [s.returncode for s in sessions]
    if probe and any(code != 0 for code in codes):
        problems.append("exit codes %s" % codes)
    if not probe and any(code is None or code in LAUNCHER_FAILURES or code < 0 or code >= 128 for code in codes):
        # Offline, Claude Code's onboarding exits 1 by itself: only the
        # launcher's own failures and killed sessions count.
        problems.append("exit codes %s (64/70/75 are the launcher's own failures)" % codes)
    if probe:
        missing = [s.label() for s in sessions if s.report is None]
        if missing:
            problems.append("client never ran in %s" % ", ".join(missing))
        else:
            # The verifier's clock: a probe was running when its marker was
            # read, and had ended when its launcher was reaped.
            latest_start = max(s.exited if s.started is None else s.started for s in sessions)
            earliest_end = min(s.exited for s in sessions)
            if latest_start >= earliest_end:
                problems.append("not running at once: the last session started %.2fs after the first ended"
                                % (latest_start - earliest_end))
            elif not all(s.report["all_started"] for s in sessions):
                problems.append("some sessions gave up waiting for the others")
    else:
        latest = max(s.launched for s in sessions)
        if min(s.exited for s in sessions) <= latest:
            problems.append("a session ended before the last one was launched")
    expected = "%d sessions running at once, all exiting 0" % len(sessions)
    if not probe:
        expected = "%d sessions running at once, none refused or failed by the launcher" % len(sessions)
    return check.verdict(problems, expected,
                         "%d sessions overlapped, exit codes %s" % (len(sessions), codes))


def relative_config(s):
    """A problem if the session got a relative CLAUDE_CONFIG_DIR (it means
    another directory wherever the client's working directory is)."""
    config = (s.report or {}).get("config_dir")
    if config and not os.path.isabs(config):
        return "%s: CLAUDE_CONFIG_DIR %r is not an absolute path" % (s.label(), config)
    return None


def check_history(sessions, sessions_dir, default_history, others):
    """Each session's prompt line in <its dir>/history.jsonl (no line of
    another session there, distinct inodes), its .claude.json and its
    transcript projects/<cwd>/<sessionId>.jsonl in its own dir."""
    check = Check("history-isolation")
    problems = []
    inodes = {}
    for s in sessions:
        sdir = session_dir_of(s, sessions_dir)
        if relative_config(s):
            problems.append(relative_config(s))
        report = s.report or {}
        if report and not report.get("config_dir"):
            problems.append("%s: CLAUDE_CONFIG_DIR was not set, history went to %s instead of %s"
                            % (s.label(), default_history, os.path.join(sdir or "<session dir>", "history.jsonl")))
            continue
        if sdir is None:
            problems.append("%s: no session directory" % s.label())
            continue
        state = os.path.join(sdir, ".claude.json")
        if not os.path.isfile(state) or os.path.islink(state):
            problems.append("%s: no .claude.json of its own in %s" % (s.label(), sdir))
        path = os.path.join(sdir, "history.jsonl")
        try:
            st = os.stat(path)
            with open(path) as f:
                entries = [json.loads(line) for line in f if line.strip()]
        except (OSError, ValueError) as err:
            reached = report.get("screen") == "prompt"
            problems.append("%s: %s: %s%s" % (s.label(), path, getattr(err, "strerror", None) or err,
                                              "" if reached else " (the client never reached its prompt)"))
            continue
        displays = [e.get("display") for e in entries if isinstance(e, dict)]
        own = [e for e in entries if isinstance(e, dict) and e.get("display") == s.display]
        foreign = [d for d in displays if d in others and d not in (s.display, getattr(s.resume, "display", None))]
        if not own:
            problems.append("%s: %s has no line of its prompt %r" % (s.label(), path, s.display))
        if foreign:
            problems.append("%s: %s holds %d lines of other sessions" % (s.label(), path, len(foreign)))
        sid = own[0].get("sessionId") if own else None
        if sid and not any(os.path.isfile(os.path.join(sdir, "projects", p, sid + ".jsonl"))
                           for p in listdir(os.path.join(sdir, "projects"))):
            problems.append("%s: no transcript projects/<cwd>/%s.jsonl in %s" % (s.label(), sid, sdir))
        key = (st.st_dev, st.st_ino)
        if key in inodes:
            problems.append("%s and %s share history inode %d" % (inodes[key], s.label(), st.st_ino))
        inodes[key] = s.label()
    return check.verdict(problems, "each session's prompt in <its session dir>/history.jsonl (distinct inodes, no other "
                         "session's lines), its .claude.json and transcript projects/<cwd>/<id>.jsonl there too",
                         "%d histories, inodes %s" % (len(inodes), sorted(k[1] for k in inodes)))


def listdir(path):
    try:
        return os.listdir(path)
    except OSError:
        return []


def check_directories(sessions, sessions_dir):
    check = Check("directory-isolation")
    problems = []
    seen = {}
    uid = os.getuid()
    root = os.path.realpath(sessions_dir)
    for s in sessions:
        sdir = session_dir_of(s, sessions_dir)
        if relative_config(s):
            problems.append(relative_config(s))
        if sdir is None:
            problems.append("%s: no session directory" % s.label())
            continue
        name = os.path.basename(sdir)
        if os.path.dirname(sdir) != root or not UUID_RE.match(name):
            problems.append("%s: %s is not a UUID directory in %s" % (s.label(), sdir, root))
        if sdir in seen:
            problems.append("%s and %s share %s" % (seen[sdir], s.label(), sdir))
        seen[sdir] = s.label()
        try:
            st = os.lstat(sdir)
        except OSError:
            problems.append("%s: %s does not exist" % (s.label(), sdir))
            continue
        if not stat.S_ISDIR(st.st_mode):
            problems.append("%s: %s is not a directory" % (s.label(), sdir))
        if stat.S_IMODE(st.st_mode) != 0o700:
            problems.append("%s: mode %04o" % (s.label(), stat.S_IMODE(st.st_mode)))
        if st.st_uid != uid:
            problems.append("%s: owned by uid %d, not the login user (%d)" % (s.label(), st.st_uid, uid))
    problems += private_layout(sessions_dir, uid)
    return check.verdict(problems, "distinct UUID-named directories, mode 0700, owned by the login user, "
                         "in a private sessions/ (sessions/ and active/ 0700, .registry 0600)",
                         "%d distinct UUID directories, 0700, uid %d; sessions/, active/, .registry private"
                         % (len(seen), uid))


def private_layout(sessions_dir, uid):
    """sessions/ and sessions/active are real 0700 directories of the login
    user, the registry a 0600 file of theirs (what is missing is left to the
    checks that need it)."""
    problems = []
    for path, want, kind in ((sessions_dir, 0o700, stat.S_ISDIR),
                             (os.path.join(sessions_dir, "active"), 0o700, stat.S_ISDIR),
                             (os.path.join(sessions_dir, ".registry"), 0o600, stat.S_ISREG)):
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if not kind(st.st_mode):
            problems.append("%s is not a %s" % (path, "directory" if want == 0o700 else "regular file"))
            continue
        if stat.S_IMODE(st.st_mode) != want:
            problems.append("%s: mode %04o, expected %04o" % (path, stat.S_IMODE(st.st_mode), want))
        if st.st_uid != uid:
            problems.append("%s: owned by uid %d, not the login user (%d)" % (path, st.st_uid, uid))
    return problems


def check_shared_state(sessions, sessions_dir, inherit_link):
    check = Check("no-shared-state")
    problems = []
    policy = []
    owners = {}
    dirs = sorted({d for d in (session_dir_of(s, sessions_dir) for s in sessions) if d})
    for sdir in dirs:
        label = os.path.basename(sdir)
        for root, subdirs, files in os.walk(sdir):
            for name in subdirs + files:
                path = os.path.join(root, name)
                rel = os.path.relpath(path, sdir)
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                if stat.S_ISLNK(st.st_mode):
                    target = os.path.realpath(path)
                    if target == sdir or target.startswith(sdir + os.sep):
                        continue
                    if rel in inherit_link:
                        policy.append(rel)
                    else:
                        problems.append("%s/%s is a symlink to %s, outside its session" % (label, rel, target))
                    continue
                if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                    problems.append("%s/%s has %d hard links" % (label, rel, st.st_nlink))
                key = (st.st_dev, st.st_ino)
                if key in owners and owners[key] != label:
                    problems.append("%s/%s shares inode %d with session %s" % (label, rel, st.st_ino, owners[key]))
                owners[key] = label
    detail = None
    if policy:
        detail = "shared by policy (inherit_link): %s" % ", ".join(sorted(set(policy)))
    return check.verdict(problems, "no hard links, no symlinks out of a session dir except inherit_link, no shared inodes",
                         "%d session dirs share nothing" % len(dirs), detail)


def check_default(before, after, history_before, history_after, default_history):
    check = Check("default-untouched")
    problems = []
    if history_before != history_after:
        def show(state):
            if state is None:
                return "absent"
            return "size %d, mtime_ns %d, sha256 %s" % (state["size"], state["mtime_ns"], state.get("sha256", "")[:12])
        problems.append("%s changed: was %s, now %s" % (default_history, show(history_before), show(history_after)))
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k) and k != "history.jsonl")
    if changed:
        shown = ", ".join(changed[:10]) + (" and %d more" % (len(changed) - 10) if len(changed) > 10 else "")
        problems.append("changed outside sessions/: %s" % shown)
    return check.verdict(problems, "default history and everything outside sessions/ unchanged",
                         "unchanged (%d entries watched)" % len(before))


def check_registry(sessions, sessions_dir):
    check = Check("registry-tracking")
    registry = read_registry(sessions_dir)
    if registry is None:
        return check.result("fail", "every test session in the registry, active while running, ended after",
                            "registry %s missing or unreadable" % os.path.join(sessions_dir, ".registry"))
    by_name = {e.get("name"): e for e in registry.values() if isinstance(e, dict)}
    problems = []
    for s in sessions:
        entry = by_name.get(s.name)
        if entry is None:
            problems.append("%s: no registry entry" % s.label())
            continue
        if not s.seen_active:
            problems.append("%s: never seen active while it ran" % s.label())
        if entry.get("status") != "ended":
            problems.append("%s: status %r after exit, expected 'ended'" % (s.label(), entry.get("status")))
        else:
            last = s.resume if s.resume is not None and s.resume.pid else s
            if entry.get("exit_code") != last.returncode:
                problems.append("%s: recorded exit code %r, real %r" % (s.label(), entry.get("exit_code"),
                                                                       last.returncode))
    return check.verdict(problems, "every test session in the registry, active while running, ended after",
                         "%d sessions tracked: active, then ended" % len(sessions))


def check_links(sessions, sessions_dir, active_dir):
    check = Check("active-links")
    if not os.path.isdir(active_dir) or os.path.islink(active_dir):
        return check.result("fail", "%s is a directory" % active_dir, "missing")
    problems = []
    remaining = active_links(active_dir)
    for s in sessions:
        # The link belongs with the registered directory; without a registry
        # entry, with the directory the session was given.
        if s.entry_id:
            sdir = os.path.join(os.path.realpath(sessions_dir), s.entry_id)
        else:
            sdir = session_dir_of(s, sessions_dir)
        sid = s.entry_id or (os.path.basename(sdir) if sdir else None)
        if s.seen_link is None:
            problems.append("%s: no active link while it ran" % s.label())
        elif sdir and os.path.realpath(s.seen_link) != sdir:
            problems.append("%s: active link points to %s, not %s" % (s.label(), s.seen_link, sdir))
        if sid and sid in remaining:
            problems.append("%s: active link still there after exit" % s.label())
    return check.verdict(problems, "a link per running session in sessions/active, gone after exit",
                         "%d links appeared and were removed" % len(sessions))


def run_script(path, argv, env, errors):
    """Runs the Python program `path` as `python3 -I -S path argv...`, stdin
    /dev/null, stdout discarded, stderr to the file `errors`; returns its
    exit status (-N if killed by signal N). In a session of its own, so that
    a signal to our process group waits for it, as run() waits (see Stop)."""
    python = sys.executable or "python3"
    try:
        with open(errors, "wb") as err:
            return subprocess.run([python, "-I", "-S", path] + argv, env=env, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=err, start_new_session=True).returncode
    except OSError as e:
        with open(errors, "w") as err:
            err.write("cannot run %s: %s\n" % (python, e))
        return 127


def test_session_ids(sessions, sessions_dir, prefix):
    """Every session of this run the verifier can find: registered under
    this run's name pattern (seen running or not: a launcher that never got
    its client going still registered), or given a UUID dir it reported."""
    root = os.path.realpath(sessions_dir)
    ids = set()
    for s in sessions:
        if s.entry_id:
            ids.add(s.entry_id)
        sdir = session_dir_of(s, sessions_dir)
        if sdir and os.path.dirname(sdir) == root and UUID_RE.match(os.path.basename(sdir)):
            ids.add(os.path.basename(sdir))
    pids = {s.pid for s in sessions if s.pid} | {s.resume.pid for s in sessions if s.resume and s.resume.pid}
    for sid, entry in (read_registry(sessions_dir) or {}).items():
        if not isinstance(entry, dict) or not UUID_RE.match(sid):
            continue
        # By this run's name, or by the pid of one of its launchers (a
        # launcher that took `resume` for client arguments made a new one).
        if str(entry.get("name", "")).startswith(prefix) or entry.get("pid") in pids:
            ids.add(sid)
    return ids


def remove_test_sessions(ids, sessions_dir, bindir, env, errors):
    """One run of the deployed cleaner for all of them; its exit status."""
    argv = ["--sessions-dir", sessions_dir]
    for sid in sorted(ids):
        argv += ["--session", sid]
    return run_script(os.path.join(bindir, "cleanup-sessions.py"), argv, env, errors)


def leftovers(ids, sessions_dir, prefix):
    """What is left of this run: directories, registry entries, active links."""
    left = [sid for sid in sorted(ids) if os.path.lexists(os.path.join(sessions_dir, sid))]
    registry = read_registry(sessions_dir) or {}
    left += ["registry entry %s" % sid for sid, e in sorted(registry.items())
             if sid in ids or (isinstance(e, dict) and str(e.get("name", "")).startswith(prefix))]
    links = active_links(os.path.join(sessions_dir, "active"))
    left += ["active link %s" % sid for sid in sorted(ids) if sid in links]
    return left


def histories_outside(claude_home, sessions_dir, before_ids):
    """Histories the probes must not write to: the default one and those of
    the sessions that existed before the run. Path -> (inode, size) or None."""
    paths = [os.path.join(claude_home, "history.jsonl")]
    paths += [os.path.join(sessions_dir, sid, "history.jsonl") for sid in before_ids]
    states = {}
    for path in paths:
        try:
            st = os.lstat(path)
            states[path] = (st.st_ino, st.st_size, st.st_atime_ns, st.st_mtime_ns) if stat.S_ISREG(st.st_mode) else "other"
        except OSError:
            states[path] = None
    return states


def undo_probe_lines(states, sessions):
    """Takes this run's probe lines back out of the histories in `states`
    (see histories_outside) that a broken launcher let them into: only when
    what was appended is exactly lines of this run's probes, each once, and
    the file is the same file; a file that did not exist and holds only such
    lines is removed. Anything else is left as it is. What was done, as text."""
    ours = {line for s in sessions for line in s.history_lines}
    notes = []
    for path, before in sorted(states.items()):
        if before == "other":
            continue
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            start = 0 if before is None else before[1]
            if (before is not None and st.st_ino != before[0]) or st.st_size <= start:
                continue
            os.lseek(fd, start, os.SEEK_SET)
            added = os.read(fd, st.st_size - start + 1)
            lines = [line + b"\n" for line in added.split(b"\n")[:-1]]
            if (not added.endswith(b"\n") or not lines or len(set(lines)) != len(lines)
                    or not set(lines) <= ours or os.fstat(fd).st_size != st.st_size):
                notes.append("%s: %d bytes appended that are not only this run's probe lines, left" % (path, len(added)))
                continue
            if before is None:
                os.unlink(path)
                notes.append("%s: held only this run's probe lines, removed" % path)
            else:
                os.ftruncate(fd, start)
                os.utime(fd, ns=(before[2], before[3]))
                notes.append("%s: %d probe lines of this run taken out (back to %d bytes)" % (path, len(lines), start))
        except OSError:
            continue
        finally:
            os.close(fd)
    return notes


def cleanup(sessions, sessions_dir, bindir, env, work, before_ids, before_registry, prefix):
    check = Check("cleanup")
    problems = []
    ids = test_session_ids(sessions, sessions_dir, prefix) - set(before_ids)
    # What the cleaner must never remove: sessions/ itself, active/, the registry.
    layout = [p for p in (sessions_dir, os.path.join(sessions_dir, "active"), os.path.join(sessions_dir, ".registry"))
              if os.path.lexists(p)]
    if ids:
        errors = os.path.join(work, "cleaner.err")
        code = remove_test_sessions(ids, sessions_dir, bindir, env, errors)
        if code != 0:
            problems.append("cleaner exit %d: %s" % (code, (read_text(errors) or "")[:300]))
    gone = [p for p in layout if not os.path.lexists(p)]
    if gone:
        problems.append("gone after the cleaner ran: %s" % ", ".join(gone))
    left = leftovers(ids, sessions_dir, prefix)
    if left:
        problems.append("left of this run's test sessions (%s*): %s" % (prefix, ", ".join(left)))
    after_ids = session_ids(sessions_dir)
    lost = [sid for sid in before_ids if sid not in after_ids]
    if lost:
        problems.append("pre-existing sessions gone: %s" % ", ".join(lost))
    registry = read_registry(sessions_dir) or {}
    lost_entries = [sid for sid in (before_registry or {}) if sid not in registry]
    if lost_entries:
        problems.append("pre-existing registry entries gone: %s" % ", ".join(lost_entries))
    return check.verdict(problems, "test sessions removed by the deployed cleaner; sessions/, active/, "
                         ".registry and pre-existing sessions kept",
                         "%d test sessions removed, %d pre-existing kept" % (len(ids), len(before_ids)))


def skipped(check_ids, reason):
    return [Check(i).result("skip", detail=reason) for i in check_ids]


SESSION_CHECKS = ["parallel-launch", "onboarding", "history-isolation", "directory-isolation", "no-shared-state",
                  "inherit-policy", "credential-store", "default-untouched", "resume", "registry-tracking",
                  "active-links", "cleanup"]


MAX_SAVED = 16 << 20


def save_state_files(home, claude_home):
    """The bytes (and times) of the user's .claude.json files before the run:
    a broken launcher lets a client rewrite them, and verify puts them back."""
    saved = {}
    for path in {os.path.join(home, ".claude.json"), os.path.join(claude_home, ".claude.json")}:
        try:
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_SAVED:
                saved[path] = "other"
                continue
            with open(path, "rb") as f:
                saved[path] = (f.read(), st.st_atime_ns, st.st_mtime_ns)
        except OSError:
            saved[path] = None
    return saved


def restore_default(saved, before, claude_home, home, cwd, sids, history_path, history_size):
    """Puts back what this run's clients changed outside sessions/ (only
    what is provably theirs): the .claude.json files saved before, history
    lines of the run's working directory appended to the default history,
    and new entries that are the run's: projects/<its cwd>, .claude.json
    backups, names holding one of its conversation ids, and top-level
    entries that did not exist. What was done, as text."""
    notes = []
    for path, old in sorted(saved.items()):
        if old == "other":
            continue
        try:
            with open(path, "rb") as f:
                now = f.read()
        except OSError:
            now = None
        if old is None:
            if now is not None:
                os.unlink(path)
                notes.append("%s: made by this run, removed" % path)
        elif now != old[0]:
            fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            try:
                os.write(fd, old[0])
                os.utime(fd, ns=(old[1], old[2]))
            finally:
                os.close(fd)
            notes.append("%s: put back as it was" % path)
    project = json.dumps(cwd)
    try:
        fd = os.open(history_path, os.O_RDWR | os.O_NOFOLLOW)
    except OSError:
        fd = None
    if fd is not None:
        try:
            size = os.fstat(fd).st_size
            start = history_size or 0
            if size > start:
                os.lseek(fd, start, os.SEEK_SET)
                added = os.read(fd, size - start)
                lines = added.split(b"\n")
                ours = all(not line or ('"project":%s' % project).encode() in line.replace(b'": ', b'":')
                           for line in lines)
                if ours and history_size is None:
                    os.unlink(history_path)
                    notes.append("%s: held only this run's lines, removed" % history_path)
                elif ours:
                    os.ftruncate(fd, start)
                    notes.append("%s: this run's lines taken out" % history_path)
                else:
                    notes.append("%s: lines not only of this run appended, left" % history_path)
        finally:
            os.close(fd)
    after = snapshot_default(claude_home, home)
    mangled = mangle(cwd)
    tops = {k.split(os.sep)[0] for k in before}
    doomed = []
    for key in after:
        if key in before or key.startswith("~") or key in ("history.jsonl", ".claude.json"):
            continue
        first = key.split(os.sep)[0]
        if (first not in tops or key.startswith(os.path.join("projects", mangled))
                or key.startswith(os.path.join("backups", ".claude.json.backup."))
                or any(sid in key for sid in sids)):
            doomed.append(key)
    for key in sorted(doomed, key=lambda k: -k.count(os.sep)):
        path = os.path.join(claude_home, key)
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                remove_tree(path)
            else:
                os.unlink(path)
        except OSError:
            continue
    if doomed:
        notes.append("removed what this run made outside sessions/: %s" % ", ".join(sorted(doomed)[:10]))
    return notes


class Interrupted(BaseException):
    """SIGTERM or SIGHUP while the test sessions run (a CI job cancelled, a
    connection gone): unwind to run()'s clean-up, then die of the signal."""


class Stop:
    """The first SIGTERM/SIGHUP seen. While `armed` it interrupts the run;
    once the clean-up has begun it is only remembered, so the clean-up
    (and the cleaner, which runs in a session of its own) completes first."""

    signum = None
    armed = False


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
        return _run(args)
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
    n = int(args.get("sessions", 2))
    probe = args.get("client", "probe") == "probe"
    wait_limit = float(args.get("wait", 10))
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
        # loopback port, nothing nonessential, no update. The login is the
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
    prefix = "csdeploy-verify-%s-" % run_id
    before_ids = []
    outside = {}
    saved = {}
    cleaned = False
    Stop.armed = Stop.signum is None
    try:
        client_check, client = check_client(probe, launcher, launcher_text, env, work)
        checks.append(client_check)
        if not probe and client is None:
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

        before_ids = session_ids(sessions_dir)
        before_registry = read_registry(sessions_dir)
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
                while any(r.exited is None for r in resumed):
                    reap(resumed, time.monotonic())
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
        everyone = sessions + [s.resume for s in sessions if s.resume]
        if not cleaned and any(s.pid for s in everyone):
            # Interrupted (or crashed) mid-run: stop what still runs and
            # remove whatever this run left, as the cleanup check would.
            for s in everyone:
                if s.pid and s.exited is None:
                    try:
                        os.killpg(s.pid, signal.SIGKILL)
                    except OSError:
                        pass
                    try:
                        os.waitpid(s.pid, 0)
                    except OSError:
                        pass
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


# ------------------------------------------------------------ the real client
#
# Driven as a person would: a pseudo-terminal per session (120x40), wait for
# the input prompt (answering the folder-trust question for the test's fresh
# working directory as a person would: "Yes"), type a unique prompt, Enter
# once its echo is on screen, wait for its line in a history.jsonl, then
# `/exit`. What is on screen is read with its escape sequences and white
# space taken out (Ink moves the cursor instead of writing spaces).

CLAUDE_START = 30.0  # seconds for a session to reach its prompt
CLAUDE_LAND = 10.0  # seconds for a submitted prompt to reach a history
CLAUDE_EXIT = 10.0  # seconds for /exit to end the client
ESCAPE = None
# Screens with a menu (and its ❯) that are not the prompt.
DIALOGS = ("trustthisfolder", "Selectloginmethod", "Choosethetextstyle", "WelcometoClaudeCode")


def screen_text(data):
    """Terminal output as plain text without white space."""
    global ESCAPE
    if ESCAPE is None:
        import re
        ESCAPE = re.compile(r"\x1b(\[[0-9;?<>=!]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[PX^_][^\x1b]*\x1b\\|[()*+].|.)|\s")
    return ESCAPE.sub("", data.decode("utf-8", "replace"))


def letters(hexdigits):
    """A hex string as letters only: a digit typed into a menu picks an entry."""
    return "".join(chr(ord("g") + int(c)) if c.isdigit() else c for c in hexdigits)


class Drive:
    """One real-client session's terminal and where its conversation is."""

    def __init__(self, s, prompt):
        self.s = s
        self.prompt = prompt
        self.master = None
        self.tty = None
        self.screen = ""  # since the last step, see screen_text
        self.seen = ""  # everything, for the report
        self.step = "start"
        self.at = time.monotonic()
        self.trust = False
        self.typed = 0
        self.landed = None  # (history path, sessionId) of the prompt's line
        self.environ = None  # the client's environment, from /proc
        self.client_pid = None
        self.showed = None  # what the screen showed when the prompt never came
        self.output_at = self.at  # when the terminal last said something
        self.login = None  # False once the client said "Not logged in"

    def open(self):
        import fcntl
        import struct
        import termios
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        self.tty = os.ttyname(slave)
        os.close(slave)
        os.set_blocking(self.master, False)
        return self.tty

    def send(self, data):
        try:
            os.write(self.master, data)
        except OSError:
            pass

    def go(self, step):
        self.step, self.at, self.screen = step, time.monotonic(), ""

    def read(self):
        try:
            data = os.read(self.master, 65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # EIO: every holder of the terminal is gone
            data = b""
        if not data:
            os.close(self.master)
            self.master = None
            return
        self.output_at = time.monotonic()
        text = screen_text(data)
        self.screen += text
        self.seen = (self.seen + text)[-4000:]

    def close(self):
        if self.master is not None:
            os.close(self.master)
            self.master = None


def screen_says(text):
    """What a screen that is not the prompt is, in a few words."""
    for marker, what in (("Selectloginmethod", "the login screen"), ("/login", "the login screen"),
                         ("Notloggedin", "the login screen"), ("Choosethetextstyle", "the onboarding (theme)"),
                         ("WelcometoClaudeCode", "the onboarding"),
                         ("UnabletoconnecttoAnthropicservices", "the onboarding's connection test"),
                         ("trustthisfolder", "the folder-trust question")):
        if marker in text:
            return what
    return None


def session_processes(leader):
    """pid -> (ppid, rss kB) of the processes in the session `leader` leads."""
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) != leader:
            continue
        found[int(name)] = (int(fields[1]), int(fields[21]) * (os.sysconf("SC_PAGE_SIZE") // 1024))
    return found


def client_environ(s):
    """(pid, environment) of the client a launcher runs: the largest process
    in its session (Claude Code is hundreds of MB; the launcher, its registry
    helper and any wrapper script are small), or (None, None)."""
    procs = session_processes(s.pid)
    procs.pop(s.pid, None)
    for pid, (_ppid, rss) in sorted(procs.items(), key=lambda kv: -kv[1][1]):
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                if b"session_registry" in f.read():
                    continue
            with open("/proc/%d/environ" % pid, "rb") as f:
                raw = f.read()
        except OSError:
            continue
        env = {}
        for item in raw.split(b"\0"):
            key, sep, value = item.partition(b"=")
            if sep:
                env[key.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
        return pid, env
    return None, None


def find_prompt_line(paths, prompt):
    """(path, sessionId) of the first history line whose display holds `prompt`."""
    for path in paths:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            continue
        if prompt.encode() not in data:
            continue
        for line in data.splitlines():
            if prompt.encode() in line:
                try:
                    entry = json.loads(line.decode("utf-8", "replace"))
                except ValueError:
                    continue
                if prompt in str(entry.get("display", "")):
                    return path, entry.get("sessionId")
    return None


def drive_claude(sessions, sessions_dir, active_dir, default_history, watch, launcher, env, work, cwd):
    """Launches the sessions on terminals and drives each from its prompt to
    /exit; looks at the registry and active links while they run."""
    for s in sessions:
        s.drive = Drive(s, s.prompt)
    launch(sessions, launcher, env, work, cwd, lambda s: s.drive.open())
    first = time.monotonic()
    while True:
        now = time.monotonic()
        reap(sessions, now)
        running = [s for s in sessions if s.exited is None]
        for s in sessions:
            d = s.drive
            if d.master is not None:
                d.read()
        if not running:
            break
        look(sessions, sessions_dir, active_dir, False)
        for s in running:
            advance(s, sessions_dir, default_history, now)
        if now - first > CLAUDE_START + CLAUDE_LAND + CLAUDE_EXIT + 5:
            for s in running:
                stop(s)
            continue
        fds = [s.drive.master for s in sessions if s.drive.master is not None]
        if watch.wake_fd is not None:
            fds.append(watch.wake_fd)
        ready = select.select(fds, [], [], 0.05)[0]
        if watch.wake_fd in ready:
            try:
                os.read(watch.wake_fd, 512)
            except BlockingIOError:
                pass
    for s in sessions:
        s.drive.close()
        if s.drive.environ is not None:
            s.report = {"config_dir": s.drive.environ.get("CLAUDE_CONFIG_DIR"),
                        "session_dir": s.drive.environ.get("CLAUDE_SESSION_DIR"),
                        "store": s.drive.environ.get("CLAUDE_SECURESTORAGE_CONFIG_DIR"),
                        "screen": "prompt" if s.drive.landed else "other",
                        "session_id": s.drive.landed[1] if s.drive.landed else None, "data_dir": None}


def stop(s):
    """Ends a session that did not end by itself: SIGTERM, then SIGKILL."""
    for sig, grace in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(s.pid, sig)
        except OSError:
            pass
        end = time.monotonic() + grace
        while time.monotonic() < end:
            pid, status = os.waitpid(s.pid, os.WNOHANG)
            if pid:
                s.exited = time.monotonic()
                s.returncode = exit_code(status)
                return
            time.sleep(0.02)


def advance(s, sessions_dir, default_history, now):
    """One step of a session's conversation, when its time has come."""
    d = s.drive
    waited = now - d.at
    if d.master is None:
        return
    if d.environ is None and d.seen:
        # The client is up once the terminal speaks: its environment now,
        # whatever screen follows (read again at the prompt).
        d.client_pid, d.environ = client_environ(s)
    if d.step == "start":
        if "trustthisfolder" in d.screen and not d.trust:
            # The test's working directory is new to the user: say yes, as
            # a person would (the answer goes to the session's .claude.json),
            # once the question has settled (keys sent at its first frame
            # are lost to a re-render).
            d.trust = True
            d.go("trust-wait")
        elif "\u276f" in d.screen and not any(m in d.screen for m in DIALOGS):
            d.go("ready")
        elif now - d.s.launched > CLAUDE_START:
            d.showed = screen_says(d.seen) or "no prompt"
            d.go("exit")
            d.send(b"\x03\x03")
    elif d.step == "trust-wait" and waited > 0.6 and now - d.output_at > 0.3:
        # Once, and only on a settled screen: the menu wraps around, and
        # Ink redraws only the cells that change, so the choice cannot be
        # read back from the output.
        d.send(b"\x1b[B")  # down, from "No, exit" to "Yes"
        d.go("trust")
    elif d.step == "trust" and waited > 0.5 and now - d.output_at > 0.2:
        d.send(b"\r")
        d.go("start")
    elif d.step == "ready" and waited > 0.4:
        pid, environ = client_environ(s)
        if environ is not None:
            d.client_pid, d.environ = pid, environ
        d.send(d.prompt.encode())
        d.typed += 1
        d.go("typed")
    elif d.step == "typed":
        if d.prompt in d.screen:
            d.send(b"\r")
            d.go("sent")
        elif waited > 2.0:
            if d.typed < 2:
                d.go("ready")
            else:
                d.send(b"\r")
                d.go("sent")
    elif d.step == "sent":
        if d.landed is None:
            paths = []
            if s.entry_id:
                paths.append(os.path.join(sessions_dir, s.entry_id, "history.jsonl"))
            config = (d.environ or {}).get("CLAUDE_CONFIG_DIR")
            if config:
                paths.append(os.path.join(config, "history.jsonl"))
            paths.append(default_history)
            d.landed = find_prompt_line(paths, d.prompt)
        if d.landed:
            d.go("answer")
        elif waited > CLAUDE_LAND:
            d.showed = screen_says(d.seen) or "the prompt, but the line never reached a history"
            d.send(b"/exit")
            d.go("exiting")
    elif d.step == "answer":
        # What the client makes of the prompt: with the login it sees, a
        # request to the closed port (refused, retried); without, "Not
        # logged in", Claude Code's login screen of today.
        if "Notloggedin" in d.screen:
            d.login = False
        elif any(m in d.screen for m in ("Connectionrefused", "retrying", "APIError", "Unabletoconnect")):
            d.login = True
        if d.login is not None or waited > 3.0:
            # /exit works while the client retries; an Escape first would
            # make the slash an Alt-/ instead.
            d.send(b"/exit")
            d.go("exiting")
    elif d.step == "exiting" and waited > 0.5:
        d.send(b"\r")
        d.go("exit")
    elif d.step == "exit" and waited > CLAUDE_EXIT:
        stop(s)


# ------------------------------------------------------------ client, policy

def run_capture(argv, env, work, name, timeout):
    """(exit code or None on timeout, stdout, stderr) of argv, stdin /dev/null."""
    out, err = os.path.join(work, name + ".out"), os.path.join(work, name + ".err")
    actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
               (os.POSIX_SPAWN_OPEN, 1, out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
               (os.POSIX_SPAWN_OPEN, 2, err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)]
    try:
        pid = os.posix_spawn(argv[0], argv, env, file_actions=actions, setsid=True,
                             setsigdef=(signal.SIGPIPE, signal.SIGXFSZ))
    except OSError as e:
        return 127, "", "%s: %s" % (argv[0], e.strerror)
    end = time.monotonic() + timeout
    code = None
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            code = exit_code(status)
            break
        if time.monotonic() > end:
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
            os.waitpid(pid, 0)
            break
        time.sleep(0.01)
    return code, (read_raw(out) or "").strip(), (read_raw(err) or "").strip()


SHELLS = ("sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "busybox")


def wrapper_problem(path):
    """Why a `claude` that is a shell script would not run sessions where the
    launcher put them: it sets the config dir or the store itself."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except OSError:
        return None
    if not head.startswith(b"#!"):
        return None
    words = head[2:].split(b"\n", 1)[0].split()
    names = [os.path.basename(w.decode("utf-8", "replace")) for w in words[:2]]
    if not any(n in SHELLS for n in names):
        return None  # Claude Code's own cli.js (node), say
    found = [v for v in ("CLAUDE_CONFIG_DIR", "CLAUDE_SECURESTORAGE_CONFIG_DIR") if v.encode() in head]
    if found:
        return ("%s is a shell script that sets %s itself: every session would run with its value, "
                "not the directory the launcher gave it" % (path, " and ".join(found)))
    return None


def check_client(probe, launcher, launcher_text, env, work):
    """Which client the launcher runs (`--which-client`, CLAUDE_BIN unset),
    and with --client claude its --version. Returns (result, path)."""
    check = Check("client")
    problems = []
    path = version = None
    lookup = dict(env)
    lookup.pop("CLAUDE_BIN", None)
    if b"--which-client" not in launcher_text:
        problems.append("the deployed launcher has no --which-client (it cannot say which claude it runs)")
        why = "unknown"
    else:
        code, out, err = run_capture([launcher, "--which-client"], lookup, work, "which-client", 10)
        if code == 0 and out:
            path = out.splitlines()[-1]
            why = None
        else:
            why = err or out or "exit %s" % code
            if not probe:
                problems.append("no claude: claude-session --which-client exit %s: %s" % (code, why[:300]))
    if path:
        wrapped = wrapper_problem(path)
        if wrapped:
            problems.append(wrapped)
        if not probe:
            code, out, err = run_capture([path, "--version"], env, work, "version", 30)
            if code == 0 and out:
                version = out.splitlines()[0]
            else:
                problems.append("%s --version exit %s: %s" % (path, code, (err or out)[:300]))
    if probe:
        info = {"kind": "probe", "path": None, "version": "built-in probe (mirrors Claude Code 2.1.332)",
                "launcher_client": path}
        passed = "probe; the launcher would run %s" % (path or "no claude (%s)" % (why or "none found")[:200])
        expected = "the launcher resolves claude to a client that keeps the launcher's directories"
    else:
        info = {"kind": "claude", "path": path, "version": version, "launcher_client": path}
        passed = "claude %s (%s)" % (path, version)
        expected = "claude found by claude-session --which-client, runs --version, keeps the launcher's directories"
    result = check.verdict(problems, expected, passed)
    result["client"] = info
    # A client that runs is run, even one this check fails (a wrapper): the
    # sessions then show what it does.
    return result, (path if probe or version else None)


def read_conf(bindir):
    conf = {}
    try:
        with open(os.path.join(bindir, "session.conf")) as f:
            for line in f:
                key, sep, value = line.strip().partition("=")
                if sep and not key.startswith("#"):
                    conf[key.strip()] = value.strip()
    except OSError:
        pass
    return conf


def check_inherit_policy(conf, per_session_state, sessions, sessions_dir):
    """session.conf shares none of the per-session state, and no session dir
    holds such state as a link or a hard link."""
    check = Check("inherit-policy")
    problems = []
    state = set(per_session_state)
    for key in ("inherit_copy", "inherit_link"):
        for name in conf.get(key, "").split():
            first = os.path.normpath(name).split(os.sep)[0]
            if first in state:
                problems.append("session.conf %s shares %s, which Claude Code writes per session" % (key, name))
    for sdir in sorted({d for d in (session_dir_of(s, sessions_dir) for s in sessions) if d}):
        for name in sorted(state):
            path = os.path.join(sdir, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISLNK(st.st_mode):
                problems.append("%s/%s is a link to %s" % (os.path.basename(sdir), name, os.path.realpath(path)))
            elif stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                problems.append("%s/%s has %d hard links" % (os.path.basename(sdir), name, st.st_nlink))
    shared = "copy: %s; link: %s" % (conf.get("inherit_copy") or "-", conf.get("inherit_link") or "-")
    return check.verdict(problems, "no per-session state (%s) in inherit_copy/inherit_link or linked into a session"
                         % " ".join(per_session_state), shared)


def user_state(home, claude_home):
    """Whether the user's own `claude` is past onboarding and logged in: what
    a session must reach too. ~/.claude.json, or claude_home's when that is
    where the launcher seeds from (see the contract)."""
    onboarded = False
    for path in (os.path.join(home, ".claude.json"), os.path.join(claude_home, ".claude.json")):
        try:
            with open(path) as f:
                if json.loads(f.read()).get("hasCompletedOnboarding") is True:
                    onboarded = True
        except (OSError, ValueError, AttributeError):
            pass
    return onboarded, os.path.exists(os.path.join(claude_home, ".credentials.json"))


def check_onboarding(sessions, probe, onboarded, logged_in):
    check = Check("onboarding")
    problems = []
    hint = []
    if not onboarded:
        hint.append("the user's own ~/.claude.json has not completed onboarding")
    if not logged_in:
        hint.append("the default store has no .credentials.json (not logged in)")
    for s in sessions:
        if probe:
            seen = (s.report or {}).get("screen")
            if seen is None:
                problems.append("%s: the client never ran" % s.label())
            elif seen == "onboarding":
                problems.append("%s: showed the onboarding (its .claude.json lacks hasCompletedOnboarding)" % s.label())
            elif seen == "login":
                problems.append("%s: showed the login screen (no .credentials.json in the store it used)" % s.label())
        elif s.drive is not None and s.drive.login is False:
            problems.append("%s: the client answered its prompt with \"Not logged in\" (the login screen): "
                            "it does not see the default store's login" % s.label())
        elif s.drive is None or not s.drive.landed:
            d = s.drive
            shown = (d.showed if d else None) or "%r" % (d.seen[-300:] if d else "")
            problems.append("%s: never reached the prompt (%s); the screen showed %s" % (
                s.label(), "last step %s" % d.step if d else "not started", shown))
    if problems and hint:
        problems.append("(%s: run claude once and log in on this host)" % "; ".join(hint))
    passed = "%d sessions reached the prompt; the typed prompt landed in a history" % len(sessions)
    if probe and hint:
        passed += " (the user's own claude would show %s too)" % " and ".join(
            w for w, h in (("onboarding", not onboarded), ("login", not logged_in)) if h)
    return check.verdict(problems, "no onboarding or login screen: each session's prompt came up and took a typed line",
                         passed)


def store_of(report, home, cwd):
    """The credential store a client with this environment uses."""
    store = report.get("store")
    if store is None:
        store = report.get("config_dir")
        if store is None:
            store = os.path.join(home, ".claude")
    elif store == "":
        store = os.path.join(home, ".claude")
    return os.path.realpath(os.path.join(cwd, store)), report.get("store") is not None


def check_credential_store(sessions, sessions_dir, claude_home, home):
    check = Check("credential-store")
    problems = []
    want = os.path.realpath(claude_home)
    for s in sessions:
        sdir = session_dir_of(s, sessions_dir)
        for d in [sdir] + ([os.path.join(sessions_dir, s.entry_id)] if s.entry_id else []):
            path = os.path.join(d, ".credentials.json") if d else None
            if path and os.path.lexists(path):
                kind = "a link to %s" % os.path.realpath(path) if os.path.islink(path) else "a file"
                problems.append("%s: %s is %s: a token refresh would leave the default store behind" % (
                    s.label(), path, kind))
                break
        if not s.report:
            problems.append("%s: the client's environment was not seen" % s.label())
            continue
        store, explicit = store_of(s.report, home, s.cwd)
        if store != want:
            how = "CLAUDE_SECURESTORAGE_CONFIG_DIR=%s" % s.report.get("store") if explicit else \
                "CLAUDE_SECURESTORAGE_CONFIG_DIR unset, so its config dir"
            problems.append("%s: its credential store is %s (%s), not %s" % (s.label(), store, how, want))
    return check.verdict(problems, "no .credentials.json in a session dir; every client's store "
                         "(CLAUDE_SECURESTORAGE_CONFIG_DIR) is the default %s" % want,
                         "%d sessions used the default store, none holds credentials" % len(sessions))


def check_resume(sessions, sessions_dir, probe, supported):
    check = Check("resume")
    problems = []
    if not supported:
        problems.append("the deployed launcher has no `resume` command")
    for s in sessions if supported else ():
        r = s.resume
        first_sid = (s.report or {}).get("session_id")
        if r is None or r.pid is None:
            problems.append("%s: not resumed (%s)" % (s.label(), "no registry entry" if not s.entry_id
                                                        else "its first run never reached the prompt"))
            continue
        if r.returncode in LAUNCHER_FAILURES or (r.returncode or 0) < 0 or (r.returncode or 0) >= 128:
            problems.append("%s: claude-session resume exit %s: %s" % (
                s.label(), r.returncode, (read_text(r.log) or "")[-200:]))
            continue
        if probe:
            got = (r.report or {}).get("session_id")
        else:
            got = r.drive.landed[1] if r.drive and r.drive.landed else None
        own = os.path.join(sessions_dir, s.entry_id, "history.jsonl")
        line = find_display(own, r.display)
        if got is None or line is None:
            problems.append("%s: the resumed client's prompt did not reach %s" % (s.label(), own))
        elif line.get("sessionId") != first_sid:
            problems.append("%s: the resumed client started conversation %s instead of continuing %s" % (
                s.label(), line.get("sessionId"), first_sid))
    detail = None
    if not probe and supported:
        shown = [s.label() for s in sessions if s.resume and s.resume.drive and s.prompt in s.resume.drive.seen]
        detail = "the first prompt was on the resumed screen in: %s" % (", ".join(shown) or "none")
    return check.verdict(problems, "claude-session resume ID -- --continue continues each session's conversation "
                         "(same sessionId, in its own history)",
                         "%d sessions resumed their conversation" % len(sessions), detail)


def find_display(path, display):
    """The first history entry in `path` whose display is exactly `display`."""
    try:
        with open(path) as f:
            for line in f:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if isinstance(entry, dict) and entry.get("display") == display:
                    return entry
    except OSError:
        pass
    return None


def which(name, path):
    """shutil.which(name, path=path), without importing shutil."""
    if path is None:
        path = os.defpath
    for directory in path.split(os.pathsep) if path else ():
        candidate = os.path.join(directory, name)
        if os.access(candidate, os.X_OK) and not os.path.isdir(candidate):
            return candidate
    return None


def remove_tree(path):
    """rmtree of the work directory (only what this run made), never
    following a symlink."""
    try:
        names = os.listdir(path)
    except OSError:
        return
    for name in names:
        entry = os.path.join(path, name)
        try:
            if stat.S_ISDIR(os.lstat(entry).st_mode):
                remove_tree(entry)
            else:
                os.unlink(entry)
        except OSError:
            pass
    try:
        os.rmdir(path)
    except OSError:
        pass

