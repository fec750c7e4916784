"""The real client: Claude Code driven through a pseudo-terminal per session,
as a person would, until its prompt lands in a history.

One part of csdeploy's verifier (see main.py): src/builtin.rs joins
src/remote/common.py and the files of src/remote/verify/ into one source,
main.py first of these, so the names of every part are one namespace.
"""
import json
import os
import re
import select
import signal
import socket
import time


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
# Seconds for the client to answer a prompt that landed: a request (to the
# closed port: refused, retried) or "Not logged in". It comes in well under
# a second; on a loaded host it took more than 3 s, and a verdict given
# without it cannot say whether the session sees the login.
CLAUDE_ANSWER = 10.0
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
        self.login = None  # False once the client said "Not logged in", True once it made a request
        self.api = ApiListener()

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
        self.api.close()


class ApiListener(object):
    """The API this session's client is given: a loopback port of the
    verifier's, which takes a request and answers nothing (the connection
    closes, the client retries). A client that sends the prompt to the API
    (`/v1/messages`) sees a login, whatever its screen shows of it."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.setblocking(False)
        self.url = "http://127.0.0.1:%d" % self.sock.getsockname()[1]
        self.conns = []
        self.heard = b""
        self.prompted = False

    def environ(self):
        """The API and every proxy at this port: nothing leaves the host."""
        return dict((key, self.url) for key in ("ANTHROPIC_BASE_URL", "HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY",
                                                "https_proxy", "http_proxy", "all_proxy"))

    def fds(self):
        return [self.sock] + self.conns if self.sock is not None else []

    def serve(self, ready):
        """Takes what select found ready: new connections, request bytes."""
        if self.sock is None:
            return
        if self.sock in ready:
            try:
                conn, _ = self.sock.accept()
                conn.setblocking(False)
                self.conns.append(conn)
            except OSError:
                pass
        for conn in [c for c in self.conns if c in ready]:
            try:
                data = conn.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            self.heard = (self.heard + data)[-16384:]
            if b"/v1/messages" in self.heard:
                self.prompted = True
            if not data or self.prompted:
                conn.close()
                self.conns.remove(conn)

    def close(self):
        for conn in self.conns:
            conn.close()
        self.conns = []
        if self.sock is not None:
            self.sock.close()
            self.sock = None


# Ink redraws only the cells that change, so a word on the screen can reach
# us in pieces ("attemp3/10in5s"); the retry counter's "N/M in Ks" survives.
RETRY_COUNTER = re.compile(r"[0-9]+/[0-9]+in[0-9]+s")


def made_a_request(screen):
    """Whether the client's screen shows it sent the prompt to the API (the
    closed port refused it and it retries): a client that sees a login."""
    return (any(m in screen for m in ("Connectionrefused", "retrying", "Retrying", "APIError", "Unabletoconnect"))
            or RETRY_COUNTER.search(screen) is not None)


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
        s.env = dict(env, **s.drive.api.environ())
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
        fds += [fd for s in sessions for fd in s.drive.api.fds()]
        if watch.wake_fd is not None:
            fds.append(watch.wake_fd)
        ready = select.select(fds, [], [], 0.05)[0]
        for s in sessions:
            s.drive.api.serve(ready)
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
        elif d.api.prompted or made_a_request(d.screen):
            d.login = True
        if d.login is not None or waited > CLAUDE_ANSWER:
            # /exit works while the client retries; an Escape first would
            # make the slash an Alt-/ instead.
            d.send(b"/exit")
            d.go("exiting")
    elif d.step == "exiting" and waited > 0.5:
        d.send(b"\r")
        d.go("exit")
    elif d.step == "exit" and waited > CLAUDE_EXIT:
        stop(s)
