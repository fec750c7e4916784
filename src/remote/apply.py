r"""csdeploy's remote apply step: makes every change a host's plan needs.

The controller runs it as `python3 -I -S -c <this source>` (its `environment`
assignments quoted), after `gather.py` has reported the host's state, and sends:

stdin:  `COUNT\0`, then per op `OP\0PATH\0MODE\0SIZE\0BACKUP\0ARG\0TEXT\0`,
        then the bytes of every `write` op, back to back, SIZE bytes each.
        OP is mkdir|chmod|remove|write|link|command|verify|program; MODE
        octal; BACKUP 1 or empty; ARG is a link's target, a command's
        `creates` or a verification's or program's JSON arguments; TEXT a
        command's JSON {"argv": [...] or "sh": TEXT, "env": {...}} or the
        verifier's or program's source.
stdout: per op that ran, `OK\0SKIPPED\0MSG\0BACKUP\0RC\0STDOUT\0STDERR\0CHECKS\0DATA\0`
        (CHECKS: a verification's or program's checks as JSON; DATA: a
        program's result as JSON). It stops at the first failure, as Ansible
        stops a host at its first failed task.

NUL-separated, like gather, because importing json (with re) would double
this step's start-up; a verification, which needs JSON, imports it.
Every byte of stdin is read before any op runs, so a connection that drops
while contents are streaming changes nothing. Files are replaced atomically
(temp file in the destination directory, fsync, rename; each directory is
fsynced once at the end): a reader sees the old file or the new one, never a
partial one. Python 3.8+ standard library only.
"""
import os
import stat
import sys
import time

import signal


OUTPUT_LIMIT = 64 * 1024


class Interrupted(Exception):
    pass


def _interrupted(signum, _frame):
    raise Interrupted("interrupted by signal %d" % signum)


def expand(path):
    """`~` is the home directory, and so is where a relative path starts, as
    over ssh, whatever directory a local run started in."""
    return os.path.join(os.path.expanduser("~"), os.path.expanduser(path))


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


# A push whose writes keep backups (`push --backup`, or a task's `backup:
# true`) records what it replaced, for `csdeploy rollback`: per file its
# backup (null: the file was new), its sha256 and mode before and after. The
# record of the last such push replaces the one before; each file keeps its
# BACKUPS_KEPT newest backups, older ones are removed.
BACKUPS_KEPT = 3


def manifest_path():
    state = os.environ.get("XDG_STATE_HOME") or expand("~/.local/state")
    return os.path.join(state, "csdeploy", "last-push.json")


def sha256_hex(data):
    import hashlib

    return hashlib.sha256(data).hexdigest()


