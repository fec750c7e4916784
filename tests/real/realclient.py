"""Driving the real Claude Code interactively, offline, in a throw-away HOME.

What is recognised on the screen was measured on Claude Code 2.1.337 (native
linux-x64 binary) in a 40x120 pseudo-terminal:
- the input prompt is a line `❯` + NO-BREAK SPACE right under a rule of `─`;
  the banner above names the plan from the credential store ("Claude Pro" for
  subscriptionType "pro"; "API Usage Billing" when there is no login);
- a config dir with no .claude.json shows the first-run onboarding ("Welcome to
  Claude Code", then a connectivity check: "Unable to connect to Anthropic
  services"); a cwd without trust shows "Quick safety check";
- `/exit` + Enter ends it (exit 0, "Resume this session with: claude --resume
  <id>"); Ctrl-C twice only works when no request is in flight (the first
  Ctrl-C cancels the request), so /exit is what we use.
"""
import json
import os
import re
import socket
import time

from ptydriver import ENTER, Pty, Timeout

PROMPT = re.compile("^─{20,}\n❯\u00a0", re.M)
# Screens that mean "a person would have to do something first".
BLOCKERS = ("Welcome to Claude Code", "Quick safety check", "Unable to connect to Anthropic services",
            "Select login method", "Choose the text style", "Do you trust the files",
            "Detected a custom API key", "Please run /login", "Not logged in")
PLAN = "Claude Pro"        # the banner's plan for SUBSCRIPTION below
SUBSCRIPTION = "pro"
OLD_ACCESS = "sk-ant-oat01-realtests-dummy-access-0"
OLD_REFRESH = "sk-ant-ort01-realtests-dummy-refresh-0"
SCOPES = ["user:inference", "user:profile", "user:sessions:claude_code"]


# ---------------------------------------------------------------- user state
def onboarded_state(*trusted_dirs):
    """The least .claude.json with which 2.1.337 goes straight to the prompt in
    each trusted dir (measured: nothing else is needed; without
    hasCompletedOnboarding the onboarding runs, without the trust key the
    trust dialog), plus user-level keys a real one has, so that seeding can be
    seen to copy them."""
    return {
        "hasCompletedOnboarding": True,
        "lastOnboardingVersion": "2.1.337",
        "theme": "dark",
        "numStartups": 7,
        "mcpServers": {},
        "projects": {d: {"hasTrustDialogAccepted": True, "allowedTools": []} for d in trusted_dirs},
    }


def write_json(path, data, mode=0o600):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)


def write_credentials(store_dir, expired=False):
    """Dummy login in Claude Code's format (<store>/.credentials.json, 0600).
    expiresAt is in ms; in the past, the client refreshes at start."""
    now_ms = int(time.time() * 1000)
    creds = {"claudeAiOauth": {
        "accessToken": OLD_ACCESS, "refreshToken": OLD_REFRESH,
        "expiresAt": now_ms - 3600 * 1000 if expired else now_ms + 8 * 3600 * 1000,
        "scopes": SCOPES, "subscriptionType": SUBSCRIPTION}}
    path = os.path.join(store_dir, ".credentials.json")
    write_json(path, creds)
    return path


def read_json(path):
    with open(path) as f:
        return json.load(f)


def history(path):
    """history.jsonl's entries ([] when there is no file)."""
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


# ---------------------------------------------------------------- environment
class ClosedPort(object):
    """A loopback port bound but not listening: connections are refused at once."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = "http://127.0.0.1:%d" % self.port

    def close(self):
        self.sock.close()


def offline_env(home, tmpdir, proxy, ca, closed, **extra):
    """The environment for a client (or the launcher) that must reach nothing but
    loopback: our own HOME and TMPDIR, the API at a closed loopback port, every
    other request through `proxy` (which refuses all but the OAuth token)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CLAUDE", "ANTHROPIC", "CSDEPLOY_", "NODE_", "STUB_"))
           and k.lower() not in ("http_proxy", "https_proxy", "no_proxy", "all_proxy")}
    env.update(HOME=home, TMPDIR=tmpdir, TERM="xterm-256color", LANG="C.UTF-8", LC_ALL="C.UTF-8",
               ANTHROPIC_BASE_URL=closed.url, CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
               DISABLE_AUTOUPDATER="1", DISABLE_TELEMETRY="1", DISABLE_ERROR_REPORTING="1")
    env.update(proxy.environ(ca))
    env.update({k: str(v) for k, v in extra.items()})
    return env


