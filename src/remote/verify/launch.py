"""Starting the test sessions through the deployed launcher and watching them
run: posix_spawn in a session of their own, the FIFOs and the SIGCHLD pipe
the verifier sleeps on, the registry and active links looked at while each
session is alive.

One part of csdeploy's verifier (see main.py): src/builtin.rs joins
src/remote/common.py and the files of src/remote/verify/ into one source,
main.py first of these, so the names of every part are one namespace.
"""
import os
import select
import signal
import time


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
        self.env = None  # its launcher's environment, where it has one of its own

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


def spawn(argv, env, log, close=(), tty=None, err=None):
    """Starts argv in a new session (so a hung one can be killed with all its
    children), stdin /dev/null, stdout to `log` and stderr to `err` (to `log`
    too without one); or, with `tty`, all three on that terminal, which
    becomes its controlling terminal (the new session leader opens it).
    posix_spawn does the new session, the descriptors and the default
    signals in one call."""
    if tty:
        actions = [(os.POSIX_SPAWN_OPEN, 0, tty, os.O_RDWR, 0),
                   (os.POSIX_SPAWN_DUP2, 0, 1), (os.POSIX_SPAWN_DUP2, 0, 2)]
    else:
        writing = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                   (os.POSIX_SPAWN_OPEN, 1, log, writing, 0o600),
                   (os.POSIX_SPAWN_OPEN, 2, err, writing, 0o600) if err else (os.POSIX_SPAWN_DUP2, 1, 2)]
    actions += [(os.POSIX_SPAWN_CLOSE, fd) for fd in close]
    # Python ignores SIGPIPE and SIGXFSZ; the launcher gets the defaults, as
    # subprocess would restore them.
    options = {"file_actions": actions, "setsigdef": (signal.SIGPIPE, signal.SIGXFSZ)}
    try:
        return os.posix_spawn(argv[0], argv, env, setsid=True, **options)
    except NotImplementedError:  # a C library without POSIX_SPAWN_SETSID
        return os.posix_spawn(argv[0], argv, env, setpgroup=0, **options)


def kill_and_reap(pid):
    """Kills what spawn started (its whole session) and reaps it: its exit
    status, or None where it was already reaped."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
    try:
        return os.waitpid(pid, 0)[1]
    except OSError:
        return None


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
            s.pid = spawn([launcher] + s.argv, s.env or env, os.path.join(work, "launcher-%s.log" % s.token),
                          close, tty)
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
                s.returncode = exit_code(kill_and_reap(s.pid))
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
