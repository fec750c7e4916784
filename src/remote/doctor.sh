# shellcheck shell=sh
# csdeploy doctor's answer where no python3 can run (POSIX sh).
#
# gather.sh runs this when neither the configured interpreter nor a
# discovered python3 exists, with CSDEPLOY_PYTHONS naming what it tried. It
# answers as the agent would the doctor's apply request (src/protocol.rs):
# `{"results": [{"ok": true, "checks": [...]}]}`, the checks being the items a
# shell can judge: python3 (a fail), bash, GNU coreutils and flock.

json_string() {
  # A JSON string of $1, backslashes and quotes escaped, in the shell alone:
  # on a host this broken, tr and sed may be missing too.
  rest=$1 out=
  while [ -n "$rest" ]; do
    tail=${rest#?}
    c=${rest%"$tail"}
    rest=$tail
    case $c in
      \" | \\) out="$out\\$c" ;;
      *) out="$out$c" ;;
    esac
  done
  printf '"%s"' "$out"
}

item() {
  # id status expected actual [detail]
  detail=null
  [ -z "${5-}" ] || detail=$(json_string "$5")
  printf '{"id": %s, "status": %s, "expected": %s, "actual": %s, "detail": %s, "duration_ms": 0}' \
    "$(json_string "$1")" "$(json_string "$2")" "$(json_string "$3")" \
    "$(json_string "$4")" "$detail"
}

python=$(item python3 fail ">= 3.8" "not found (tried: ${CSDEPLOY_PYTHONS:-python3})" \
  "no python3: install Python 3.8 or newer (apt install python3), or point ansible_python_interpreter at one; the session tools and csdeploy's agent need it")

if bash_path=$(command -v bash 2>/dev/null); then
  bash=$(item bash pass "bash on PATH" "$bash_path")
else
  bash=$(item bash fail "bash on PATH" "not found" "the launcher is a bash script: install bash")
fi

missing=
for tool in stat sha256sum; do
  case $("$tool" --version 2>/dev/null) in
    *"GNU coreutils"*) ;;
    *) missing="$missing $tool" ;;
  esac
done
if [ -z "$missing" ]; then
  coreutils=$(item coreutils pass "GNU stat and sha256sum" "GNU stat, sha256sum")
else
  coreutils=$(item coreutils warn "GNU stat and sha256sum" "not GNU:$missing" \
    "csdeploy then inspects the host with Python, which is slower: install GNU coreutils")
fi

if flock_path=$(command -v flock 2>/dev/null); then
  flock=$(item flock pass "flock on PATH" "$flock_path")
else
  flock=$(item flock warn "flock on PATH" "not found" \
    "scripts that serialise on the session lock need it: install util-linux")
fi

printf '{"results": [{"ok": true, "checks": [%s, %s, %s, %s]}]}\n' "$python" "$bash" "$coreutils" "$flock"
