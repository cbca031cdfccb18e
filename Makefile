# The two commands: `make demo` and `make test`. Both install what they need first.
.PHONY: demo test test-fast lint check bench clean

demo:
	@scripts/setup.sh demo
	@.venv/bin/picture-worker demo

lint:
	@scripts/setup.sh test
	.venv/bin/ruff check .
	.venv/bin/mypy worker supabase/functions_compat

test: lint
	.venv/bin/pytest

check: test

# The fast tier: unit tests, the daemon/runner/handlers on the in-memory ports and the
# in-memory half of the contract suite. No Postgres, no stack; seconds.
test-fast:
	@scripts/setup.sh test
	.venv/bin/pytest -m fast -q

bench:
	@scripts/setup.sh bench
	.venv/bin/python -m bench

clean:
	-.venv/bin/picture-worker stack down 2>/dev/null
	rm -rf .stack demo-output dev/bench/results .setup.log
