#!/usr/bin/env bash
# Installs what the demo and the tests need on a fresh Debian machine (idempotent):
#   - Debian packages: PostgreSQL 15 with pg_cron and wal2json (the local stack's database)
#   - a virtualenv in .venv with the project and its test extras
#   - the npm packages the supabase-js tests use (tests/js)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
APT_PACKAGES=(postgresql-15 postgresql-15-cron postgresql-15-wal2json)
[[ "${WITH_CONTAINER:-0}" == 1 ]] && APT_PACKAGES+=(podman runc debootstrap)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "==> installing Debian packages: ${missing[*]}"
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian's package starts a default cluster we do not use: stop it to free resources.
  $SUDO pg_ctlcluster 15 main stop >/dev/null 2>&1 || true
fi

stamp=.venv/.installed
if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
  echo "==> creating .venv and installing picture-worker[test]"
  [[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -e '.[test]'
  touch "$stamp"
fi

if command -v npm >/dev/null 2>&1; then
  if [[ ! -d tests/js/node_modules/@supabase/supabase-js || tests/js/package.json -nt tests/js/node_modules ]]; then
    echo "==> installing npm packages for the supabase-js tests"
    (cd tests/js && npm install --no-audit --no-fund --loglevel=error >/dev/null)
    touch tests/js/node_modules
  fi
else
  echo "warning: npm not found; the supabase-js tests will fail" >&2
fi
