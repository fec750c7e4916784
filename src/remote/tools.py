"""csdeploy's day-two step on a host: `sessions`, `cleanup` and `remove`.

The agent (agent.py) runs this source inside its one remote command and calls
run(args); args["action"] says which:

  sessions  runs the deployed `claude-session-list --json [--active]` and
            returns its objects unchanged: {"sessions": [...]}.
  cleanup   runs the deployed `cleanup-sessions.py --json [--dry-run]
            [--days N] [--session ID]...` and returns its document with the
            cleaner's exit code and complaints: {"removed", "kept", "dry_run",
            "credentials_rescued", "cleaner_exit_code", "cleaner_stderr"}. The
            cleaner's rules are its own: this only reports what it decided.
  remove    removes what `push` installed: the files named in args["files"]
            (regular files only), the link args["link"]["path"] only while it
            points at args["link"]["target"], the bin directory once empty;
            sessions/ only with args["purge"] and no live session. With
            args["check"] it changes nothing and reports what would go.
  rollback  restores every file the last `push --backup` replaced (its
            manifest, written by agent.py) from its backup, each atomically,
            and removes the files that push created. It refuses, changing
            nothing, when a file changed since that push or a backup is gone
            or altered, unless args["force"] (a missing backup still
            refuses). args["check"]: change nothing; args["diff"]: return
            each file's current and restored text for a diff.

run() returns {"ok", "msg", "data", "rc"}; a host where the tooling is not
deployed fails with how to deploy it. src/builtin.rs joins common.py (the
shared helpers) ahead of this file. Python 3.8+ standard library only.
"""
import json
import os
import subprocess
import sys


def not_deployed(args, missing):
    return {"ok": False, "msg": "not deployed: %s is missing: run `csdeploy push --host %s`"
            % (missing, args["host"])}


def run_tool(argv):
    """The deployed tool, with this interpreter, in the home directory."""
    env = dict(os.environ)
    env.pop("CLAUDE_CONFIG_DIR", None)
    return subprocess.run([sys.executable] + argv, stdin=subprocess.DEVNULL, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=expand("~"))


def tool_failed(name, proc):
    stderr = proc.stderr.decode("utf-8", "replace").strip()
    return "%s exited with %d%s" % (name, proc.returncode, ": " + stderr if stderr else "")


def sessions(args):
    tool = os.path.join(expand(args["claude_home"]), "bin", "claude-session-list")
    if not os.path.isfile(tool):
        return not_deployed(args, tool)
    proc = run_tool([tool, "--json"] + (["--active"] if args.get("active") else []))
    if proc.returncode != 0:
        return {"ok": False, "rc": proc.returncode, "msg": tool_failed("claude-session-list", proc)}
    try:
        rows = json.loads(proc.stdout.decode("utf-8"))
    except ValueError as err:
        return {"ok": False, "msg": "claude-session-list --json printed no JSON: %s" % err}
    return {"ok": True, "data": {"sessions": rows}}


def cleanup(args):
    tool = os.path.join(expand(args["claude_home"]), "bin", "cleanup-sessions.py")
    if not os.path.isfile(tool):
        return not_deployed(args, tool)
    argv = [tool, "--json"]
    if args.get("dry_run"):
        argv.append("--dry-run")
    if args.get("days") is not None:
        argv += ["--days", str(args["days"])]
    for sid in args.get("sessions") or ():
        argv += ["--session", sid]
    proc = run_tool(argv)
    try:
        data = json.loads(proc.stdout.decode("utf-8"))
    except ValueError:
        # Exit 2, 3 and 64 print no document: nothing was deleted.
        data = {"removed": [], "kept": [], "dry_run": bool(args.get("dry_run")),
                "credentials_rescued": []}
    data["cleaner_exit_code"] = proc.returncode
    stderr = proc.stderr.decode("utf-8", "replace").strip()
    data["cleaner_stderr"] = stderr or None
    ok = proc.returncode == 0
    return {"ok": ok, "rc": proc.returncode, "data": data,
            "msg": None if ok else tool_failed("cleanup-sessions.py", proc)}


def live_sessions(claude_home):
    """Ids of the sessions the deployed list tool says are active; None if it cannot tell."""
    tool = os.path.join(claude_home, "bin", "claude-session-list")
    if not os.path.isfile(tool):
        return None
    proc = run_tool([tool, "--json", "--active"])
    if proc.returncode != 0:
        return None
    try:
        return [row["id"] for row in json.loads(proc.stdout.decode("utf-8"))]
    except (ValueError, KeyError, TypeError):
        return None