def record_push(replaced):
    """Writes the manifest of this push's replaced files and prunes old
    backups. Returns why the manifest could not be written (the push has
    happened, but rollback would not know it), else None."""
    import time

    path = manifest_path()
    tmp = "%s.%s.tmp" % (path, os.urandom(6).hex())
    try:
        os.makedirs(os.path.dirname(path), 0o700, exist_ok=True)
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            f.write(json_dumps({"version": 1, "time": time.time(), "files": replaced}))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return "%s: %s" % (path, err.strerror or err)
    keep = {r["backup"] for r in replaced if r["backup"]}
    for r in replaced:
        directory, base = os.path.split(r["path"])

        def age(name):
            # backup_name's DEST.YYYYmmddTHHMMSS[.N].bak: by time, then N.
            stamp, rest = name[len(base) + 1:len(base) + 16], name[len(base) + 16:-len(".bak")]
            if not stamp.replace("T", "").isdigit() or not (rest == "" or rest[1:].isdigit()):
                return None
            return stamp, int(rest[1:] or 0)
        try:
            # This push's backup stays whatever its stamp says (a clock
            # stepped back would sort it among the old ones); of the others,
            # the newest BACKUPS_KEPT - 1.
            older = sorted((n for n in os.listdir(directory)
                            if n.startswith(base + ".") and n.endswith(".bak") and age(n)
                            and os.path.join(directory, n) not in keep),
                           key=age, reverse=True)
            for name in older[BACKUPS_KEPT - 1:]:
                os.unlink(os.path.join(directory, name))
        except OSError:
            pass


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
    swept = sweep_temp_files(directory)
    tmp = os.path.join(directory, "%s%d-%s" % (TMP_PREFIX, os.getpid(), os.urandom(6).hex()))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        backup = replaced = None
        if op.get("backup"):
            replaced = {"path": dest, "backup": None, "sha256_before": None,
                        "mode_before": None, "sha256_after": sha256_hex(data), "mode_after": mode}
        if op.get("backup") and os.path.isfile(dest) and not os.path.islink(dest):
            backup = backup_name(dest)
            os.link(dest, backup)
            with open(backup, "rb") as f:
                replaced["sha256_before"] = sha256_hex(f.read())
            replaced["backup"] = backup
            replaced["mode_before"] = stat.S_IMODE(os.stat(backup).st_mode)
        os.rename(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    swept = "removed %d stale temp file(s) of an interrupted push" % swept if swept else None
    return {"ok": True, "backup": backup, "dirty": directory, "replaced": replaced, "msg": swept}


TMP_PREFIX = ".csdeploy-tmp-"
STALE_SECONDS = 3600


def sweep_temp_files(directory):
    """Removes the temp files an agent killed mid-write left in `directory`
    (`.csdeploy-tmp-<pid>-<hex>`): those whose writer is no longer running,
    and unnamed older ones (an earlier version's) after an hour. A running
    agent's file is never touched: concurrent pushes stay safe. Returns how
    many went."""
    try:
        names = [n for n in os.listdir(directory) if n.startswith(TMP_PREFIX)]
    except OSError:
        return 0
    removed = 0
    for name in names:
        path = os.path.join(directory, name)
        pid = name[len(TMP_PREFIX):].split("-", 1)[0]
        try:
            if pid.isdigit() and "-" in name[len(TMP_PREFIX):]:
                if os.path.exists("/proc/%s" % pid):
                    continue
            elif os.lstat(path).st_mtime > time.time() - STALE_SECONDS:
                continue
            os.unlink(path)
            removed += 1
        except OSError:
            pass
    return removed


def make_dir(op):
    path = expand(op["path"])
    os.makedirs(path, exist_ok=True)
    if op.get("mode") is not None:
        os.chmod(path, op["mode"])
    return {"ok": True}


def link(op):
    """A symlink at PATH to ARG where nothing is. symlink(2) is itself atomic
    (a reader sees no entry or the whole link) and never replaces what is
    there, so a file created since the gather is kept; a temp link renamed
    into place would replace it, and csdeploy never replaces a file it did
    not create."""
    path, target = expand(op["path"]), op["target"]
    try:
        os.symlink(target, path)
    except FileExistsError:
        if os.path.islink(path) and os.readlink(path) == target:
            return {"ok": True}
        return {"ok": False, "msg": "%s appeared since the gather and is not a link to %s: csdeploy "
                "never replaces a file it did not create. To have it linked, remove it (or move it "
                "aside) and push again" % (path, target)}
    return {"ok": True, "dirty": os.path.dirname(path)}


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
    import json

    spec = json.loads(op["cmd"])
    # argv: no shell, one argument per element (a leading ~ is the home
    # directory, as in every path); sh: the playbook's literal shell text.
    argv = [expand(a) if a == "~" or a.startswith("~/") else a for a in spec["argv"]] \
        if "argv" in spec else ["sh", "-c", spec["sh"]]
    env = dict(os.environ)
    env.update(spec["env"])
    try:
        # Its own process group, so that an interrupt ends all it started.
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                cwd=expand("~"), start_new_session=True)
    except OSError as e:
        return {"ok": False, "rc": 127, "stdout": "", "stderr": "",
                "msg": "cannot run %s: %s" % (argv[0], e.strerror or e)}
    try:
        stdout, stderr = proc.communicate()
    except BaseException:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        proc.wait()
        raise
    return {"ok": proc.returncode == 0, "rc": proc.returncode,
            "stdout": clip(stdout), "stderr": clip(stderr),
            "msg": None if proc.returncode == 0 else "exit code %d" % proc.returncode}


# ---------------------------------------------------------------- verification
# JSON is imported only by the ops that carry it (a verification, a day-two
# program, a push's backup record): a plain push does without its cost.
def json_loads(text):
    import json

    return json.loads(text)


def json_dumps(value):
    import json

    return json.dumps(value)


def verify(op):
    # The verification ships with each run (see verify/main.py); it runs in
    # this process so verifying costs no extra remote command.
    namespace = {"__name__": "csdeploy_verify"}
    try:
        exec(compile(op["source"], "csdeploy-verify.py", "exec"), namespace)
        checks = namespace["run"](json_loads(op["args"]))
    except Exception as err:  # a crash must still come back as a result
        return {"ok": False, "msg": "verification crashed: %s: %s" % (type(err).__name__, err)}
    return {"ok": True, "checks": json_dumps(checks)}


def program(op):
    """A day-two program (sessions, cleanup, remove, doctor: src/remote/*.py):
    its `run(args)` returns {"ok", "msg", "checks", "data"}. It runs in this
    process, so the whole day-two command costs a host one remote command.
    Compiled afresh each time (no bytecode cache: these run once a day)."""
    namespace = {"__name__": "csdeploy_program"}
    try:
        exec(compile(op["source"], "csdeploy-program.py", "exec"), namespace)
        result = namespace["run"](json_loads(op["args"]))
    except Interrupted:
        raise
    except Exception as err:  # a crash must still come back as a result
        return {"ok": False, "msg": "the csdeploy program crashed: %s: %s" % (type(err).__name__, err)}
    checks, data = result.get("checks"), result.get("data")
    return {"ok": bool(result.get("ok")), "msg": result.get("msg"), "rc": result.get("rc"),
            "checks": None if checks is None else json_dumps(checks),
            "data": None if data is None else json_dumps(data)}


