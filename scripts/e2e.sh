#!/usr/bin/env bash
# Runs etcd 3.4.23's own etcdctl-driven e2e suite (shared/tools/etcd-e2e.sh) against this project's server.
#
# usage: bash scripts/e2e.sh [GROUP...]        (default groups: kv watch lease maintenance auth)
#   GROUP  kv | watch | lease | maintenance | cluster | auth | gateway | lock | all, or a Go test regex
#          such as '^TestCtlV3Put$' (passed through to etcd-e2e.sh).
# Prints each test's PASS/FAIL, a per-group summary, and a final "N passed, N failed" line;
# exits non-zero if any group has a failing test (or no passing test).
#
# Environment:
#   E2E_SERVER          server executable to test (default: scripts/etcd; /usr/bin/etcd runs the real etcd)
#   SHARED_DIR          folder holding tools/etcd-e2e.sh (default: ../shared next to the repository)
#   E2E_SKIP            extended regex (grep -E) of test names to leave out of every group,
#                       e.g. E2E_SKIP='^TestCtlV3Snapshot' (snapshot tests need etcd's bbolt file format)
#   E2E_SKIP_<GROUP>    the same for one group only, GROUP upper-cased, e.g. E2E_SKIP_MAINTENANCE='Snapshot'
#                       (used instead of E2E_SKIP for that group; set it to "-" to skip nothing there)
#   E2E_LOG_DIR         if set, each group's full go test -v log is saved there as <group>.log
#   ETCD_E2E_CACHE      where etcd-e2e.sh caches the compiled suite (default /var/tmp/etcd-e2e)
# Skipping works by listing the group's tests from the compiled suite (-test.list) and passing the rest
# to etcd-e2e.sh as an explicit '^(TestA|TestB)$' regex.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
if [[ -n ${SHARED_DIR:-} ]]; then
  tool=$SHARED_DIR/tools/etcd-e2e.sh
else
  tool=$(dirname "$0")/../../shared/tools/etcd-e2e.sh
fi
if [[ ! -f $tool ]]; then
  echo "e2e.sh: cannot find etcd-e2e.sh at '$tool'." >&2
  echo "e2e.sh: set SHARED_DIR to the folder that holds tools/etcd-e2e.sh (normally a 'shared' sibling of the repo)." >&2
  exit 2
fi
tool=$(cd "$(dirname "$tool")" && pwd)/$(basename "$tool")
server=${E2E_SERVER:-$repo/scripts/etcd}
if [[ ! -x $server ]]; then
  echo "e2e.sh: server '$server' is not an executable file" >&2
  exit 2
fi
cache=${ETCD_E2E_CACHE:-/var/tmp/etcd-e2e}

groups=("$@")
if [[ ${#groups[@]} == 0 ]]; then groups=(kv watch lease maintenance auth); fi

# The Go test regex etcd-e2e.sh uses for a group (read from its case table), or the argument itself.
group_regex() {
  local re
  re=$(sed -n "s/^ *$1) *re='\\(.*\\)' *;;.*\$/\\1/p" "$tool" | head -n1)
  echo "${re:-$1}"
}

# Regex naming the group's tests minus the skipped ones; empty output if every test is skipped.
filtered_regex() {
  local group=$1 skip=$2 re names
  if [[ ! -x $cache/e2e.test ]]; then
    # Let etcd-e2e.sh install its dependencies and compile the suite, running no test.
    bash "$tool" "$server" '^E2eShNoSuchTest$' >/dev/null 2>&1 || true
  fi
  if [[ ! -x $cache/e2e.test ]]; then
    echo "e2e.sh: $cache/e2e.test was not built; cannot list tests to skip" >&2
    return 1
  fi
  re=$(group_regex "$group")
  names=$("$cache/e2e.test" -test.list "$re" | grep -E '^Test' | grep -Ev -- "$skip" | paste -sd'|' || true)
  if [[ -n $names ]]; then echo "^($names)\$"; fi
}

summaries=()
total_pass=0
total_fail=0
status=0
for group in "${groups[@]}"; do
  var=E2E_SKIP_$(echo "$group" | tr '[:lower:]' '[:upper:]' | tr -c 'A-Z0-9_\n' '_')
  skip=${!var:-${E2E_SKIP:-}}
  [[ $skip == - ]] && skip=
  arg=$group
  if [[ -n $skip ]]; then
    arg=$(filtered_regex "$group" "$skip") || {
      summaries+=("$group: ERROR (could not list tests)")
      status=1
      continue
    }
    if [[ -z $arg ]]; then
      echo "=== e2e group $group: every test matches skip regex '$skip'"
      summaries+=("$group: 0 passed, 0 failed (all skipped by '$skip')")
      continue
    fi
  fi
  echo "=== e2e group $group (server: $server${skip:+, skipping /$skip/})"
  log_env=()
  if [[ -n ${E2E_LOG_DIR:-} ]]; then
    mkdir -p "$E2E_LOG_DIR"
    log_env=(E2E_LOG="$E2E_LOG_DIR/$(echo "$group" | tr -c 'A-Za-z0-9_.\n-' '_').log")
  fi
  out=$(mktemp)
  rc=0
  env "${log_env[@]}" bash "$tool" "$server" "$arg" 2>&1 | tee "$out" || rc=$?
  line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$out" | tail -n1 || true)
  rm -f "$out"
  if [[ -z $line ]]; then
    summaries+=("$group: ERROR (etcd-e2e.sh exited $rc without a summary)")
    status=1
    continue
  fi
  pass=${line%% passed*}
  fail=${line#*, }
  fail=${fail%% failed}
  total_pass=$((total_pass + pass))
  total_fail=$((total_fail + fail))
  if [[ $rc != 0 ]]; then
    status=1
    summaries+=("$group: $line  FAILED")
  else
    summaries+=("$group: $line")
  fi
done

echo "=== e2e summary"
for s in "${summaries[@]}"; do echo "  $s"; done
echo "$total_pass passed, $total_fail failed"
exit $status