# ---------------------------------------------------------------- a client in a pty
class Client(object):
    """One interactive client (directly, or through the launcher) in a pty."""

    def __init__(self, argv, env, cwd, name):
        self.name = name
        self.t0 = time.monotonic()
        self.pty = Pty(argv, env, cwd=cwd, rows=40, cols=120, name=name)
        self.timings = {}

    def _time(self, step):
        self.timings[step] = round(time.monotonic() - self.t0, 2)

    def screen(self):
        self.pty.pump(0)
        return self.pty.display()

    def wait_prompt(self, timeout=40):
        """Wait for the input prompt; fail at once on an onboarding/login/trust screen."""
        def ready(screen):
            return PROMPT.search(screen) or any(b in screen for b in BLOCKERS)
        screen = self.pty.wait(ready, timeout=timeout, what="the input prompt")
        blocker = [b for b in BLOCKERS if b in screen]
        assert not blocker, "%s: stopped at %r instead of the prompt:\n%s" % (self.name, blocker, screen)
        self._time("prompt")
        return screen

    def client_env(self, timeout=10):
        """The environment of the Claude Code process in this pty's process group
        (the client the launcher started), read from /proc: {} until it exists."""
        deadline = time.monotonic() + timeout
        while True:
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    if os.getpgid(int(pid)) != self.pty.pgid:
                        continue
                    with open("/proc/%s/environ" % pid, "rb") as f:
                        env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
                    with open("/proc/%s/comm" % pid, "rb") as f:
                        comm = f.read().strip()
                except (OSError, ValueError):
                    continue
                if b"CLAUDE_CONFIG_DIR" in env and comm not in (b"bash", b"python3", b"sh"):
                    return {k.decode(): v.decode() for k, v in env.items()}
            if time.monotonic() > deadline:
                return {}
            self.pty.pump(0.1)

    def type_text(self, text):
        """Type text and wait until the input line shows it (`❯` NO-BREAK SPACE text)."""
        self.pty.send(text)
        self.pty.wait(lambda s: ("\n❯\u00a0" + text) in s, timeout=10, what="%r on the input line" % text)

    def type_line(self, text):
        """Type text, see it on the input line, press Enter."""
        self.type_text(text)
        self.pty.send(ENTER)

    def exit(self, timeout=15):
        """/exit + Enter; returns the exit status (fails if it does not exit)."""
        self.type_text("/exit")
        time.sleep(0.2)  # let the command menu settle on /exit
        self.pty.send(ENTER)
        status = self.pty.wait_exit(timeout)
        self._time("exit")
        if status is None:
            raise Timeout("%s: did not exit within %d s after /exit; the screen:\n%s"
                          % (self.name, timeout, self.screen()))
        return status

    def close(self):
        self.pty.close()


def pump_all(clients, seconds):
    """Keep every pty drained for a while (a client blocks when its pty is full)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for c in clients:
            c.pty.pump(0.02)


def wait_all(clients, predicate, timeout, what):
    """Pump all ptys until predicate() holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise Timeout("timed out after %.0f s waiting for %s; screens:\n%s" % (
                timeout, what, "\n\n".join("--- %s\n%s" % (c.name, c.screen()) for c in clients)))
        for c in clients:
            c.pty.pump(0.02)


def wait_history(clients, path, display, timeout=15):
    """Wait until history.jsonl at path has an entry for the prompt `display`."""
    wait_all(clients, lambda: any(e.get("display") == display for e in history(path)),
             timeout, "%r in %s" % (display, path))
