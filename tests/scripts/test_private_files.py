"""What the session tools create for themselves is private, whatever the
user's umask, and the bytecode cache they import from is trusted only while
nobody else can write into it."""
import marshal
import os
import re
import stat
import subprocess

import pytest

from conftest import FILES


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def under_umask(env, umask, argv, **extra):
    return subprocess.run(["sh", "-c", 'umask %s && exec "$@"' % umask, "sh"] + list(argv),
                          env=env.environ(**extra), stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)


def umask_client(env):
    """A client that records the umask it was started with."""
    path = os.path.join(env.tmp, "umask-client")
    with open(path, "w") as f:
        f.write('#!/bin/sh\numask > "$CLAUDE_CONFIG_DIR/umask"\n')
    os.chmod(path, 0o755)
    return path


def test_umask_000_makes_nothing_of_ours_public_but_the_client_keeps_it(env):
    # A claude_home that does not exist yet: the helper creates it, sessions/ and the cache.
    env.write_conf("claude_home=~/fresh/claude\n")
    r = under_umask(env, "000", [env.launcher], CLAUDE_BIN=umask_client(env))
    assert r.returncode == 0, r.stderr
    fresh = os.path.join(env.home, "fresh")
    cache = os.path.join(env.home, ".cache")
    made = [fresh] + [os.path.join(root, name) for top in (fresh, cache)
                      for root, dirs, files in os.walk(top) for name in dirs + files]
    (sid,) = [n for n in os.listdir(os.path.join(fresh, "claude", "sessions")) if len(n) == 36]
    by_client = os.path.join(fresh, "claude", "sessions", sid, "umask")
    public = {p: oct(mode(p)) for p in made
              if p != by_client and not os.path.islink(p) and mode(p) & 0o022}
    assert public == {}, public
    assert mode(fresh) == 0o700 and mode(os.path.join(cache, "claude-session")) == 0o700
    assert any(n.endswith(".pyc") for _r, _d, files in os.walk(cache) for n in files), "nothing cached"
    with open(by_client) as f:
        assert f.read().strip() == "0000"          # the client runs with the user's umask
    assert mode(by_client) == 0o666


@pytest.mark.parametrize("tool", ["claude-session-list", "cleanup-sessions.py"])
def test_list_and_cleaner_write_no_bytecode(env, tool):
    # Only the launcher caches the helper's bytecode; the list and the cleaner
    # compile it, and write nothing anywhere for it.
    r = under_umask(env, "000", [os.path.join(env.bindir, tool)])
    assert r.returncode == 0, r.stderr
    assert not os.path.exists(os.path.join(env.home, ".cache", "claude-session"))
    assert not os.path.exists(os.path.join(env.bindir, "__pycache__"))


def _plant(env, marker):
    """Replace the cached bytecode of session_registry with code that creates
    `marker` (keeping the header, so Python takes it as up to date)."""
    cache = os.path.join(env.home, ".cache", "claude-session")
    (pyc,) = [os.path.join(root, n) for root, _d, files in os.walk(cache) for n in files
              if n.startswith("session_registry.") and n.endswith(".pyc")]
    with open(pyc, "rb") as f:
        header = f.read(16)
    code = compile("open(%r, 'w').close()\nimport sys\nsys.exit(0)\n" % marker, "planted", "exec")
    with open(pyc, "wb") as f:
        f.write(header + marshal.dumps(code))
    return cache


RUNS = {
    "launcher": lambda env: env.run(),
    "list": lambda env: env.tool("claude-session-list"),
    "cleaner": lambda env: env.tool("cleanup-sessions.py", "--dry-run"),
}


@pytest.mark.parametrize("how", sorted(RUNS))
@pytest.mark.parametrize("loosen", ["group-and-other-writable", "parent-world-writable"])
def test_bytecode_others_could_have_written_is_not_run(env, how, loosen):
    assert env.run().returncode == 0                   # caches the helper's bytecode
    marker = os.path.join(env.tmp, "planted-code-ran")
    cache = _plant(env, marker)
    if loosen == "group-and-other-writable":
        os.chmod(cache, 0o777)                         # as a umask 000 run of an older version left it
    else:
        os.chmod(os.path.dirname(cache), 0o777)        # ~/.cache: another user may swap the directory
    r = RUNS[how](env)
    assert not os.path.exists(marker), "bytecode from an untrusted cache ran"
    assert r.returncode == 0, r.stderr
    assert mode(cache) == (0o777 if loosen == "group-and-other-writable" else 0o700)  # left alone


def test_a_private_cache_is_used_and_an_older_0755_one_is_tightened(env):
    assert env.run().returncode == 0
    marker = os.path.join(env.tmp, "cached-code-ran")
    cache = _plant(env, marker)                        # stands for "the cache is what runs"
    os.chmod(cache, 0o755)                             # what the previous version made
    env.run()
    assert os.path.exists(marker), "the private cache was not used"
    assert mode(cache) == 0o700


def test_a_cache_dir_that_is_a_symlink_is_not_used(env):
    assert env.run().returncode == 0
    marker = os.path.join(env.tmp, "planted-code-ran")
    cache = _plant(env, marker)
    os.rename(cache, cache + ".real")
    os.symlink(cache + ".real", cache)
    r = env.run()
    assert r.returncode == 0, r.stderr
    assert not os.path.exists(marker)


def test_bytecode_cache_is_one_function_in_one_place():
    # The launcher's; the other tools write no bytecode (see above).
    found = []
    for name in sorted(os.listdir(FILES)):
        with open(os.path.join(FILES, name)) as f:
            found += [name] * len(re.findall(r"^def bytecode_cache\(", f.read(), re.M))
    assert found == ["claude-session"]


# ---------------------------------------------------------------- the helper's messages

def test_helper_messages_name_the_launcher_not_dash_c(env):
    r = env.run("--name", "bad\x01name")
    assert r.returncode == 64
    assert r.stderr.startswith(b"claude-session: "), r.stderr
    assert b"-c:" not in r.stderr
    env.write_conf("max_sessions=lots\n")              # a warning from the config parser
    r = env.run()
    assert r.returncode == 0
    assert r.stderr.startswith(b"claude-session: ") and b"max_sessions" in r.stderr, r.stderr
    r = env.tool("cleanup-sessions.py")
    assert r.stderr.startswith(b"cleanup-sessions.py: ") and b"max_sessions" in r.stderr, r.stderr
