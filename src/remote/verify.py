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

Cost matters (one verification per host, many hosts per controller): no
subprocess, shutil or signal module (enum, re and friends at import), the
launchers are started with posix_spawn, and the deployed cleaner runs in a
fork of this interpreter instead of a new one. JSON comes from the apply step
that runs this file: json_loads and json_dumps, json's C accelerator without
the cost of importing json (see apply.py).

Python 3.8+ standard library only.
"""
import gc
import os
import select
import stat
import sys
import time

try:
    import _signal as signal  # the same functions, without importing enum
except ImportError:
    import signal

try:
    from _sha2 import sha256  # Python 3.12+; OpenSSL's hashlib costs a host more to import
except ImportError:
    try:
        from _sha256 import sha256  # Python 3.8-3.11
    except ImportError:
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

# The stand-in client, in POSIX sh and builtins only (every fork counts on a
# loaded host): appends one history line where Claude Code would, reports
# what it was given, announces itself and waits for the release (see above).
# The history timestamp comes from the verifier: `date` would cost a process.
PROBE = r"""#!/bin/sh
for token; do :; done
work=$CSDEPLOY_VERIFY_DIR
config=${CLAUDE_CONFIG_DIR:-$HOME/.claude}
[ -d "$config" ] || mkdir -p "$config"
printf '{"display":"csdeploy verify %s","pastedContents":{},"timestamp":%s,"project":%s,"sessionId":"%s"}\n' \
  "$token" "$CSDEPLOY_VERIFY_MS" "$CSDEPLOY_VERIFY_PROJECT" "$token" >> "$config/history.jsonl"
[ "${CLAUDE_CONFIG_DIR+set}" ] && printf %s "$CLAUDE_CONFIG_DIR" > "$work/$token.config"
[ "${CLAUDE_SESSION_DIR+set}" ] && printf %s "$CLAUDE_SESSION_DIR" > "$work/$token.legacy"
printf '%s\n' "$token" 1<> "$work/started"
kill -0 "$CSDEPLOY_VERIFY_PID" 2>/dev/null && read -r x < "$work/release"
all=0
[ -e "$work/all-started" ] && all=1
printf %s "$all" > "$work/$token.done"
exit 0
"""


def read_report(work, token):
    """What the probe of session `token` reported, or None if it never got to the end."""
    base = os.path.join(work, token)
    done = read_text(base + ".done")
    if done is None:
        return None
    return {"token": token, "all_started": done == "1",
            "config_dir": read_text(base + ".config"), "session_dir": read_text(base + ".legacy")}


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
            data = json_loads(f.read())
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
    beside = os.path.join(home, ".claude.json")
    if os.path.realpath(claude_home) == os.path.realpath(os.path.join(home, ".claude")) and os.path.lexists(beside):
        st = os.lstat(beside)
        entries["../.claude.json"] = (st.st_mode, st.st_size, st.st_mtime_ns, st.st_ino)
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
        self.history_line = None  # the exact line its probe appends (see PROBE)

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


def spawn(argv, env, log, close=()):
    """Starts argv in a new session (so a hung one can be killed with all its
    children), stdin /dev/null, stdout and stderr to `log`. posix_spawn: no
    fork of this interpreter, no subprocess module to import."""
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


def launch(sessions, launcher, client_argv, env, work, cwd):
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
            env["CSDEPLOY_VERIFY_MS"] = str(int(time.time() * 1000))  # the history line's timestamp
            s.history_line = ('{"display":"csdeploy verify %s","pastedContents":{},"timestamp":%s,"project":%s,'
                              '"sessionId":"%s"}\n' % (s.token, env["CSDEPLOY_VERIFY_MS"],
                                                       env["CSDEPLOY_VERIFY_PROJECT"], s.token)).encode()
            s.launched = time.monotonic()
            s.cwd = cwd
            s.pid = spawn([launcher, "--name", s.name, "--force", "--"] + client_argv(s), env,
                          os.path.join(work, "launcher-%d.log" % s.index), close)
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
        """Gives SIGCHLD back to whoever had it (before the cleaner's fork)."""
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
    if not probe and any(code in LAUNCHER_FAILURES or code < 0 or code >= 128 for code in codes):
        # Offline, Claude Code itself exits 1 ("Not logged in"): only the
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


def check_history(sessions, sessions_dir, default_history):
    check = Check("history-isolation")
    problems = []
    inodes = {}
    for s in sessions:
        sdir = session_dir_of(s, sessions_dir)
        if relative_config(s):
            problems.append(relative_config(s))
        report = s.report or {}
        if report and not report.get("config_dir"):
            home_history = default_history
            problems.append("%s: CLAUDE_CONFIG_DIR was not set, history went to %s instead of %s"
                            % (s.label(), home_history, os.path.join(sdir or "<session dir>", "history.jsonl")))
            continue
        if sdir is None:
            problems.append("%s: no session directory" % s.label())
            continue
        path = os.path.join(sdir, "history.jsonl")
        try:
            st = os.stat(path)
            with open(path) as f:
                ids = [json_loads(line).get("sessionId") for line in f if line.strip()]
        except (OSError, ValueError) as err:
            problems.append("%s: %s: %s" % (s.label(), path, getattr(err, "strerror", None) or err))
            continue
        if ids != [s.token]:
            others = len([i for i in ids if i != s.token])
            problems.append("%s: %s holds %d of its own entries and %d from other sessions"
                            % (s.label(), path, ids.count(s.token), others))
        key = (st.st_dev, st.st_ino)
        if key in inodes:
            problems.append("%s and %s share history inode %d" % (inodes[key], s.label(), st.st_ino))
        inodes[key] = s.label()
    return check.verdict(problems, "each session's history in <its session dir>/history.jsonl, distinct inodes, only its own entries",
                         "%d histories, inodes %s" % (len(inodes), sorted(k[1] for k in inodes)))


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
        elif entry.get("exit_code") != s.returncode:
            problems.append("%s: recorded exit code %r, real %r" % (s.label(), entry.get("exit_code"), s.returncode))
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
    """Runs the Python program `path` as `python3 -I -S path argv...` would,
    stdin /dev/null, stdout discarded, stderr to the file `errors`; returns its
    exit status. It runs in a fork of this interpreter: no interpreter start,
    and what it imports that this process already has is there."""
    sys.stdout.flush()
    sys.stderr.flush()
    # Objects the child inherits stay out of its garbage collections, which
    # would otherwise touch (and so copy) every page of this heap.
    gc.freeze()
    pid = os.fork()
    if pid:
        gc.unfreeze()
    else:
        code = 1
        try:
            null = os.open(os.devnull, os.O_RDWR)
            os.dup2(null, 0)
            os.dup2(null, 1)
            os.dup2(os.open(errors, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), 2)
            os.environ.clear()
            os.environ.update(env)
            sys.argv = [path] + argv
            main = type(sys)("__main__")
            main.__file__ = path
            sys.modules["__main__"] = main
            try:
                with open(path, "rb") as f:
                    source = f.read()
            except OSError as err:
                sys.stderr.write("python3: can't open file %r: [Errno %d] %s\n" % (path, err.errno, err.strerror))
                raise SystemExit(2)
            exec(compile(source, path, "exec"), main.__dict__)
            code = 0
        except SystemExit as stop:
            if stop.code is None or isinstance(stop.code, int):
                code = stop.code or 0
            else:
                sys.stderr.write("%s\n" % (stop.code,))
        except BaseException:
            kind, error, trace = sys.exc_info()
            # As python3 would print it: without this function's frame.
            sys.excepthook(kind, error.with_traceback(trace.tb_next), trace.tb_next)
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code & 0xFF)
    return exit_code(os.waitpid(pid, 0)[1])


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
    for sid, entry in (read_registry(sessions_dir) or {}).items():
        if isinstance(entry, dict) and str(entry.get("name", "")).startswith(prefix) and UUID_RE.match(sid):
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
    ours = {s.history_line for s in sessions if s.history_line}
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


