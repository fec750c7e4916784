"""What `csdeploy push` does, as a pyinfra deploy, for bench/bench.py."""
import os

from pyinfra import host
from pyinfra.operations import files

FILES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "playbooks", "files")
home = host.data.get("home") + "/.claude"

files.directory(path=home + "/bin", mode="755")
files.directory(path=home + "/sessions", mode="700")
files.directory(path=home + "/sessions/active", mode="700")
for name in ("session_registry.py", "claude-session", "claude-session-list", "cleanup-sessions.py"):
    files.put(src=os.path.join(FILES, name), dest=home + "/bin/" + name, mode="755")
