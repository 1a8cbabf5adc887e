# rndpo developer targets. `make help` lists them; `make all` (tests, then lint) is what CI runs.
PYTHON ?= python3
PYTEST_ARGS ?=
DIST ?= dist
# What `make wheel` builds with: zig (from the ziglang package) links against glibc 2.17 with no container,
# and twine checks the metadata. The one place these are pinned; `make install-test` installs them too.
WHEEL_TOOLS = 'maturin>=1.10,<2' 'ziglang>=0.15.2,<0.16' 'twine>=6.1'

.PHONY: help install install-test build demo test test-rust test-python lint format bench study wheel all

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

install: ## install rndpo (editable) with what the demo needs: torch (installed once, then reused), matplotlib
	$(PYTHON) -m pip install -q -e '.[plots]'

install-test: ## install rndpo (editable) with the test extras and the wheel tools
	$(PYTHON) -m pip install -q -e '.[test]' $(WHEEL_TOOLS)

build: ## rebuild the Rust extension in place (release)
	$(PYTHON) -m pip install -q -e . --no-deps

demo: install ## the main job: base model, proposals, judges, mining, sft_top/DPO/RN-DPO, summary table
	$(PYTHON) -m rndpo demo --out rndpo-demo --overwrite

test: install-test test-rust test-python ## everything: Rust tests, type stubs, pytest

test-rust: ## cargo tests of the pure Rust core
	cargo test -p rndpo-core --release --quiet

test-python: ## stub check, mypy, pytest (exit code 5, no test collected, counts as a failure)
	$(PYTHON) -m mypy.stubtest rndpo._core
	$(PYTHON) -m mypy
	$(PYTHON) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

lint: ## ruff format and check, mypy, cargo fmt --check, clippy with warnings as errors
	$(PYTHON) -m ruff format --check python tests benches
	$(PYTHON) -m ruff check python tests benches
	$(PYTHON) -m mypy
	cargo fmt --all --check
	cargo clippy --all-targets -- -D warnings

format: ## format Python and Rust
	ruff format python tests benches
	ruff check --fix python tests benches
	cargo fmt --all

bench: install ## speed benchmarks (miners, label maps, memory-mapped banks, losses) as ratios against baselines of the same run; writes docs/benchmarks.md
	$(PYTHON) benches/bench_miners_sweep.py

wheel: ## build the manylinux2014 (glibc 2.17) abi3 wheel and the sdist into $(DIST)/, then twine check them
	$(PYTHON) -m pip install -q $(WHEEL_TOOLS)
	rm -f $(DIST)/rndpo-*.whl $(DIST)/rndpo-*.tar.gz
	$(PYTHON) -m maturin build --release --sdist --zig --compatibility manylinux2014 --out $(DIST)
	$(PYTHON) -m twine check --strict $(DIST)/rndpo-*.whl $(DIST)/rndpo-*.tar.gz

all: test lint ## what CI runs (.ci/run): the tests, then the lint
