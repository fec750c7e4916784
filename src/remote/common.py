"""What csdeploy's host-side programs share: the one copy of each helper
the day-two tools (tools.py), the doctor (doctor.py) and the verifier
(verify/) use. src/builtin.rs joins this file ahead of each program's
source, so its names are part of every program's one namespace: a program
must not define them again.

The agent (agent.py) is not a program and keeps its own copies. Written for
old interpreters too (no f-strings): the doctor must be able to say that a
python3 is too old. Python standard library only.
"""
import hashlib
import os

# cgroup v1 says "no limit" with a number near 2**63.
CGROUP_UNLIMITED = 1 << 60


def expand(path):
    """`~` is the home directory, and so is where a relative path starts, as over ssh."""
    return os.path.join(os.path.expanduser("~"), os.path.expanduser(path))


def sha256_of(path):
    """The file's sha256, in hex; OSError when it cannot be read."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def read_raw(path):
    """A file's text exactly as it is (UTF-8), None if it is absent,
    unreadable or not text: "" is a value here."""
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def read_text(path):
    """The one value a file holds, stripped; None if absent or empty."""
    return (read_raw(path) or "").strip() or None


def read_number(path):
    """The number in a file (a cgroup's); None for "max", absent or unreadable."""
    try:
        return int(read_text(path) or "")
    except ValueError:
        return None


def memory_hierarchy(line, root):
    """(mount, this process's group in it, limit file, usage file, kind) for
    a /proc/self/cgroup line of a memory hierarchy (cgroup v2, or the v1
    `memory` controller), else None."""
    parts = line.split(":", 2)
    if len(parts) != 3:
        return None
    if parts[0] == "0" and parts[1] == "":
        mount, files = os.path.join(root, "sys/fs/cgroup"), ("memory.max", "memory.current", "cgroup v2")
    elif "memory" in parts[1].split(","):
        mount, files = (os.path.join(root, "sys/fs/cgroup/memory"),
                        ("memory.limit_in_bytes", "memory.usage_in_bytes", "cgroup v1"))
    else:
        return None
    group = parts[2].strip("/")
    # A cgroup namespace can show a path the mount does not have: then the
    # mount's root is this process's group.
    if group and not os.path.isdir(os.path.join(mount, group)):
        group = ""
    return (mount, group) + files


def cgroup_memory_limit(root="/"):
    """(bytes, what set it, bytes used under it or None) of the tightest
    memory limit on this process's cgroup and its ancestors (cgroup v2
    memory.max, v1 memory.limit_in_bytes), or None without one. `root` is
    for tests."""
    try:
        with open(os.path.join(root, "proc/self/cgroup")) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    best = None
    for hierarchy in filter(None, (memory_hierarchy(line, root) for line in lines)):
        mount, group, limit_file, usage_file, kind = hierarchy
        while True:
            limit = read_number(os.path.join(mount, group, limit_file))
            if limit is not None and limit < CGROUP_UNLIMITED and (best is None or limit < best[0]):
                best = (limit, "%s %s of /%s" % (kind, limit_file, group),
                        read_number(os.path.join(mount, group, usage_file)))
            if not group:
                break
            group = os.path.dirname(group)
    return best


def meminfo(root="/"):
    """/proc/meminfo in bytes by name ({} if unreadable). `root` is for tests."""
    values = {}
    try:
        with open(os.path.join(root, "proc/meminfo")) as f:
            for line in f:
                key, _, rest = line.partition(":")
                fields = rest.split()
                if fields and fields[0].isdigit():
                    values[key] = int(fields[0]) * 1024
    except OSError:
        pass
    return values