FIELDS = ("op", "path", "mode", "size", "backup", "arg", "text")
REPLY = ("ok", "skipped", "msg", "backup", "rc", "stdout", "stderr", "checks", "data")


def parse(data):
    """The ops and the content blobs from everything read on stdin."""
    pos = 0

    def field():
        nonlocal pos
        end = data.index(b"\0", pos)
        value, pos = data[pos:end], end + 1
        return value

    ops = []
    for _ in range(int(field())):
        raw = dict(zip(FIELDS, (field() for _ in FIELDS)))
        ops.append({
            "op": raw["op"].decode("ascii"),
            "path": os.fsdecode(raw["path"]),
            "mode": int(raw["mode"], 8) if raw["mode"] else None,
            "size": int(raw["size"]) if raw["size"] else 0,
            "backup": raw["backup"] == b"1",
            "creates": os.fsdecode(raw["arg"]) or None,
            "target": os.fsdecode(raw["arg"]),
            "args": raw["arg"].decode("utf-8"),
            "cmd": raw["text"].decode("utf-8", "surrogateescape"),
            "source": raw["text"].decode("utf-8", "surrogateescape"),
        })
    blobs = []
    for op in ops:
        if op["op"] == "write":
            blob = data[pos:pos + op["size"]]
            if len(blob) != op["size"]:
                raise Interrupted("input ended after %d of %d bytes" % (len(blob), op["size"]))
            blobs.append(blob)
            pos += op["size"]
        else:
            blobs.append(None)
    return ops, blobs


def encode(result):
    def text(value):
        if value is None or value is False:
            return b""
        if value is True:
            return b"1"
        if isinstance(value, int):
            return b"%d" % value
        return os.fsencode(value).replace(b"\0", b"\\0") if isinstance(value, str) else value
    return b"".join(text(result.get(key)) + b"\0" for key in REPLY)


def apply(data):
    # Everything is read first: a dropped connection must change nothing.
    ops, blobs = parse(data)
    handlers = {"mkdir": make_dir, "remove": remove, "chmod": chmod, "link": link,
                "command": command, "verify": verify, "program": program}
    out = []
    dirty = set()
    replaced = []
    try:
        for op, blob in zip(ops, blobs):
            try:
                if op["op"] == "write":
                    result = write_atomic(op, blob)
                else:
                    result = handlers[op["op"]](op)
                if result.get("dirty"):
                    dirty.add(result["dirty"])
                if result.get("replaced"):
                    replaced.append(result["replaced"])
            except (OSError, ValueError) as err:
                result = {"ok": False, "msg": "%s: %s" % (type(err).__name__, err)}
            out.append(encode(result))
            if not result["ok"]:
                break
    finally:
        # The renames are durable once their directories are; a directory a
        # later task removed has nothing left to make durable.
        for directory in dirty:
            try:
                fsync_dir(directory)
            except OSError:
                pass
        unrecorded = record_push(replaced) if replaced else None
    if unrecorded and out:
        # The files are in place; a push whose backups rollback cannot find
        # is not what `--backup` asked for, so the host fails, saying so.
        out[-1] = encode({"ok": False, "msg": "the changes are made and backed up, but the record "
                          "`csdeploy rollback` needs could not be written (%s): free space and push "
                          "again with --backup" % unrecorded})
    return b"".join(out)


def stop_when_the_caller_is_gone():
    """A command or a verification can run for minutes. If whoever reads our
    stdout goes away meanwhile (csdeploy interrupted, the ssh connection
    closed: sshd sends no SIGHUP without a terminal), stop as if terminated,
    so that the work does not run on unseen. poll() reports POLLERR/POLLHUP
    on a pipe or socket whose other end is closed, whatever was asked."""
    import select
    import threading

    poller = select.poll()
    poller.register(sys.stdout.fileno(), 0)

    def watch():
        while True:
            for _fd, events in poller.poll():
                if events & (select.POLLERR | select.POLLHUP):
                    os.kill(os.getpid(), signal.SIGTERM)
                    return

    threading.Thread(target=watch, daemon=True).start()


def main():
    for signum in (signal.SIGHUP, signal.SIGTERM, signal.SIGPIPE):
        signal.signal(signum, _interrupted)
    data = sys.stdin.buffer.read()
    if b"\0command\0" in data or b"\0verify\0" in data or b"\0program\0" in data:
        stop_when_the_caller_is_gone()
    try:
        sys.stdout.buffer.write(apply(data))
        sys.stdout.flush()
    except Interrupted as stop:
        # A stop asked for, not a crash: one line, no traceback.
        sys.stderr.write("csdeploy-apply: %s: stopped where it was\n" % stop)
        sys.exit(128 + signal.SIGTERM)


if __name__ == "__main__":
    main()
