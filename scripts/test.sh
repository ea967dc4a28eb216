#!/usr/bin/env bash
# The test runner behind `deno task test` and `deno task test:quick` (and so behind .ci/run).
#
# usage: bash scripts/test.sh [--quick | --deps-only] [deno test flags] [test files or folders]
#   (default)    makes sure the Debian packages of scripts/test_deps.txt are present: the missing ones are installed
#                with apt-get (as root, or through password-less `sudo -n`), each printed with the tests that need it;
#                then runs `deno test -A --no-check=remote tests/`
#   --quick      runs the files of scripts/test_quick.txt, checking and installing nothing, with --parallel (one file
#                per core at a time); deno test may then run no executable but deno. RAFT_SIM_SECONDS defaults to 5
#                here (the full suite's default is 20).
#   --deps-only  checks and installs, runs no test
# Test files or folders among the arguments (relative to the repository root) replace the default set; the other
# arguments go to deno test: `deno task test --filter wal`, `deno task test tests/wal_test.ts`,
# `deno task test:quick --filter raft`. A leading `--` (`deno task test -- --filter wal`) is dropped.
# Exit status: deno test's, or 3 when packages are missing and cannot be installed (not root and no password-less
# sudo): then a single line names them and the apt-get command that installs them, and no test runs.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
cd "$repo"

declare -A why=()
missing=()

# True when a check of test_deps.txt (cmd:NAME, file:PATH or py:MODULE) finds what it names.
present() {
  local what=${1#*:} dir dirs
  case $1 in
    cmd:*)
      IFS=: read -ra dirs <<<"$PATH:/usr/sbin:/sbin"
      for dir in "${dirs[@]}"; do
        if [[ -n $dir && -f $dir/$what && -x $dir/$what ]]; then return 0; fi
      done
      return 1
      ;;
    file:*) [[ -e $what ]] ;;
    py:*)
      [[ -x /usr/bin/python3 ]] &&
        /usr/bin/python3 -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$what') is None)" 2>/dev/null
      ;;
    *)
      echo "test.sh: scripts/test_deps.txt: unknown check '$1'" >&2
      exit 2
      ;;
  esac
}

# Sets `missing` to the packages of test_deps.txt that are needed (their condition holds) and absent; fills `why`.
find_missing() {
  local line pkg check when comment
  missing=()
  while IFS= read -r line || [[ -n $line ]]; do
    comment=""
    if [[ $line == *"#"* ]]; then comment=${line#*#}; fi
    line=${line%%#*}
    pkg="" check="" when=""
    read -r pkg check when _ <<<"$line" || true
    if [[ -z $pkg ]]; then continue; fi
    if [[ -n $when ]]; then
      local var=${when%%=*}
      if [[ ${!var:-} != "${when#*=}" ]]; then continue; fi
    fi
    why[$pkg]=${comment#"${comment%%[![:space:]]*}"}
    if ! present "$check"; then missing+=("$pkg"); fi
  done <"$here/test_deps.txt"
}

# Installs the missing packages, or stops with one line saying how when it may not.
ensure_packages() {
  local wanted as=() p log
  find_missing
  if [[ ${#missing[@]} == 0 ]]; then return 0; fi
  wanted=("${missing[@]}")
  if [[ $(id -u) != 0 ]]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
      as=(sudo -n)
    else
      echo "test.sh: the tests need Debian packages that are missing (${missing[*]}) and this user cannot install" \
        "them; run: sudo apt-get install -y ${missing[*]}   (or deno task test:quick, which needs none)" >&2
      exit 3
    fi
  fi
  echo "test.sh: installing ${#missing[@]} Debian package(s) the tests need${as:+ (with sudo -n)}:"
  for p in "${missing[@]}"; do printf '  %-26s %s\n' "$p" "${why[$p]}"; done
  log=$(mktemp)
  if ! "${as[@]}" apt-get update -qq >"$log" 2>&1 ||
    ! "${as[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o Dpkg::Use-Pty=0 \
      --no-install-recommends "${missing[@]}" >>"$log" 2>&1; then
    echo "test.sh: apt-get failed; its last lines:" >&2
    tail -n 20 "$log" >&2
    rm -f "$log"
    exit 3
  fi
  rm -f "$log"
  find_missing
  if [[ ${#missing[@]} != 0 ]]; then
    echo "test.sh: still missing after apt-get install: ${missing[*]} (see scripts/test_deps.txt for the checks)" >&2
    exit 3
  fi
  echo "test.sh: installed ${wanted[*]}"
}

mode=full
case ${1:-} in
  --quick) mode=quick && shift ;;
  --deps-only) mode=deps && shift ;;
esac
if [[ ${1:-} == -- ]]; then shift; fi

# Arguments naming existing files or folders are the tests to run (unless they are a flag's value).
flags=()
targets=()
prev=""
for arg in "$@"; do
  case $prev in
    --filter | --seed | --reporter | --junit-path | --config | -c | --import-map | --lock | --cert | --location)
      flags+=("$arg")
      ;;
    *) if [[ $arg != -* && -e $arg ]]; then targets+=("$arg"); else flags+=("$arg"); fi ;;
  esac
  prev=$arg
done

case $mode in
  deps)
    ensure_packages
    ;;
  full)
    ensure_packages
    if [[ ${#targets[@]} == 0 ]]; then targets=(tests/); fi
    exec deno test -A --no-check=remote "${flags[@]}" "${targets[@]}"
    ;;
  quick)
    if [[ ${#targets[@]} == 0 ]]; then
      mapfile -t targets < <(sed -e 's/#.*//' -e 's/[[:space:]]*$//' -e '/^$/d' "$here/test_quick.txt")
    fi
    export RAFT_SIM_SECONDS=${RAFT_SIM_SECONDS:-5}
    deno=$(command -v deno)
    exec deno test --allow-read --allow-write --allow-net --allow-env --allow-sys \
      "--allow-run=deno,$deno,$(readlink -f "$deno")" --no-check=remote --parallel "${flags[@]}" "${targets[@]}"
    ;;
esac
