"""The stand-in client (`probe`): its POSIX sh source, the per-session values
it reads, and what it reported.

One part of csdeploy's verifier (see main.py): src/builtin.rs joins
src/remote/common.py and the files of src/remote/verify/ into one source,
main.py first of these, so the names of every part are one namespace.
"""
import os
import time


# The stand-in client, in POSIX sh and builtins only but one mkdir (every fork
# counts on a loaded host). It mirrors Claude Code 2.1.332 in everything the
# checks judge:
# - its config dir is $CLAUDE_CONFIG_DIR, else ~/.claude (set but empty: the
#   working directory); .claude.json goes into it (else ~/.claude.json) and
#   is created when missing;
# - history, transcripts (projects/<cwd with / as ->/<session uuid>.jsonl)
#   go where `env.CLAUDE_CONFIG_DIR` of the settings.json it sees points, as
#   the real client applies that variable at start (one line per key read);
# - its credential store is $CLAUDE_SECURESTORAGE_CONFIG_DIR (empty:
#   ~/.claude), else the config dir;
# - it shows onboarding (no history, no transcript) when its .claude.json
#   lacks hasCompletedOnboarding, or the login screen when its store has no
#   .credentials.json; the verifier tells it whether the user's own `claude`
#   would pass those screens (expect_onboarded, expect_login), since a user
#   who never ran claude sees them in plain `claude` too;
# - `--continue` continues the newest transcript of its projects/<cwd>.
# It gets the work dir and its token as arguments, the rest from files there
# (a launcher that empties the environment must not blind it); it reports
# what it saw, announces itself and waits for the release (first round only).
PROBE = r"""#!/bin/sh
work=$1 token=$2 cont=
[ "${3-}" = --continue ] && cont=1
. "$work/probe.env"
. "$work/$token.args"
home=${HOME:-$user_home}
if [ "${CLAUDE_CONFIG_DIR+set}" ]; then
  if [ -n "$CLAUDE_CONFIG_DIR" ]; then config=$CLAUDE_CONFIG_DIR state=$CLAUDE_CONFIG_DIR/.claude.json
  else config=$PWD state=$home/.claude.json; fi
else config=$home/.claude state=$home/.claude.json; fi
if [ "${CLAUDE_SECURESTORAGE_CONFIG_DIR+set}" ]; then store=${CLAUDE_SECURESTORAGE_CONFIG_DIR:-$home/.claude}
else store=$config; fi
data=$config
if [ -f "$config/settings.json" ]; then
  while IFS= read -r line || [ -n "$line" ]; do
    case $line in *'"CLAUDE_CONFIG_DIR"'*)
      v=${line#*'"CLAUDE_CONFIG_DIR"'}; v=${v#*\"}; v=${v%%\"*}; [ -n "$v" ] && data=$v ;;
    esac
  done < "$config/settings.json"
fi
dir=$data/projects/$mangled
[ -d "$dir" ] && [ -d "$config" ] || mkdir -p "$config" "$dir"
[ -e "$state" ] || { umask 077; printf '{"numStartups":1}\n' > "$state"; }
onboarded=
while IFS= read -r line || [ -n "$line" ]; do
  case $line in *'"hasCompletedOnboarding":true'*|*'"hasCompletedOnboarding": true'*) onboarded=1; break ;; esac
done < "$state"
screen=prompt
if [ -z "$onboarded" ] && [ -n "$expect_onboarded" ]; then screen=onboarding
elif [ ! -e "$store/.credentials.json" ] && [ -n "$expect_login" ]; then screen=login; fi
if [ $screen = prompt ]; then
  if [ -n "$cont" ]; then
    best=
    for f in "$dir"/*.jsonl; do
      [ -e "$f" ] || continue
      if [ -z "$best" ] || [ "$f" -nt "$best" ]; then best=$f; fi
    done
    [ -n "$best" ] && { sid=${best##*/}; sid=${sid%.jsonl}; }
  fi
  printf '{"type":"user","message":{"role":"user","content":"csdeploy verify %s"},"sessionId":"%s"}\n' \
    "$token" "$sid" >> "$dir/$sid.jsonl"
  printf '{"display":"csdeploy verify %s","pastedContents":{},"timestamp":%s,"project":%s,"sessionId":"%s"}\n' \
    "$token" "$ms" "$project" "$sid" >> "$data/history.jsonl"
fi
[ "${CLAUDE_CONFIG_DIR+set}" ] && printf %s "$CLAUDE_CONFIG_DIR" > "$work/$token.config"
[ "${CLAUDE_SESSION_DIR+set}" ] && printf %s "$CLAUDE_SESSION_DIR" > "$work/$token.legacy"
[ "${CLAUDE_SECURESTORAGE_CONFIG_DIR+set}" ] && printf %s "$CLAUDE_SECURESTORAGE_CONFIG_DIR" > "$work/$token.store"
printf '%s\n%s\n%s\n' "$screen" "$sid" "$data" > "$work/$token.seen"
all=0
if [ -z "$cont" ]; then
  printf '%s\n' "$token" 1<> "$work/started"
  kill -0 "$verifier_pid" 2>/dev/null && read -r x < "$work/release"
  [ -e "$work/all-started" ] && all=1
fi
printf %s "$all" > "$work/$token.done"
exit 0
"""


def read_report(work, token):
    """What the probe of session `token` reported, or None if it never got to the end."""
    base = os.path.join(work, token)
    done = read_text(base + ".done")
    if done is None:
        return None
    seen = (read_raw(base + ".seen") or "").split("\n")
    seen += [""] * 3
    return {"token": token, "all_started": done == "1",
            "config_dir": read_text(base + ".config"), "session_dir": read_text(base + ".legacy"),
            "store": read_raw(base + ".store"), "screen": seen[0] or None, "session_id": seen[1] or None,
            "data_dir": seen[2] or None}


def new_uuid():
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    h = bytes(b).hex()
    return "%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])


def mangle(path):
    """Claude Code's projects/ name for a working directory."""
    return "".join(c if c.isalnum() else "-" for c in path)


def sh_quote(value):
    return "'%s'" % value.replace("'", "'\\''")


def write_probe_args(s, work, project, run_sids=()):
    """The probe's per-session values (see PROBE), and the history lines it
    may append with them: exactly these, for undo_probe_lines. A resumed
    probe continues whichever conversation of the run it finds (a broken
    launcher may show it another session's)."""
    ms = str(int(time.time() * 1000))
    with open(os.path.join(work, s.token + ".args"), "w") as f:
        f.write("ms=%s sid=%s\n" % (ms, s.sid))
    sids = [s.sid] + [x for x in run_sids if x != s.sid]
    s.history_lines = tuple(('{"display":"csdeploy verify %s","pastedContents":{},"timestamp":%s,"project":%s,'
                             '"sessionId":"%s"}\n' % (s.token, ms, project, sid)).encode() for sid in sids)
