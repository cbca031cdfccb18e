# The two commands: `make demo` and `make test`. Both install what they need first.
.PHONY: setup demo test lint check bench clean

setup:
	@scripts/setup.sh

demo: setup
	.venv/bin/picture-worker demo

lint: setup
	.venv/bin/ruff check .
	.venv/bin/mypy worker supabase/functions_compat

test: setup lint
	.venv/bin/pytest

check: test

bench: setup
	.venv/bin/pip install -q -e '.[bench]'
	.venv/bin/python -m bench

clean:
	-.venv/bin/picture-worker stack down 2>/dev/null
	rm -rf .stack demo-output bench/results
