# Every target creates .venv first when it is missing or older than pyproject.toml.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo-out
PYTEST_ARGS ?=
# torch's CUDA wheels (nvidia-*, ~3 GB) come from PyPI; a dropped download once failed a CI run
# after pip's own 5 resumes, so each install gets more resumes and is tried up to 3 times.
# (--resume-retries needs pip >= 25.1, so the first step, upgrading the venv's own pip, goes without.)
PIP_BASE = bash .ci/retry.sh 3 $(BIN)/python -m pip install -qq --retries 10 --timeout 60
PIP = $(PIP_BASE) --resume-retries 20

.PHONY: venv demo test test-fast bench docs clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@bash .ci/system-deps.sh
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(PIP_BASE) --upgrade pip
	$(PIP) torch==2.14.1 torchvision==0.29.1
	$(PIP) -e '.[test,docs]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/depthdata demo --out $(DEMO_OUT)

# DEPTHDATA_DOCS_REQUIRED: tests/test_docs.py fails (instead of skipping) without mkdocs installed
test: $(STAMP)
	DEPTHDATA_DOCS_REQUIRED=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run_all

# Regenerate docs/reference/*.md and benchmarks/RESULTS.md from the code and results, then build
# the site into site/ (strict: dead links and missing references fail). Commit what changed.
docs: $(STAMP)
	$(BIN)/python docs/gen_reference.py
	$(BIN)/python -m benchmarks.run_all --render
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict -d site

clean:
	rm -rf $(DEMO_OUT) .pytest_cache site
