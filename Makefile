.PHONY: check lint typecheck test test-fast demo format docs

check: lint typecheck test

lint:
	.venv/bin/ruff check src tests bench
	.venv/bin/ruff format --check src tests bench

typecheck:
	.venv/bin/mypy

test:
	scripts/test.sh

# Skip the slow fault-injection and large-file tests during development.
test-fast:
	scripts/test.sh -m "not slow"

demo:
	scripts/demo.sh

format:
	.venv/bin/ruff format src tests bench
	.venv/bin/ruff check --fix src tests bench

docs:
	.venv/bin/python -m streamsend.config.docs > docs/configuration.md
