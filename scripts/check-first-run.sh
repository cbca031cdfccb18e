#!/usr/bin/env bash
# The newcomer's first run, checked (issue 14): a fresh clone of this checkout, `make demo`
# in it, and the count of lines printed before the demo's own output (the goal: under 40).
# Outside the test suite because it needs a fresh clone and the package registries.
#
#   scripts/check-first-run.sh            clone HEAD into a temporary folder and run it there
#   KEEP=1 scripts/check-first-run.sh     keep the clone (its path is printed)
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap '[[ ${KEEP:-0} == 1 ]] || rm -rf "$work"' EXIT
git clone -q "$src" "$work/picture-worker"
cd "$work/picture-worker"
started=$SECONDS
set +e
make demo 2>&1 | tee "$work/demo.log"
code=${PIPESTATUS[0]}
set -e
elapsed=$((SECONDS - started))
first=$(grep -n -m1 '^==> starting the local stack' "$work/demo.log" | cut -d: -f1 || true)
before=$(( ${first:-1} - 1 ))
echo
echo "first run: make demo exited $code after ${elapsed}s; ${before} line(s) before the demo's own output"
[[ ${KEEP:-0} == 1 ]] && echo "clone kept in $work/picture-worker"
if [[ $code -ne 0 || -z $first || $before -ge 40 ]]; then
  exit 1
fi
