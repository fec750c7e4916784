"""verify.py's capacity check against fake /proc and /sys trees: the memory
a host really has is the smaller of MemTotal and its cgroup's limit."""
import os

import pytest


def fake_host(root, cgroup, files, mem_kb=16 * 1024 * 1024):
    """A root with /proc/meminfo (16 GB), /proc/self/cgroup and cgroup files."""
    os.makedirs(os.path.join(root, "proc/self"))
    with open(os.path.join(root, "proc/meminfo"), "w") as f:
        f.write("MemTotal:       %d kB\nMemFree:        1 kB\n" % mem_kb)
    with open(os.path.join(root, "proc/self/cgroup"), "w") as f:
        f.write(cgroup)
    for rel, text in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    return str(root)


GB = 1024 ** 3


@pytest.mark.parametrize("cgroup, files, limited", [
    ("0::/user.slice/job\n", {"sys/fs/cgroup/user.slice/job/memory.max": "%d\n" % GB}, "cgroup v2 memory.max"),
    # The limit set on an ancestor binds its children.
    ("0::/box/inner\n", {"sys/fs/cgroup/box/memory.max": "%d\n" % GB,
                         "sys/fs/cgroup/box/inner/memory.max": "max\n"}, "cgroup v2 memory.max of /box"),
    ("4:memory:/docker/abc\n1:cpu:/\n0::/\n",
     {"sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes": "%d\n" % GB,
      "sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n"}, "cgroup v1 memory.limit_in_bytes"),
    # A cgroup namespace: the path is not in the mount, the mount root is ours.
    ("4:memory:/not/here\n", {"sys/fs/cgroup/memory/memory.limit_in_bytes": "%d\n" % GB}, "cgroup v1"),
])
def test_a_cgroup_memory_limit_below_memtotal_is_what_counts(verify, tmp_path, cgroup, files, limited):
    root = fake_host(tmp_path, cgroup, files)
    result = verify["check_capacity"](4, root)
    assert result["status"] == "warn", result
    assert result["actual"].startswith("4 x 500 MB = 2000 MB, host has 1024 MB ("), result
    assert limited in result["actual"] and "MemTotal 16384 MB" in result["actual"], result


@pytest.mark.parametrize("cgroup, files", [
    ("0::/free\n", {"sys/fs/cgroup/free/memory.max": "max\n"}),
    ("0::/\n", {}),
    ("4:memory:/\n", {"sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n"}),
    ("", {}),
])
def test_without_a_lower_limit_memtotal_counts(verify, tmp_path, cgroup, files):
    root = fake_host(tmp_path, cgroup, files)
    result = verify["check_capacity"](4, root)
    assert result["status"] == "pass", result
    assert result["actual"] == "4 x 500 MB = 2000 MB, host has 16384 MB (MemTotal)", result
