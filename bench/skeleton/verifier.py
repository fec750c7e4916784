"""The processes one `csdeploy verify` starts on a host, each doing nothing.

bench.py runs this on every simulated host (plain ssh, like the floor) to
measure what the design of the session tools costs before any real work: the
verifier's interpreter, per session a bash launcher with its python3
registry helper and a sh client (`csdeploy verify` starts 2 sessions), and a
fork for the cleaner. What `verify` costs beyond this is the work itself.

    python3 -I -S verifier.py [LAUNCHER]    (a file beside this one; default: launcher)
"""
import os
import sys

here = os.path.dirname(os.path.abspath(sys.argv[0]))
launcher = os.path.join(here, sys.argv[1] if len(sys.argv) > 1 else "launcher")
env = dict(os.environ, CLAUDE_BIN=os.path.join(here, "client"))
pids = [os.posix_spawn(launcher, [launcher], env) for _ in range(2)]
codes = [os.waitpid(pid, 0)[1] for pid in pids]
cleaner = os.fork()
if cleaner == 0:
    os._exit(0)
os.waitpid(cleaner, 0)
sys.exit(1 if any(codes) else 0)
