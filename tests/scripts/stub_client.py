#!/usr/bin/env python3
"""Stand-in for the `claude` binary, driven by environment variables.

Like Claude Code it writes into ${CLAUDE_CONFIG_DIR:-$HOME/.claude}:

  history.jsonl  one JSON line {"config_dir", "session_dir_var", "store", "cwd",
                 "exe", "args", "pid"} (store: CLAUDE_SECURESTORAGE_CONFIG_DIR,
                 exe: this file)
                 (skipped with STUB_NO_HISTORY=1)
  client.pid     its own pid, written after the history line: "it runs"

Then, in order:
  STUB_WAIT=PATH       wait until PATH exists
  STUB_SLEEP=SECONDS   sleep
  STUB_LATE_HISTORY=1  append a second history line; exit 99 if that fails,
                       i.e. if someone deleted the directory while it ran
  STUB_STDOUT=TEXT     print TEXT on stdout
  STUB_EXIT=N          exit with N (default 0)
With STUB_TRAP=1, INT/TERM/HUP write the signal name to <dir>/signal and exit
40+signum; without it they keep their default action.
"""
import json
import os
import signal
import sys
import time

config_dir = os.environ.get("CLAUDE_CONFIG_DIR") or os.path.join(os.environ["HOME"], ".claude")


def record():
    line = {"config_dir": os.environ.get("CLAUDE_CONFIG_DIR"),
            "session_dir_var": os.environ.get("CLAUDE_SESSION_DIR"),
            "store": os.environ.get("CLAUDE_SECURESTORAGE_CONFIG_DIR"), "cwd": os.getcwd(),
            "exe": os.path.abspath(__file__),
            "args": sys.argv[1:], "pid": os.getpid()}
    with open(os.path.join(config_dir, "history.jsonl"), "a") as f:
        f.write(json.dumps(line) + "\n")


def on_signal(signum, _frame):
    with open(os.path.join(config_dir, "signal"), "w") as f:
        f.write(signal.Signals(signum).name)
    os._exit(40 + signum)


if os.environ.get("STUB_TRAP") == "1":
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

if os.environ.get("STUB_NO_HISTORY") != "1":
    record()
with open(os.path.join(config_dir, "client.pid"), "w") as f:
    f.write(str(os.getpid()))

wait_for = os.environ.get("STUB_WAIT")
if wait_for:
    deadline = time.monotonic() + 60
    while not os.path.exists(wait_for) and time.monotonic() < deadline:
        time.sleep(0.02)
if os.environ.get("STUB_SLEEP"):
    time.sleep(float(os.environ["STUB_SLEEP"]))
if os.environ.get("STUB_LATE_HISTORY") == "1":
    try:
        record()
    except OSError as e:
        sys.stderr.write("stub: late history write failed: %s\n" % e)
        sys.exit(99)
if os.environ.get("STUB_STDOUT"):
    sys.stdout.write(os.environ["STUB_STDOUT"])
sys.exit(int(os.environ.get("STUB_EXIT", "0")))
