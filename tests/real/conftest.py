"""Fixtures for the tests with the real Claude Code binary.

The binary is $CSDEPLOY_IT_CLAUDE (scripts/test installs Claude Code from npm
and sets it); without it every test here skips and says why.  Every test runs
in its own HOME (and TMPDIR) under tmp_path, with a dummy login, the API at a
closed loopback port and every other request through a loopback proxy that
answers only the OAuth token endpoint: no real account, no request leaves the
machine, the real ~/.claude and ~/.claude.json are never read or written.
Launcher tests deploy with the real `csdeploy push` over the local connection,
as tests/scripts/conftest.py does ($CSDEPLOY_BIN or target/debug/csdeploy).
"""
import os
import shutil
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True

import oauthproxy  # noqa: E402
import realclient  # noqa: E402

# The version these tests were measured with; scripts/test installs this one.
TESTED_VERSION = "2.1.337"


def claude_binary():
    path = os.environ.get("CSDEPLOY_IT_CLAUDE")
    if not path:
        pytest.skip("CSDEPLOY_IT_CLAUDE is not set: no real Claude Code binary to test "
                    "(scripts/test installs it from npm on linux-x64)")
    if not os.access(path, os.X_OK):
        pytest.skip("CSDEPLOY_IT_CLAUDE=%s is not an executable file" % path)
    return path


def pytest_report_header(config):
    path = os.environ.get("CSDEPLOY_IT_CLAUDE")
    if not path or not os.access(path, os.X_OK):
        return "real Claude Code: none (CSDEPLOY_IT_CLAUDE unset): tests/real skip"
    try:
        version = subprocess.run([path, "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 timeout=30, env={"HOME": "/nonexistent", "PATH": "/usr/bin:/bin"}
                                 ).stdout.decode().strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        version = "unknown (%s)" % e
    return "real Claude Code: %s at %s (measured with %s)" % (version, path, TESTED_VERSION)


@pytest.fixture(scope="session")
def claude_bin():
    return claude_binary()


@pytest.fixture(scope="session")
def ca(tmp_path_factory, claude_bin):
    """The throw-away CA, or None without the `openssl` command (then the proxy
    refuses everything and the refresh tests skip)."""
    if not shutil.which("openssl"):
        return None
    return oauthproxy.TestCA(str(tmp_path_factory.mktemp("ca")))


def _session_tool_fixtures():
    """tests/scripts/conftest.py, loaded under its own name: the one `deploy`
    (a real `csdeploy push` to a local host with its own HOME, checking that
    every script landed as shipped)."""
    import importlib.util

    path = os.path.join(REPO, "tests", "scripts", "conftest.py")
    spec = importlib.util.spec_from_file_location("session_tool_fixtures", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


deploy = _session_tool_fixtures().deploy


class Lab(object):
    """A throw-away HOME with an onboarded, logged-in default dir, a work dir
    trusted in it, the offline network pieces, and the clients started."""

    def __init__(self, tmp_path, claude_bin, ca, proxy):
        self.tmp = str(tmp_path)
        self.claude_bin = claude_bin
        self.home = os.path.join(self.tmp, "home")
        self.claude_home = os.path.join(self.home, ".claude")
        self.sessions = os.path.join(self.claude_home, "sessions")
        self.launcher = os.path.join(self.claude_home, "bin", "claude-session")
        self.work = os.path.join(self.tmp, "work")
        self.tmpdir = os.path.join(self.tmp, "tmp")
        for d in (self.claude_home, self.work, self.tmpdir):
            os.makedirs(d, exist_ok=True)
        self.ca = ca
        self.proxy = proxy
        self.closed = realclient.ClosedPort()
        self.clients = []

    # ------------------------------------------------------------ user state
    def onboard(self, expired=False):
        """~/.claude.json onboarded with the work dir trusted; a dummy login in ~/.claude."""
        realclient.write_json(os.path.join(self.home, ".claude.json"), realclient.onboarded_state(self.work))
        return realclient.write_credentials(self.claude_home, expired=expired)

    def need_token_endpoint(self):
        if self.ca is None:
            pytest.skip("the `openssl` command is needed to make the test CA for the loopback "
                        "token endpoint (Debian package openssl)")

    def deploy(self):
        deploy(self.tmp, self.home)

    # ------------------------------------------------------------ running
    def env(self, **extra):
        return realclient.offline_env(self.home, self.tmpdir, self.proxy, self.ca, self.closed, **extra)

    def start(self, argv, name, cwd=None, **extra):
        c = realclient.Client(argv, self.env(**extra), cwd or self.work, name)
        self.clients.append(c)
        return c

    def start_raw(self, config_dir, name, args=(), store=None, **extra):
        """The client itself with CLAUDE_CONFIG_DIR=config_dir (and the credential
        store variable, unless store is False)."""
        if store is None:
            store = self.claude_home
        if store:
            extra["CLAUDE_SECURESTORAGE_CONFIG_DIR"] = store
        return self.start([self.claude_bin] + list(args), name, CLAUDE_CONFIG_DIR=config_dir, **extra)

    def start_session(self, name, args=(), cwd=None):
        """A session through the deployed launcher, with the real client as CLAUDE_BIN."""
        return self.start([self.launcher] + list(args), name, cwd=cwd, CLAUDE_BIN=self.claude_bin)

    def launcher_run(self, *args):
        return subprocess.run([self.launcher] + list(args), env=self.env(CLAUDE_BIN=self.claude_bin),
                              cwd=self.work, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=60)

    def session_dirs(self):
        if not os.path.isdir(self.sessions):
            return []
        return sorted(n for n in os.listdir(self.sessions)
                      if len(n) == 36 and os.path.isdir(os.path.join(self.sessions, n))
                      and not os.path.islink(os.path.join(self.sessions, n)))

    def close(self):
        for c in self.clients:
            c.close()
        self.closed.close()


@pytest.fixture
def proxy(ca):
    p = oauthproxy.TokenProxy(ca, delay=1.0)
    yield p
    p.close()


@pytest.fixture
def lab(tmp_path, claude_bin, ca, proxy):
    lab = Lab(tmp_path, claude_bin, ca, proxy)
    yield lab
    lab.close()