def without_inheritance(bindir, work):
    """The deployed launcher settings with empty inherit lists."""
    lines = []
    try:
        with open(os.path.join(bindir, "session.conf")) as f:
            lines = [l for l in f.read().splitlines() if not l.startswith(("inherit_copy=", "inherit_link="))]
    except OSError:
        pass
    path = os.path.join(work, "session.conf")
    with open(path, "w") as f:
        f.write("\n".join(lines + ["inherit_copy=", "inherit_link="]) + "\n")
    return path


def skipped(check_ids, reason):
    return [Check(i).result("skip", detail=reason) for i in check_ids]


SESSION_CHECKS = ["parallel-launch", "history-isolation", "directory-isolation", "no-shared-state",
                  "default-untouched", "registry-tracking", "active-links", "cleanup"]


class Interrupted(BaseException):
    """SIGTERM or SIGHUP while the test sessions run (a CI job cancelled, a
    connection gone): unwind to run()'s clean-up, then die of the signal."""


class Stop:
    """The first SIGTERM/SIGHUP seen. While `armed` it interrupts the run;
    once the clean-up has begun it is only remembered, so the clean-up
    (and the cleaner, in a fork that inherits this) completes first."""

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
    inherit_link = set(str(args.get("inherit_link") or "").split())

    checks = [check_integrity(bindir, args.get("expected", {})), check_capacity(int(args.get("max_sessions") or 0))]
    why = cannot_run(launcher)
    if why:
        # A launcher nobody can run is a broken installation, not a reason
        # to skip: parallel-launch fails, the rest could not be judged.
        reason = "the launcher %s cannot be run: %s" % (launcher, why)
        return checks + [Check("parallel-launch").result(
            "fail", "%d sessions running at once through %s" % (n, launcher), reason)] + skipped(
            SESSION_CHECKS[1:], "no test session could run: " + reason)
    env = dict(os.environ)
    if probe:
        client = None
    else:
        client = which("claude", env.get("PATH"))
        if client is None:
            return checks + skipped(SESSION_CHECKS, "Claude Code (`claude`) is not installed on this host")
        # Headless, and no request leaves the host: port 9 on loopback is
        # closed. No credentials either: the test sessions get no inherited
        # login (a logged-in client would retry the closed port for minutes,
        # and a verification has no business using the user's login).
        env["ANTHROPIC_BASE_URL"] = "http://127.0.0.1:9"
        for key in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN"):
            env.pop(key, None)

    work = os.path.join(os.environ.get("TMPDIR") or "/tmp", "csdeploy-verify-" + os.urandom(8).hex())
    os.mkdir(work, 0o700)
    watch = None
    sessions = []
    run_id = os.urandom(4).hex()
    prefix = "csdeploy-verify-%s-" % run_id
    before_ids = []
    outside = {}
    cleaned = False
    Stop.armed = Stop.signum is None
    try:
        if probe:
            client = os.path.join(work, "probe")
            with open(client, "w") as f:
                f.write(PROBE)
            os.chmod(client, 0o700)
        cwd = os.path.join(work, "cwd")
        os.mkdir(cwd, 0o700)
        env.update({"CLAUDE_BIN": client, "CSDEPLOY_VERIFY_DIR": work, "CSDEPLOY_VERIFY_PID": str(os.getpid()),
                    "CSDEPLOY_VERIFY_PROJECT": json_dumps(cwd), "PWD": cwd})
        if not probe:
            env["CLAUDE_SESSION_CONF"] = without_inheritance(bindir, work)
        env.pop("CLAUDE_CONFIG_DIR", None)
        sessions = [Session(i, "%s-%d" % (run_id, i)) for i in range(n)]

        def client_argv(s):
            return [s.token] if probe else ["-p", "csdeploy verify " + s.token]

        before_ids = session_ids(sessions_dir)
        before_registry = read_registry(sessions_dir)
        default_before = snapshot_default(claude_home, home)
        history_before = file_state(default_history)
        outside = histories_outside(claude_home, sessions_dir, before_ids) if probe else {}

        phase = Check("parallel-launch")
        watch = Watch(work, probe)
        launch(sessions, launcher, client_argv, env, work, cwd)
        observe(sessions, sessions_dir, active_dir, work, watch, wait_limit)
        watch.close()
        for s in sessions:
            s.report = read_report(work, s.token)
        launch_check = check_parallel(sessions, probe)
        launch_check["duration_ms"] = int((time.monotonic() - phase.started) * 1000)

        checks += [
            launch_check,
            check_history(sessions, sessions_dir, default_history) if probe else check_claude_state(sessions, sessions_dir),
            check_directories(sessions, sessions_dir),
            check_shared_state(sessions, sessions_dir, inherit_link),
            check_default(default_before, snapshot_default(claude_home, home), history_before,
                          file_state(default_history), default_history),
            check_registry(sessions, sessions_dir),
            check_links(sessions, sessions_dir, active_dir),
        ]
        Stop.armed = False  # from here a signal waits until the clean-up is done
        cleaned = True
        checks.append(cleanup(sessions, sessions_dir, bindir, env, work, before_ids, before_registry, prefix))
        undone = undo_probe_lines(outside, sessions)
        if undone:
            checks[-1]["detail"] = "; ".join(([checks[-1]["detail"]] if checks[-1]["detail"] else []) + undone)
        return checks
    finally:
        Stop.armed = False
        if not cleaned and any(s.pid for s in sessions):
            # Interrupted (or crashed) mid-run: stop what still runs and
            # remove whatever this run left, as the cleanup check would.
            for s in sessions:
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
            undo_probe_lines(outside, sessions)
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


def check_claude_state(sessions, sessions_dir):
    """With the real Claude Code, headless mode writes no history; its state
    files (.claude.json, the transcript) must land in the session's own dir."""
    check = Check("history-isolation")
    problems = []
    for s in sessions:
        sdir = session_dir_of(s, sessions_dir)
        if sdir is None:
            problems.append("%s: no session directory" % s.label())
            continue
        if not os.path.isfile(os.path.join(sdir, ".claude.json")):
            problems.append("%s: no .claude.json in %s" % (s.label(), sdir))
        transcripts = []
        for root, _dirs, files in os.walk(os.path.join(sdir, "projects")):
            transcripts += [f for f in files if f.endswith(".jsonl")]
        if not transcripts:
            problems.append("%s: no projects/<cwd>/<id>.jsonl transcript in %s" % (s.label(), sdir))
    return check.verdict(problems, "Claude Code's state (.claude.json, projects/<cwd>/<id>.jsonl) in each session's own dir",
                         "%d sessions each wrote their own state" % len(sessions))
