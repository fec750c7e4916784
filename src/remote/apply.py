"""csdeploy's remote apply step: makes every change a host's plan needs.

The controller runs it as `python3 -I -S -c <this source>` (its `environment`
assignments quoted), after `gather.py` has reported the host's state, and sends:

stdin:  one JSON line {"ops": [...]} followed by the bytes of every `write`
        op, back to back, `size` bytes each. Ops: mkdir, chmod, remove, write,
        command, verify.
stdout: {"results": [...]}, one result per op that ran; it stops at the first
        failure, as Ansible stops a host at its first failed task.

Every byte of stdin is read before any op runs, so a connection that drops
while contents are streaming changes nothing. Files are replaced atomically
(temp file in the destination directory, fsync, rename, fsync of the
directory): a reader sees the old file or the new one, never a partial one.
Python 3.8+ standard library only.
"""
import json
import os
import stat
import sys

try:
    import _signal as signal  # the same functions, without importing enum
except ImportError:
    import signal


OUTPUT_LIMIT = 64 * 1024


class Interrupted(Exception):
    pass


def _interrupted(signum, _frame):
    raise Interrupted("interrupted by signal %d" % signum)


def expand(path):
    return os.path.expanduser(path)


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def backup_name(dest):
    import time

    base = "%s.%s" % (dest, time.strftime("%Y%m%dT%H%M%S"))
    name, n = base + ".bak", 1
    while os.path.lexists(name):
        name, n = "%s.%d.bak" % (base, n), n + 1
    return name


def write_atomic(op, data):
    dest = expand(op["path"])
    directory = os.path.dirname(dest) or "."
    mode = op.get("mode")
    if mode is None:
        try:
            mode = stat.S_IMODE(os.stat(dest).st_mode)
        except FileNotFoundError:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
    tmp = os.path.join(directory, ".csdeploy-tmp-%s" % os.urandom(6).hex())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        backup = None
        if op.get("backup") and os.path.isfile(dest) and not os.path.islink(dest):
            backup = backup_name(dest)
            os.link(dest, backup)
        os.rename(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(directory)
    return {"ok": True, "backup": backup}


def make_dir(op):
    path = expand(op["path"])
    os.makedirs(path, exist_ok=True)
    if op.get("mode") is not None:
        os.chmod(path, op["mode"])
    return {"ok": True}


def remove(op):
    import shutil

    path = expand(op["path"])
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)
    return {"ok": True}


def chmod(op):
    os.chmod(expand(op["path"]), op["mode"])
    return {"ok": True}


def clip(data):
    text = data.decode("utf-8", "replace")
    return text if len(text) <= OUTPUT_LIMIT else text[:OUTPUT_LIMIT] + "\n[... cut]"


def command(op):
    import subprocess

    creates = op.get("creates")
    if creates and os.path.lexists(expand(creates)):
        return {"ok": True, "skipped": True, "msg": "%s exists" % expand(creates)}
    proc = subprocess.run(["sh", "-c", op["cmd"]], stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          cwd=expand("~"))
    return {"ok": proc.returncode == 0, "rc": proc.returncode,
            "stdout": clip(proc.stdout), "stderr": clip(proc.stderr),
            "msg": None if proc.returncode == 0 else "exit code %d" % proc.returncode}


def verify(op):
    # The verification ships with each run (see verify.py); it runs in this
    # process so verifying costs no extra remote command.
    namespace = {"__name__": "csdeploy_verify"}
    try:
        exec(compile(op["source"], "csdeploy-verify.py", "exec"), namespace)
        checks = namespace["run"](op["args"])
    except Exception as err:  # a crash must still come back as a result
        return {"ok": False, "msg": "verification crashed: %s: %s" % (type(err).__name__, err)}
    return {"ok": True, "checks": checks}


def read_exact(stream, size):
    data = stream.read(size)
    if len(data) != size:
        raise Interrupted("input ended after %d of %d bytes" % (len(data), size))
    return data


def apply(stream):
    header = json.loads(stream.readline())
    ops = header["ops"]
    # Read everything first: a dropped connection must change nothing.
    blobs = [read_exact(stream, op["size"]) if op["op"] == "write" else None for op in ops]
    handlers = {"mkdir": make_dir, "remove": remove, "chmod": chmod, "command": command,
                "verify": verify}
    results = []
    for op, blob in zip(ops, blobs):
        try:
            if op["op"] == "write":
                result = write_atomic(op, blob)
            else:
                result = handlers[op["op"]](op)
        except (OSError, ValueError) as err:
            result = {"ok": False, "msg": "%s: %s" % (type(err).__name__, err)}
        results.append(result)
        if not result["ok"]:
            break
    return {"results": results}


def main():
    for signum in (signal.SIGHUP, signal.SIGTERM, signal.SIGPIPE):
        signal.signal(signum, _interrupted)
    sys.stdout.write(json.dumps(apply(sys.stdin.buffer)))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
