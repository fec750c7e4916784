r"""csdeploy's agent: the Python side of a host's one remote command.

The controller starts it through gather.sh (after the shell's own gather,
or at once) and speaks the protocol that src/protocol.rs documents: each
request is one JSON line, a header with named fields, the contents of files
following it as raw bytes whose sizes it names; each reply is one JSON line
(a gather's old contents follow it the same way). EOF ends the agent.

  gather  the state of every path a plan touches, and for --diff the old
          content of a file that differs from what the task wants.
  apply   every change of the host's plan, in order: mkdir, chmod, remove,
          link, write (atomic: temp file in the destination directory,
          fsync, rename; each directory is fsynced once at the end),
          command and program (the verifier and the day-two programs,
          src/remote/, run in this process). All of the request is read
          before any op runs, so a connection that drops while contents
          stream changes nothing. It stops at the first failure, as
          Ansible stops a host at its first failed task.

A frame it cannot read is answered {"error": ...} and ends it (exit 2).
Python 3.8+ standard library only.
"""
import json
import os
import signal
import stat
import sys
import time


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
    import hashlib  # here, not at the top: a push that keeps no backup hashes nothing

    return hashlib.sha256(data).hexdigest()


def record_push(replaced):
    """Writes the manifest of this push's replaced files and prunes old
    backups. Returns why the manifest could not be written (the push has
    happened, but rollback would not know it), else None."""
    path = manifest_path()
    tmp = "%s.%s.tmp" % (path, os.urandom(6).hex())
    try:
        os.makedirs(os.path.dirname(path), 0o700, exist_ok=True)
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            f.write(json.dumps({"version": 1, "time": time.time(), "files": replaced}))
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
    # argv: no shell, one argument per element (a leading ~ is the home
    # directory, as in every path); sh: the playbook's literal shell text.
    argv = [expand(a) if a == "~" or a.startswith("~/") else a for a in op["argv"]] \
        if "argv" in op else ["sh", "-c", op["sh"]]
    env = dict(os.environ)
    env.update(op["env"])
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


# ---------------------------------------------------------------- programs
def program(op):
    """A program: the verifier (src/remote/verify/) or a day-two one
    (sessions, cleanup, remove, doctor: src/remote/*.py). Its `run(args)`
    returns {"ok", "msg", "checks", "data"}. It runs in this process, so the
    whole command costs a host one remote command. Compiled afresh each time
    (no bytecode cache: these run once a day). Interrupted unwinds to
    main(). The verifier handles SIGTERM and SIGHUP itself while it runs
    (it cleans up, then dies of the signal) and puts ours back when done."""
    namespace = {"__name__": "csdeploy_program"}
    try:
        exec(compile(op["source"], "csdeploy-program.py", "exec"), namespace)
        result = namespace["run"](op["args"])
    except Interrupted:
        raise
    except Exception as err:  # a crash must still come back as a result
        return {"ok": False, "msg": "the csdeploy program crashed: %s: %s" % (type(err).__name__, err)}
    return {"ok": bool(result.get("ok")), "msg": result.get("msg"), "rc": result.get("rc"),
            "checks": result.get("checks"), "data": result.get("data")}


# ---------------------------------------------------------------- gather
MAX_DIFF_BYTES = 1 << 20


def sha256_file(path):
    import hashlib  # only the agent's own gather hashes: ~3 ms of OpenSSL's start

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def text(name):
    """A file system name as JSON can carry it: undecodable bytes replaced."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def describe(want, path):
    """One path's state, and its old content (bytes) when --diff wants it."""
    path = expand(path)
    state = {"path": text(path), "kind": "missing", "mode": None, "uid": None, "sha256": None,
             "target": None, "link_to_dir": False, "content_size": None}
    try:
        st = os.lstat(path)
    except OSError:
        # Missing, or behind a directory we may not search: what stat in
        # gather.sh reports as nothing. Applying to it then says why.
        return state, None
    state["mode"] = stat.S_IMODE(st.st_mode)
    state["uid"] = st.st_uid
    content = None
    if stat.S_ISLNK(st.st_mode):
        state["kind"] = "link"
        try:
            state["target"] = text(os.readlink(path))
        except OSError:
            pass  # replaced since lstat: no target, so no link task calls it its own
        state["link_to_dir"] = os.path.isdir(path)
    elif stat.S_ISDIR(st.st_mode):
        state["kind"] = "dir"
    elif stat.S_ISREG(st.st_mode):
        state["kind"] = "file"
        if want:
            try:
                state["sha256"] = sha256_file(path)
                if want not in ("hash", state["sha256"]) and st.st_size <= MAX_DIFF_BYTES:
                    with open(path, "rb") as f:
                        content = f.read()
                    state["content_size"] = len(content)
            except OSError:
                pass  # unreadable: no hash, as sha256sum in gather.sh gives none
    else:
        state["kind"] = "other"
    return state, content


