# csdeploy's one remote command on a host (the protocol: src/protocol.rs).
#
# Arguments: PYTHON FALLBACK MARKER WANTS PATH... PYTHON is the configured
# interpreter (empty: discover one); FALLBACK a POSIX sh script that answers
# in the agent's place where no python3 can run (empty: none).
#
# With a MARKER, it first gathers, in POSIX sh with GNU coreutils: the state
# of every path a host's plan touches, for the price of three small
# processes. A push with nothing to change runs nothing else, and a Python
# interpreter's start alone costs more than all of this.
#
# WANTS has one letter per path, `h` for a path whose content matters (hash
# it) and `s` for one whose state alone does. A leading `~` is the home
# directory, and so is where a relative path starts.
# Output: `UID\0`, the expanded paths (`PATH\0` each, in order), then
# `stat` records `PATH\0TYPE\0MODE\0UID\0NAME\0` for the paths that exist and
# for `/` (a sentinel: without its record, stat is not GNU stat and the
# controller has the agent gather); NAME is `PATH -> TARGET` for a symlink
# (%N with literal quoting: no escapes, no extra process; a stat that ignores
# QUOTING_STYLE, older than coreutils 8.26, quotes it, and the agent gathers
# instead), an empty field, then `PATH\0` for each symlink that leads to a
# directory (a test builtin, no process), an empty field, then `sha256sum`
# lines for the regular files among the `h` paths (a FIFO would block it, a
# symlink is not followed, and a big file that only has to exist is not
# read), then `\0MARKER\n`.
# Without HOME, `~` is the home directory from the password database, as
# Python's expanduser (the agent's) has it.
#
# Then it reads one line (`read` takes no byte past it): `agent` starts the
# agent, anything else (EOF) ends the command.
python=$1 fallback=$2 marker=$3 wants=$4
shift 4
if [ -n "$marker" ]; then
  [ -n "${HOME:-}" ] || HOME=$(getent passwd "$(id -u)" | cut -d: -f6)
  for p do
    # A literal `~` from the playbook, expanded here on purpose.
    # shellcheck disable=SC2088
    case $p in
      "~") p=$HOME ;;
      "~/"*) p=$HOME/${p#"~/"} ;;
      /*) ;;
      *) p=$HOME/$p ;;  # relative: from the home directory, as over ssh
    esac
    set -- "$@" "$p"
    shift
  done
  printf '%s\0' "$(id -u)" "$@"
  QUOTING_STYLE=literal stat --printf '%n\0%F\0%a\0%u\0%N\0' -- "$@" / 2>/dev/null
  printf '\0'
  for p do
    shift
    case $wants in
      h*) if [ -f "$p" ] && [ ! -L "$p" ]; then set -- "$@" "$p"; fi ;;
    esac
    wants=${wants#?}
    if [ -L "$p" ] && [ -d "$p" ]; then printf '%s\0' "$p"; fi
  done
  printf '\0'
  [ $# -eq 0 ] || sha256sum -- "$@" 2>/dev/null
  printf '\0%s\n' "$marker"
fi
IFS= read -r next || exit 0
[ "$next" = agent ] || exit 0
# Interpreter discovery, as Ansible does it: the platform python first (a
# PATH lookup can land on a slow shim such as pyenv's, ~100 ms a start), then
# whatever `python3` PATH has. The agent reads its source from stdin.
if [ -n "$python" ]; then
  set -- "$python"
else
  set -- /usr/bin/python3 /usr/local/bin/python3 python3
fi
for p do
  if command -v "$p" >/dev/null 2>&1; then
    exec "$p" -I -S -c "'csdeploy-agent'; import sys, json; i = sys.stdin.buffer; exec(compile(i.read(json.loads(i.readline())['agent']), 'csdeploy-agent', 'exec'))"
  fi
done
if [ -n "$fallback" ]; then
  cat >/dev/null 2>&1
  CSDEPLOY_PYTHONS="$*" exec /bin/sh -c "$fallback" csdeploy-fallback
fi
echo "csdeploy: no python3 on this host (tried: $*; set ansible_python_interpreter)" >&2
exit 127
