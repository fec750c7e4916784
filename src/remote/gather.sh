# csdeploy's remote gather step, in POSIX sh with GNU coreutils: the state of
# every path a host's plan touches, for the price of three small processes.
# It is the one command every push runs (a push with nothing to change runs
# nothing else), and a Python interpreter's start alone costs more than all
# of this; gather.py is used instead when --diff needs old file contents.
#
# Arguments: one letter per path, `h` for a path whose content matters (hash
# it) and `s` for one whose state alone does; then the paths. A leading `~` is
# the home directory, and so is where a relative path starts.
# Output: `UID\0`, the expanded paths (`PATH\0` each, in order), then
# `stat` records `PATH\0TYPE\0MODE\0UID\0NAME\0` for the paths that exist and
# for `/` (a sentinel: without its record, stat is not GNU stat and the
# controller falls back to gather.py); NAME is `PATH -> TARGET` for a symlink
# (%N with literal quoting: no escapes, no extra process; a stat that ignores
# QUOTING_STYLE, older than coreutils 8.26, quotes it, and the controller
# falls back to gather.py), an empty field, then `PATH\0` for each symlink
# that leads to a directory (a test builtin, no process), an empty field,
# then `sha256sum` lines for the regular files among the `h` paths (a FIFO
# would block it, a symlink is not followed, and a big file that only has to
# exist is not read).
# Without HOME, `~` is the home directory from the password database, as
# Python's expanduser (the apply step's) has it.
[ -n "${HOME:-}" ] || HOME=$(getent passwd "$(id -u)" | cut -d: -f6)
wants=$1
shift
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
exit 0