def remove(args):
    import shutil

    check = bool(args.get("check"))
    claude_home = expand(args["claude_home"])
    bindir = os.path.join(claude_home, "bin")
    removed, kept = [], []

    def gone(path, kind):
        removed.append({"path": path, "kind": kind})

    sessions_dir = os.path.join(claude_home, "sessions")
    if args.get("purge") and os.path.isdir(sessions_dir):
        live = live_sessions(claude_home)
        if live is None:
            return {"ok": False, "msg": "--purge: cannot tell which sessions in %s are live (the "
                    "deployed claude-session-list is missing or failed); nothing was removed"
                    % sessions_dir}
        if live:
            return {"ok": False, "msg": "--purge: %d session(s) are live (%s): end them first; "
                    "nothing was removed" % (len(live), ", ".join(live))}

    link = args.get("link")
    if link:
        path = expand(link["path"])
        target = expand(link["target"])
        if os.path.islink(path):
            if os.readlink(path) in (link["target"], target):
                if not check:
                    os.unlink(path)
                gone(path, "link")
            else:
                kept.append({"path": path, "reason": "link-not-ours"})
        elif os.path.lexists(path):
            kept.append({"path": path, "reason": "not-a-link"})

    for name in args["files"]:
        path = expand(name)
        if os.path.islink(path) or (os.path.lexists(path) and not os.path.isfile(path)):
            kept.append({"path": path, "reason": "not-a-regular-file"})
        elif os.path.isfile(path):
            if not check:
                os.unlink(path)
            gone(path, "file")

    if os.path.isdir(bindir) and not os.path.islink(bindir):
        mine = {r["path"] for r in removed}
        left = sorted(n for n in os.listdir(bindir) if os.path.join(bindir, n) not in mine)
        if left:
            kept.append({"path": bindir, "reason": "not-empty: " + ", ".join(left)})
        else:
            if not check:
                os.rmdir(bindir)
            gone(bindir, "directory")

    purged = False
    if os.path.isdir(sessions_dir) and not os.path.islink(sessions_dir):
        if args.get("purge"):
            if not check:
                shutil.rmtree(sessions_dir)
            gone(sessions_dir, "sessions")
            purged = True
        else:
            kept.append({"path": sessions_dir, "reason": "sessions stay without --purge"})
    return {"ok": True, "data": {"removed": removed, "kept": kept, "check": check,
                                 "purged": purged}}


def sha256_or_none(path):
    """sha256_of(path), None where it cannot be read: a rollback then refuses."""
    try:
        return sha256_of(path)
    except OSError:
        return None


def rollback(args):
    state = os.environ.get("XDG_STATE_HOME") or expand("~/.local/state")
    manifest = os.path.join(state, "csdeploy", "last-push.json")
    try:
        with open(manifest) as f:
            files = json.load(f)["files"]
    except FileNotFoundError:
        return {"ok": False, "msg": "nothing to roll back: no `csdeploy push --backup` is recorded "
                "on this host (%s), or it was rolled back already" % manifest}
    except (OSError, ValueError, KeyError, TypeError) as err:
        return {"ok": False, "msg": "cannot read %s: %s" % (manifest, err)}
    force, check = bool(args.get("force")), bool(args.get("check"))
    plan, problems = [], []
    for f in files:
        path, backup = f["path"], f["backup"]
        now = sha256_or_none(path) if os.path.lexists(path) else None
        if now != f["sha256_after"]:
            problems.append((path, "changed since the push" if now else "gone since the push",
                             True))
        if backup is not None and sha256_or_none(backup) != f["sha256_before"]:
            problems.append((path, "its backup %s is missing or altered" % backup,
                             os.path.isfile(backup)))
        plan.append({"path": path, "action": "remove" if backup is None else "restore",
                     "backup": backup})
    # A file changed since the push is restored only with --force; a backup
    # that is not there cannot be restored at all.
    blocking = [(p, why) for p, why, forcible in problems if not (force and forcible)]
    refused = [{"path": p, "reason": why} for p, why, _ in problems]
    if blocking:
        return {"ok": False, "data": {"restored": [], "refused": refused, "check": check,
                                      "manifest": manifest},
                "msg": "rollback refused, nothing changed: %s%s" % (
                    "; ".join("%s: %s" % pw for pw in blocking),
                    "" if force else " (--force restores anyway)")}
    if args.get("diff"):
        for item in plan:
            item["current"] = read_raw(item["path"])
            item["previous"] = "" if item["backup"] is None else read_raw(item["backup"])
    if not check:
        for item, f in zip(plan, files):
            path = item["path"]
            if item["backup"] is None:
                if os.path.lexists(path):
                    os.unlink(path)
                continue
            directory = os.path.dirname(path)
            # Named as agent.py names its temp files, which a later push
            # sweeps once their writer is gone.
            tmp = os.path.join(directory, ".csdeploy-tmp-%d-%s"
                               % (os.getpid(), os.urandom(6).hex()))
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with open(item["backup"], "rb") as src, open(fd, "wb") as dst:
                    dst.write(src.read())
                    dst.flush()
                    os.fchmod(dst.fileno(), f["mode_before"])
                    os.fsync(dst.fileno())
                os.rename(tmp, path)
            except BaseException:
                if os.path.lexists(tmp):
                    os.unlink(tmp)
                raise
        # Rolled back once: a second rollback finds nothing to do.
        os.replace(manifest, manifest[:-len(".json")] + ".rolled-back.json")
    return {"ok": True, "data": {"restored": plan, "refused": refused, "check": check,
                                 "manifest": manifest}}


def run(args):
    actions = {"sessions": sessions, "cleanup": cleanup, "remove": remove, "rollback": rollback}
    return actions[args["action"]](args)
