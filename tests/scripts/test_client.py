"""Which client the launcher runs: one resolution (session_registry.resolve_client),
shown by `claude-session --which-client` and used by the launcher."""
import os
import subprocess

import pytest

from test_launcher import history_lines


def make_client(path):
    """A client that records like the stub (it is the stub)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "stub_client.py")) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o755)
    return path


def which(env, **extra):
    return subprocess.run([env.launcher, "--which-client"], env=env.environ(**extra),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)


def places(env):
    """The contract's order after $CLAUDE_BIN and PATH."""
    return [os.path.join(env.home, ".local", "bin", "claude"),
            os.path.join(env.claude_home, "local", "claude"),
            os.path.join(env.tmp, "npm-prefix", "bin", "claude"),
            os.path.join(env.home, ".npm-global", "bin", "claude")]


@pytest.fixture
def no_claude(env):
    """Environment overrides under which no claude is found (checked)."""
    if os.path.exists("/usr/local/bin/claude"):
        pytest.skip("this machine has /usr/local/bin/claude")
    extra = {"CLAUDE_BIN": "", "NPM_CONFIG_PREFIX": os.path.join(env.tmp, "npm-prefix")}
    for d in os.environ["PATH"].split(":"):
        assert not os.path.exists(os.path.join(d or ".", "claude")), "claude on this PATH"
    return extra


def test_order_of_the_places_looked_at(env, no_claude):
    pathdir = os.path.join(env.tmp, "pathbin")
    extra = dict(no_claude, PATH=pathdir + ":" + os.environ["PATH"])
    expected = list(reversed(places(env)))
    # Install from the last place to the first: each one must win over the ones after it.
    for path in expected:
        make_client(path)
        r = which(env, **extra)
        assert (r.returncode, r.stdout.decode(), r.stderr) == (0, path + "\n", b"")
    on_path = make_client(os.path.join(pathdir, "claude"))
    assert which(env, **extra).stdout.decode() == on_path + "\n"
    assert which(env, **dict(extra, CLAUDE_BIN=env.stub)).stdout.decode() == env.stub + "\n"


def test_claude_bin_by_name_is_looked_up_on_path(env, no_claude):
    pathdir = os.path.join(env.tmp, "pathbin")
    mine = make_client(os.path.join(pathdir, "my-claude"))
    r = which(env, **dict(no_claude, CLAUDE_BIN="my-claude", PATH=pathdir + ":" + os.environ["PATH"]))
    assert (r.returncode, r.stdout.decode()) == (0, mine + "\n")


def test_a_non_executable_candidate_is_passed_over(env, no_claude):
    first, second = places(env)[:2]
    make_client(first)
    os.chmod(first, 0o644)
    make_client(second)
    assert which(env, **no_claude).stdout.decode() == second + "\n"


def test_no_client_exits_127_naming_where_it_looked(env, no_claude):
    r = which(env, **no_claude)
    assert r.returncode == 127 and r.stdout == b""
    msg = r.stderr.decode()
    assert msg.startswith("claude-session: no Claude Code client found")
    for what in ["claude on PATH", "/usr/local/bin/claude"] + places(env):
        assert what in msg, what
    r = which(env, CLAUDE_BIN=os.path.join(env.tmp, "absent"))
    assert r.returncode == 127 and b"$CLAUDE_BIN" in r.stderr


def test_launcher_with_no_client_exits_127_and_creates_nothing(env, no_claude):
    r = env.run(**no_claude)
    assert r.returncode == 127
    assert b"no Claude Code client found" in r.stderr
    assert env.session_ids() == []
    assert not os.path.exists(env.registry) or env.read_registry()["sessions"] == {}


def test_launcher_runs_the_client_it_resolves(env, no_claude):
    local = make_client(places(env)[0])
    r = env.run(**no_claude)
    assert r.returncode == 0, r.stderr
    (sid,) = env.session_ids()
    (line,) = history_lines(env.sdir(sid))
    assert line["exe"] == local
    assert which(env, **no_claude).stdout.decode() == local + "\n"


def test_which_client_takes_no_arguments(env):
    r = subprocess.run([env.launcher, "--which-client", "x"], env=env.environ(),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    assert r.returncode == 64
