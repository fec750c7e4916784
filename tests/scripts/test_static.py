"""Static checks: shellcheck for the bash scripts, Python 3.8 compatibility for
the Python ones (hosts may have nothing newer)."""
import ast
import glob
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import FILES, HERE, SCRIPTS, Env


def _shebang(path):
    with open(path, "rb") as f:
        return f.readline().decode("utf-8", "replace")


def _files():
    return sorted(os.path.join(FILES, name) for name in os.listdir(FILES))


BASH = [p for p in _files() if "bash" in _shebang(p) or _shebang(p).rstrip().endswith("/sh")]
PYTHON = [p for p in _files() if p.endswith(".py") or "python" in _shebang(p)]
TEST_PYTHON = sorted(glob.glob(os.path.join(HERE, "*.py")))
# csdeploy's own remote steps run on the same hosts, under the same Python.
REMOTE = sorted(glob.glob(os.path.join(os.path.dirname(os.path.dirname(HERE)), "src", "remote", "*.py"))
                + glob.glob(os.path.join(os.path.dirname(os.path.dirname(HERE)), "src", "remote", "verify", "*.py")))


def test_every_deployed_script_is_checked():
    assert sorted(map(os.path.basename, BASH + PYTHON)) == sorted(SCRIPTS)
    assert [os.path.basename(p) for p in BASH] == ["claude-session"]


def test_shellcheck_clean():
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.fail("shellcheck is not installed (CI installs it; apt-get install shellcheck)")
    r = subprocess.run([shellcheck, "--shell=bash", "--severity=style"] + BASH,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert r.returncode == 0, r.stdout.decode()


# Standard-library names added after 3.8, as attributes or imports.  Not
# exhaustive: the ones a script like these could plausibly reach for.
NEWER_ATTRS = {
    "removeprefix", "removesuffix",            # str/bytes 3.9
    "is_relative_to", "with_stem", "readlink",  # pathlib 3.9 (os.readlink is fine, see below)
    "randbytes", "pidfd_open", "waitstatus_to_exitcode", "splitlist", "lcm",  # 3.9
    "cache",                                   # functools 3.9
    "pairwise", "aiter", "anext", "countOf",   # 3.10
    "exception_group", "add_note", "chdir",    # 3.11 (contextlib.chdir)
    "batched", "walk",                         # itertools.batched, pathlib.Path.walk 3.12
}
NEWER_MODULES = {"zoneinfo", "graphlib", "tomllib"}
GENERIC_BUILTINS = {"list", "dict", "tuple", "set", "frozenset", "type"}
NEWER_CALLS = {  # callable name -> keyword arguments it gained after 3.8
    "rmtree": {"onexc"}, "ArgumentParser": {"exit_on_error"}, "zip": {"strict"},
    "basicConfig": {"encoding", "errors"}, "dataclass": {"kw_only", "slots", "match_args"},
}


def _newer_usage(tree):
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in NEWER_ATTRS:
            base = node.value
            # os.readlink / os.walk / os.chdir are old; the pathlib ones are not.
            if not (isinstance(base, ast.Name) and base.id in ("os", "shutil")):
                found.append("%s (line %d)" % (node.attr, node.lineno))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            found += ["import %s" % n for n in names if n.split(".")[0] in NEWER_MODULES]
        elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) \
                and node.value.id in GENERIC_BUILTINS:
            found.append("%s[...] (line %d)" % (node.value.id, node.lineno))
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr) and \
                any(isinstance(side, (ast.Dict, ast.DictComp)) for side in (node.left, node.right)):
            found.append("dict | dict (line %d)" % node.lineno)
        elif isinstance(node, ast.Call):
            name = getattr(node.func, "attr", None) or getattr(node.func, "id", None)
            for kw in node.keywords:
                if kw.arg in NEWER_CALLS.get(name, ()):
                    found.append("%s(%s=) (line %d)" % (name, kw.arg, node.lineno))
        elif type(node).__name__ in ("Match", "TryStar", "TypeAlias"):
            found.append("%s statement (line %d)" % (type(node).__name__, node.lineno))
    return found


def _rust_str_list(source, name):
    """The string literals of `pub const NAME: &[&str] = &[...];` in Rust source."""
    found = re.search(r"pub const %s: &\[&str\] = &\[(.*?)\];" % re.escape(name), source, re.S)
    assert found, "no %s list" % name
    body = "\n".join(line.split("//")[0] for line in found.group(1).splitlines())
    return [m.group(1) for m in re.finditer(r'"((?:[^"\\]|\\.)*)"', body)]


def test_per_session_state_is_the_same_list_as_csdeploys():
    # Hosts run the launcher without csdeploy: it keeps its own copy of the list.
    sys.path.insert(0, FILES)
    import session_registry as sr

    with open(os.path.join(os.path.dirname(os.path.dirname(HERE)), "src", "vars.rs")) as f:
        rust = _rust_str_list(f.read(), "PER_SESSION_STATE")
    assert len(rust) >= 10, rust
    assert list(sr.PER_SESSION_STATE) == rust


def test_rust_list_parser_reads_what_it_names():
    src = 'pub const X: &[&str] = &[\n    "a.json", // a comment "b"\n    "c",\n];\npub const Y: &[&str] = &["d"];'
    assert _rust_str_list(src, "X") == ["a.json", "c"]