def gather(probes):
    paths, contents = [], []
    for probe in probes:
        state, content = describe(probe.get("want"), probe["path"])
        paths.append(state)
        if content is not None:
            contents.append(content)
    return {"uid": os.getuid(), "paths": paths}, contents


# ---------------------------------------------------------------- frames
class Malformed(Exception):
    pass


HANDLERS = {"mkdir": make_dir, "remove": remove, "chmod": chmod, "link": link,
            "command": command, "program": program}
LONG_RUNNING = ("command", "program")


def read_exact(stream, size):
    data = stream.read(size)
    if len(data) != size:
        raise Malformed("input ended after %d of %d bytes" % (len(data), size))
    return data


def read_apply(header, stream):
    """The ops of an apply request, the contents of its writes and the
    sources of its programs, in op order: all of it is read before anything
    changes."""
    ops = header["ops"]
    blobs = []
    for op in ops:
        if op.get("op") == "write":
            blobs.append(read_exact(stream, op["size"]))
        elif op.get("op") == "program":
            op["source"] = read_exact(stream, op["source_size"]).decode("utf-8")
            blobs.append(None)
        elif op.get("op") in HANDLERS:
            blobs.append(None)
        else:
            raise Malformed("unknown op %r" % op.get("op"))
    return ops, blobs


def apply(ops, blobs):
    out = []
    dirty = set()
    replaced = []
    try:
        for op, blob in zip(ops, blobs):
            try:
                if op["op"] == "write":
                    result = write_atomic(op, blob)
                else:
                    result = HANDLERS[op["op"]](op)
                if result.get("dirty"):
                    dirty.add(result["dirty"])
                if result.get("replaced"):
                    replaced.append(result["replaced"])
            except (OSError, ValueError, KeyError, TypeError) as err:
                result = {"ok": False, "msg": "%s: %s" % (type(err).__name__, err)}
            for internal in ("dirty", "replaced"):
                result.pop(internal, None)
            out.append(result)
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
        out[-1] = {"ok": False, "msg": "the changes are made and backed up, but the record "
                   "`csdeploy rollback` needs could not be written (%s): free space and push "
                   "again with --backup" % unrecorded}
    return {"results": out}


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


def send(reply, contents=()):
    # Any text a host produced (paths, output) is valid UTF-8 on the wire.
    sys.stdout.buffer.write(json.dumps(reply, ensure_ascii=False).encode("utf-8", "replace") + b"\n")
    for content in contents:
        sys.stdout.buffer.write(content)
    sys.stdout.flush()


def serve(stream):
    watching = False
    while True:
        line = stream.readline()
        if not line:
            return
        try:
            try:
                header = json.loads(line)
                request = header["request"]
            except (ValueError, KeyError, TypeError) as err:
                raise Malformed("malformed frame: %s" % err)
            if request == "gather":
                send(*gather(header["probes"]))
            elif request == "apply":
                try:
                    ops, blobs = read_apply(header, stream)
                except (KeyError, TypeError) as err:
                    raise Malformed("malformed frame: %s" % err)
                if not watching and any(op["op"] in LONG_RUNNING for op in ops):
                    stop_when_the_caller_is_gone()
                    watching = True
                send(apply(ops, blobs))
            else:
                raise Malformed("unknown request %r" % request)
        except Malformed as err:
            send({"error": "%s" % err})
            sys.exit(2)


def main():
    for signum in (signal.SIGHUP, signal.SIGTERM, signal.SIGPIPE):
        signal.signal(signum, _interrupted)
    try:
        serve(sys.stdin.buffer)
    except Interrupted as stop:
        # A stop asked for, not a crash: one line, no traceback.
        sys.stderr.write("csdeploy-agent: %s: stopped where it was\n" % stop)
        sys.exit(128 + signal.SIGTERM)


if __name__ == "__main__":
    main()
