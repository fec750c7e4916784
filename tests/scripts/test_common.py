"""src/remote/common.py, the helpers every host-side program shares (see
src/builtin.rs): each on fake trees, and the programs that take them in."""
import ast
import hashlib
import os

import pytest

from conftest import REPO, program_parts

COMMON = os.path.join(REPO, "src", "remote", "common.py")
GB = 1024 ** 3


@pytest.fixture(scope="module")
def common():
    with open(COMMON) as f:
        namespace = {"__name__": "csdeploy_program"}
        exec(compile(f.read(), COMMON, "exec"), namespace)
    return namespace


def write(root, files):
    for rel, text in files.items():
        path = os.path.join(str(root), rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    return str(root)


def top_level_names(path):
    with open(path) as f:
        tree = ast.parse(f.read(), filename=path)
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


@pytest.mark.parametrize("program", ["VERIFIER", "TOOLS", "DOCTOR"])
def test_no_program_defines_a_common_name_again(program):
    """One namespace: a program's own definition would silently replace the shared one."""
    shared = top_level_names(COMMON)
    for path in program_parts(program)[1:]:
        assert not shared & top_level_names(path), path


def test_expand_starts_at_home(common, monkeypatch):
    monkeypatch.setenv("HOME", "/home/u")
    assert common["expand"]("~/.claude") == "/home/u/.claude"
    assert common["expand"](".claude") == "/home/u/.claude"
    assert common["expand"]("/etc") == "/etc"


def test_sha256_of_streams_and_raises_on_a_missing_file(common, tmp_path):
    data = os.urandom(200000)
    (tmp_path / "f").write_bytes(data)
    assert common["sha256_of"](str(tmp_path / "f")) == hashlib.sha256(data).hexdigest()
    with pytest.raises(OSError):
        common["sha256_of"](str(tmp_path / "missing"))


def test_reading_text_and_numbers(common, tmp_path):
    root = write(tmp_path, {"empty": "", "crlf": "a\r\nb\n", "n": " 42\n", "max": "max\n"})
    (tmp_path / "binary").write_bytes(b"\xff\xfe")
    at = lambda name: os.path.join(root, name)
    assert common["read_raw"](at("empty")) == ""
    assert common["read_raw"](at("crlf")) == "a\r\nb\n"  # exactly, for a diff
    assert common["read_raw"](at("binary")) is None
    assert common["read_raw"](at("missing")) is None
    assert common["read_text"](at("empty")) is None
    assert common["read_text"](at("n")) == "42"
    assert [common["read_number"](at(n)) for n in ("n", "max", "empty", "missing")] == [42, None, None, None]


def test_meminfo_is_in_bytes(common, tmp_path):
    root = write(tmp_path, {"proc/meminfo": "MemTotal:  16 kB\nMemAvailable: 8 kB\nHugePages_Total: 0\n"})
    assert common["meminfo"](root) == {"MemTotal": 16384, "MemAvailable": 8192, "HugePages_Total": 0}
    assert common["meminfo"](str(tmp_path / "nowhere")) == {}


@pytest.mark.parametrize("cgroup, files, expected", [
    ("0::/box/inner\n", {"sys/fs/cgroup/box/memory.max": "%d\n" % GB, "sys/fs/cgroup/box/memory.current": "100\n",
                         "sys/fs/cgroup/box/inner/memory.max": "max\n"},
     (GB, "cgroup v2 memory.max of /box", 100)),
    # A cgroup namespace: the path is not in the mount, whose root is ours.
    ("0::/not/here\n", {"sys/fs/cgroup/memory.max": "%d\n" % GB, "sys/fs/cgroup/memory.current": "7\n"},
     (GB, "cgroup v2 memory.max of /", 7)),
    ("4:memory:/docker/abc\n", {"sys/fs/cgroup/memory/memory.limit_in_bytes": "%d\n" % GB},
     (GB, "cgroup v1 memory.limit_in_bytes of /", None)),
    # cgroup v1's "unlimited" is a number near 2**63: no limit.
    ("4:memory:/\n", {"sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n"}, None),
    ("0::/free\n", {"sys/fs/cgroup/free/memory.max": "max\n"}, None),
])
def test_cgroup_memory_limit_with_its_usage(common, tmp_path, cgroup, files, expected):
    root = write(tmp_path, dict(files, **{"proc/self/cgroup": cgroup}))
    assert common["cgroup_memory_limit"](root) == expected