@pytest.mark.parametrize("name", ["gather.sh", "doctor.sh"])
def test_shellcheck_clean_remote_sh(name):
    path = os.path.join(os.path.dirname(os.path.dirname(HERE)), "src", "remote", name)
    r = subprocess.run(["shellcheck", "-s", "sh", path], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert r.returncode == 0, r.stdout.decode()


def test_remote_steps_are_found():
    assert sorted(map(os.path.basename, REMOTE)) == ["agent.py", "checks.py", "cleanup.py", "client.py", "common.py",
                                                     "doctor.py", "launch.py", "main.py", "probe.py", "tools.py"]


@pytest.mark.parametrize("path", PYTHON + REMOTE + TEST_PYTHON, ids=os.path.basename)
def test_python_parses_as_3_8(path):
    with open(path, encoding="utf-8") as f:
        ast.parse(f.read(), filename=path, feature_version=(3, 8))


@pytest.mark.parametrize("path", PYTHON + REMOTE, ids=os.path.basename)
def test_no_stdlib_apis_newer_than_3_8(path):
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    assert _newer_usage(tree) == []


def test_checker_catches_newer_apis():
    bad = "import zoneinfo\nx: list[int] = []\ns.removeprefix('a')\n{1: 2} | d\nzip(a, b, strict=True)\n"
    found = _newer_usage(ast.parse(bad))
    assert len(found) == 5, found


def _interpreter(exe):
    """(major, minor) of a working interpreter at `exe`, or None."""
    try:
        r = subprocess.run([exe, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if r.returncode != 0:
        return None
    return tuple(int(n) for n in r.stdout.decode().split("."))


def pythons():
    """Every Python 3.8 or newer this machine has, one per minor version, as
    {"3.8": path, ...}: the host-side code must run on each. pyenv's real
    binaries are preferred to its shims (a shim costs ~100 ms a start)."""
    found = {}
    candidates = sorted(glob.glob("/root/.pyenv/versions/3.*/bin/python3.*")
                        + glob.glob(os.path.expanduser("~/.pyenv/versions/3.*/bin/python3.*")))
    candidates += [shutil.which("python3.%d" % minor) for minor in range(8, 20)]
    candidates += [shutil.which("python3"), sys.executable]
    for exe in candidates:
        if not exe or exe.endswith("-config") or not re.search(r"python3(\.\d+)?$", exe):
            continue
        version = _interpreter(exe)
        if version and version >= (3, 8):
            found.setdefault("%d.%d" % version, exe)
    return dict(sorted(found.items(), key=lambda kv: tuple(map(int, kv[0].split(".")))))


PYTHONS = pythons()


def _python38():
    """A working Python 3.8 interpreter, if this machine has one."""
    return PYTHONS.get("3.8")


def test_the_interpreter_matrix_reaches_from_3_8_to_this_python():
    """The matrix below is only worth its name if it spans the oldest Python
    the hosts may have and at least the one running the tests."""
    print("Pythons the host-side code runs on here: %s" % ", ".join(PYTHONS))
    assert "%d.%d" % sys.version_info[:2] in PYTHONS
    if "3.8" not in PYTHONS:
        pytest.skip("no Python 3.8 interpreter here; the AST checks above still apply")


@pytest.mark.parametrize("version", list(PYTHONS))
def test_tools_run_under_every_python(tmp_path, version):
    exe = PYTHONS[version]
    env = Env(tmp_path)
    shim = tmp_path / "python"
    shim.mkdir()
    os.symlink(exe, str(shim / "python3"))
    path = "%s:%s" % (shim, os.environ["PATH"])
    try:
        r = env.run("--name", "old python", PATH=path, STUB_EXIT=3)
        assert r.returncode == 3, r.stderr
        (sid,) = env.session_ids()
        env.make_session(history=b"", registered=False)
        for script, args in (("claude-session-list", ["--json"]),
                             ("cleanup-sessions.py", ["--dry-run", "--json"]),
                             ("cleanup-sessions.py", ["--json", "--days", "0"])):
            r = subprocess.run([exe, os.path.join(env.bindir, script)] + args,
                               env=env.environ(PATH=path), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=30)
            assert r.returncode == 0, (script, r.stderr.decode())
        assert env.session_ids() == []
    finally:
        env.cleanup()


@pytest.mark.parametrize("version", list(PYTHONS))
def test_csdeploy_remote_steps_run_under_every_python(tmp_path, version):
    """The agent, the verifier and the day-two programs run on hosts whose
    python3 may be any from 3.8 to the newest."""
    exe = PYTHONS[version]
    from conftest import csdeploy_binary

    home = tmp_path / "home"
    home.mkdir()
    inventory = tmp_path / "inventory.yml"
    inventory.write_text("all:\n  hosts:\n    local:\n      ansible_connection: local\n"
                         "      ansible_python_interpreter: %s\n"
                         "      environment:\n        HOME: %s\n" % (exe, home))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLAUDE", "CSDEPLOY_"))}
    r = subprocess.run([csdeploy_binary(), "push", "--verify", "-i", str(inventory), "--format", "json"],
                       env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
    report = json.loads(r.stdout)
    tasks = report["hosts"][0]["tasks"]
    checks = {c["id"]: c["status"] for t in tasks for c in t.get("checks", [])}
    assert checks and set(checks.values()) == {"pass"}, checks
    # The day-two programs run under it too, each in its one command.
    for command in (["sessions"], ["cleanup", "--dry-run"], ["doctor"], ["remove", "--check"]):
        r = subprocess.run([csdeploy_binary()] + command + ["-i", str(inventory), "--format", "json"],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
        host = json.loads(r.stdout)["hosts"][0]
        assert host["remote_commands"] == 1, host
        if command != ["doctor"]:  # doctor fails here for want of Claude Code
            assert host["status"] in ("ok", "changed"), host
        else:
            python = [c for c in host["checks"] if c["id"] == "python3"]
            assert python[0]["status"] == "pass" and python[0]["actual"].startswith(version), python
