"""Fixtures for the session-tool tests.

Every test gets its own HOME under tmp_path, deployed by the real
`csdeploy push` (the `local` connection, with that HOME in the inventory's
`environment`), and a stub client as CLAUDE_BIN.  Nothing here reads or
writes the real ~/.claude.  The csdeploy binary is $CSDEPLOY_BIN or
target/debug/csdeploy (scripts/test builds it first).
"""
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import time
import types

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
FILES = os.path.join(REPO, "playbooks", "files")
SCRIPTS = ["claude-session", "claude-session-list", "cleanup-sessions.py", "session_registry.py"]

sys.path.insert(0, FILES)  # for the few unit tests of session_registry itself
sys.dont_write_bytecode = True  # no __pycache__ in playbooks/files


def csdeploy_binary():
    binary = os.environ.get("CSDEPLOY_BIN") or os.path.join(REPO, "target", "debug", "csdeploy")
    if not os.access(binary, os.X_OK):
        pytest.exit("no csdeploy binary at %s: run `cargo build` (scripts/test does)" % binary, returncode=2)
    return binary


def deploy(tmp, home):
    """`csdeploy push` to a local host whose HOME is `home`."""
    inventory = os.path.join(tmp, "inventory.yml")
    with open(inventory, "w") as f:
        f.write("all:\n  hosts:\n    local:\n      ansible_connection: local\n"
                "      environment:\n        HOME: %s\n" % json.dumps(home))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLAUDE", "CSDEPLOY_"))}
    proc = subprocess.run([csdeploy_binary(), "push", "-i", inventory, "--format", "json"],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode() + proc.stdout.decode()
    report = json.loads(proc.stdout)
    assert report["hosts"][0]["status"] == "changed", report
    for name in SCRIPTS:
        with open(os.path.join(FILES, name), "rb") as f, open(os.path.join(home, ".claude", "bin", name), "rb") as g:
            assert f.read() == g.read(), "push did not install %s as shipped" % name


def python_shim(tmp):
    """A python3 first on PATH that records each start (`start ARGS`, in a file
    of its own, so that parallel starts cannot interleave), then runs the real
    one. Returns (PATH, the directory of records); read them with python_starts."""
    shimdir = os.path.join(tmp, "shim")
    os.mkdir(shimdir)
    starts = os.path.join(tmp, "python-starts")
    os.mkdir(starts)
    with open(os.path.join(shimdir, "python3"), "w") as f:
        f.write("#!/bin/sh\n{ printf start; printf ' %%s' \"$@\" | tr '\\n' ' '; echo; } > \"$(mktemp %s/XXXXXX)\"\n"
                "exec %s \"$@\"\n" % (starts, sys.executable))
    os.chmod(os.path.join(shimdir, "python3"), 0o755)
    return shimdir + ":" + os.environ["PATH"], starts


def python_starts(starts):
    """The python3 starts python_shim recorded, one line each."""
    lines = []
    for name in sorted(os.listdir(starts)):
        with open(os.path.join(starts, name)) as f:
            lines.append(f.read().rstrip("\n"))
    return lines


def wait_for(predicate, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("timed out after %.0f s waiting for %s" % (timeout, what))


def snapshot(root):
    """Everything below root (links not followed): to prove nothing changed."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            rel = os.path.relpath(path, root)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                with open(path, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
                out[rel] = ("file", stat.S_IMODE(st.st_mode), st.st_size, st.st_mtime_ns, digest)
    return out


class Env(object):
    def __init__(self, tmp_path):
        self.tmp = str(tmp_path)
        self.home = os.path.join(self.tmp, "home")
        self.claude_home = os.path.join(self.home, ".claude")
        self.bindir = os.path.join(self.claude_home, "bin")
        self.sessions = os.path.join(self.claude_home, "sessions")
        self.active = os.path.join(self.sessions, "active")
        self.registry = os.path.join(self.sessions, ".registry")
        os.makedirs(self.home)
        deploy(self.tmp, self.home)
        # The tests write their own settings where they need them.
        os.unlink(os.path.join(self.bindir, "session.conf"))
        self.stub = os.path.join(self.tmp, "stub-claude")
        shutil.copyfile(os.path.join(HERE, "stub_client.py"), self.stub)
        os.chmod(self.stub, 0o755)
        self.launcher = os.path.join(self.bindir, "claude-session")
        self.procs = []

    # ------------------------------------------------------------ environment
    def environ(self, **extra):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("CLAUDE", "STUB_"))}
        env.update(HOME=self.home, CLAUDE_BIN=self.stub)
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def write_conf(self, text):
        with open(os.path.join(self.bindir, "session.conf"), "w") as f:
            f.write(text)

    # ------------------------------------------------------------ running
    def launch(self, *args, **stub_env):
        """Start claude-session in the background; returns the Popen."""
        proc = subprocess.Popen([self.launcher] + list(args), env=self.environ(**stub_env),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        self.procs.append(proc)
        return proc

    def run(self, *args, **stub_env):
        return subprocess.run([self.launcher] + list(args), env=self.environ(**stub_env),
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=60)

    def tool(self, script, *args):
        return subprocess.run([os.path.join(self.bindir, script)] + list(args),
                              env=self.environ(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=60)

    def clean(self, *args):
        return self.tool("cleanup-sessions.py", *args)

    def clean_json(self, *args):
        r = self.clean("--json", *args)
        assert r.returncode == 0, r.stderr.decode()
        return json.loads(r.stdout)

    def list_json(self):
        r = self.tool("claude-session-list", "--json")
        assert r.returncode == 0, r.stderr.decode()
        return {row["id"]: row for row in json.loads(r.stdout)}

    # ------------------------------------------------------------ state
    def read_registry(self):
        with open(self.registry) as f:
            return json.load(f)

    def write_registry(self, sessions):
        os.makedirs(self.sessions, exist_ok=True)
        with open(self.registry, "w") as f:
            json.dump({"version": 1, "sessions": sessions}, f)

    def session_ids(self):
        if not os.path.isdir(self.sessions):
            return []
        return sorted(n for n in os.listdir(self.sessions)
                      if len(n) == 36 and os.path.isdir(os.path.join(self.sessions, n))
                      and not os.path.islink(os.path.join(self.sessions, n)))

    def sdir(self, sid):
        return os.path.join(self.sessions, sid)

    def running_session(self, proc, known=()):
        """Id of the session `proc` started, once its client has written client.pid."""
        found = []

        def ready():
            for sid in self.session_ids():
                if sid in known:
                    continue
                pidfile = os.path.join(self.sdir(sid), "client.pid")
                entry = self._entry(sid)
                if entry and entry["pid"] == proc.pid and os.path.exists(pidfile):
                    found.append(sid)
                    return True
            return False
        wait_for(ready, what="session of launcher %d to start" % proc.pid)
        return found[0]

    def _entry(self, sid):
        try:
            return self.read_registry()["sessions"].get(sid)
        except (OSError, ValueError):
            return None

    def make_session(self, history=b"", sid=None, registered=True, age_days=0, pid=None,
                     pid_start=None, status="ended"):
        """A session directory (and optionally its registry entry) made by hand."""
        sid = sid or open("/proc/sys/kernel/random/uuid").read().strip()
        path = self.sdir(sid)
        os.makedirs(path, 0o700)
        os.makedirs(self.active, 0o700, exist_ok=True)
        if history is not None:
            with open(os.path.join(path, "history.jsonl"), "wb") as f:
                f.write(history)
        if age_days:
            old = time.time() - age_days * 86400
            for dirpath, dirnames, filenames in os.walk(path):
                for name in dirnames + filenames:
                    os.utime(os.path.join(dirpath, name), (old, old), follow_symlinks=False)
            os.utime(path, (old, old))
        if registered:
            reg = self.read_registry() if os.path.exists(self.registry) else {"sessions": {}}
            reg["sessions"][sid] = {
                "id": sid, "name": None, "host": "test", "pid": pid or dead_pid(),
                "pid_start": pid_start if pid_start is not None else 1, "boot_id": None,
                "started": "2020-01-01T00:00:00Z", "status": status,
                "ended": None if status == "active" else "2020-01-01T00:00:01Z",
                "exit_code": None if status == "active" else 0, "dir": path}
            self.write_registry(reg["sessions"])
        return sid

    def cleanup(self):
        # Clients outlive a kill -9ed launcher: stop the ones our sessions started.
        # Only a pid whose environment still names the session, in case it was reused.
        for sid in self.session_ids():
            try:
                with open(os.path.join(self.sdir(sid), "client.pid")) as f:
                    pid = int(f.read())
                with open("/proc/%d/environ" % pid, "rb") as f:
                    mine = ("CLAUDE_CONFIG_DIR=" + self.sdir(sid)).encode() in f.read().split(b"\0")
                if mine:
                    os.kill(pid, 9)
            except (OSError, ValueError):
                pass
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for stream in (proc.stdout, proc.stderr):
                if stream:
                    stream.close()


_dead = []


def dead_pid():
    """The pid of a process that has exited and been reaped."""
    if not _dead:
        p = subprocess.Popen(["true"])
        p.wait()
        _dead.append(p.pid)
    return _dead[0]


def registry_helper_of(sid):
    """Pid of the launcher's registry helper for session `sid` (its child)."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"session_registry" in b" ".join(argv) and sid.encode() in argv:
            return int(pid)
    return None


def start_time(pid):
    with open("/proc/%d/stat" % pid, "rb") as f:
        data = f.read()
    return int(data[data.rfind(b")") + 2:].split()[19])


@pytest.fixture
def env(tmp_path):
    e = Env(tmp_path)
    yield e
    e.cleanup()


def program_parts(name):
    """The files src/builtin.rs joins, in its order, into the one source of
    its `pub const NAME: &str = concat!(...)` (VERIFIER, TOOLS, DOCTOR): the
    source the agent runs, read from builtin.rs so there is one list."""
    with open(os.path.join(REPO, "src", "builtin.rs")) as f:
        text = f.read()
    body = text.split("pub const %s: &str = concat!(" % name, 1)[1].split(");", 1)[0]
    parts = [line.split('"')[1] for line in body.splitlines() if line.strip().startswith("include_str!(")]
    assert parts and parts[0] == "remote/common.py", parts
    return [os.path.join(REPO, "src", part) for part in parts]


def load_program(name, namespace):
    """The program builtin.rs calls `name`, run into `namespace` as the agent
    runs it, for tests of its functions on fake trees."""
    source = ""
    for path in program_parts(name):
        with open(path) as f:
            source += f.read()
    exec(compile(source, "csdeploy-%s.py" % name.lower(), "exec"), namespace)
    return namespace


@pytest.fixture(scope="module")
def verify():
    """csdeploy's verifier (src/remote/verify/, joined as src/builtin.rs joins it)."""
    return load_program("VERIFIER", {"__name__": "csdeploy_verify"})


@pytest.fixture
def doctor():
    """csdeploy doctor, as a module whose functions a test can monkeypatch."""
    module = types.ModuleType("csdeploy_program")
    load_program("DOCTOR", module.__dict__)
    return module


@pytest.fixture
def tools():
    """The day-two programs (tools.py), as a module."""
    module = types.ModuleType("csdeploy_program")
    load_program("TOOLS", module.__dict__)
    return module
