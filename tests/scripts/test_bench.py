"""The speed benchmark (bench/bench.py) runs and prints its table, and its
skeleton starts exactly the processes it stands for.

Only that it works is checked here, at one host and one run of each command
with the debug build: its numbers are for bench runs on a quiet machine, not
for a test (see the README's Speed section).
"""
import os
import shutil
import stat
import subprocess
import sys

from conftest import REPO, csdeploy_binary, python_shim, python_starts

BENCH = os.path.join(REPO, "bench", "bench.py")
SKELETON = os.path.join(REPO, "bench", "skeleton")
COMMANDS = ["floor", "push-first", "push-rerun", "verify", "skeleton", "skeleton-no-helper"]


def test_bench_prints_every_command_with_its_ratio_to_the_floor():
    proc = subprocess.run([sys.executable, BENCH, "--hosts", "1", "--runs", "1", "--csdeploy", csdeploy_binary()],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=600)
    # 1 is "a target missed", which a debug build on a loaded machine may.
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert "| hosts | %s |" % " | ".join(COMMANDS) in lines, proc.stdout + proc.stderr
    row = [line for line in lines if line.startswith("| 1 |")]
    assert len(row) == 1, proc.stdout
    cells = [cell.strip() for cell in row[0].strip("|").split("|")][1:]
    assert len(cells) == len(COMMANDS)
    assert cells[0].endswith(" s") and all(cell.endswith("×)") for cell in cells[1:]), row
    assert any(line.startswith("target push first <= floor + 60 ms") for line in lines), proc.stdout


def run_skeleton(skeleton, tmp_path, *args):
    """Runs skeleton/verifier.py; returns it and the python3 starts it caused."""
    path, records = python_shim(str(tmp_path))
    env = dict(os.environ, HOME=str(tmp_path), PATH=path)
    proc = subprocess.run([sys.executable, "-I", "-S", os.path.join(skeleton, "verifier.py")] + list(args), env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=60)
    return proc, python_starts(records)


def test_skeleton_runs_two_sessions_each_with_its_python_helper(tmp_path):
    proc, starts = run_skeleton(SKELETON, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert len(starts) == 2 and all("sys.stdin.readline()" in s for s in starts), \
        "one registry helper per session, 2 sessions: %s" % starts


def test_skeleton_fails_when_a_session_fails(tmp_path):
    broken = str(tmp_path / "skeleton")
    shutil.copytree(SKELETON, broken)
    client = os.path.join(broken, "client")
    with open(client, "w") as f:
        f.write("#!/bin/sh\nexit 3\n")
    os.chmod(client, stat.S_IRWXU)
    proc, _starts = run_skeleton(broken, tmp_path)
    assert proc.returncode == 1, proc.stderr


def test_skeleton_without_helper_starts_no_python(tmp_path):
    proc, starts = run_skeleton(SKELETON, tmp_path, "launcher-without-helper")
    assert proc.returncode == 0, proc.stderr
    assert starts == [], "no registry helper was to start"
