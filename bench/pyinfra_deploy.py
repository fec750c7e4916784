"""What `csdeploy push` does, as a pyinfra deploy, for bench/bench.py."""
import io
import os

from pyinfra import host
from pyinfra.operations import files

FILES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "playbooks", "files")
user_home = host.data.get("home")
home = user_home + "/.claude"

files.directory(path=home + "/bin", mode="755")
files.directory(path=home + "/sessions", mode="700")
files.directory(path=home + "/sessions/active", mode="700")
for name in ("session_registry.py", "claude-session", "claude-session-list", "cleanup-sessions.py"):
    files.put(src=os.path.join(FILES, name), dest=home + "/bin/" + name, mode="755")
conf = "host=%s\nclaude_home=%s\nmax_sessions=4\n" % (host.name, home)
files.put(src=io.StringIO(conf), dest=home + "/bin/session.conf", mode="644")
files.directory(path=user_home + "/.local/bin")
files.link(path=user_home + "/.local/bin/claude-session", target=home + "/bin/claude-session")
