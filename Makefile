# One command for the main job, one for the tests. Both create .venv on first use.
#   make demo   - install, then reproduce Ergen & Kozat: online distributed LSTM training
#                 on 4 nodes, 5 seeds (runs/ergen-kozat/report.md, about 30 minutes on 2 cores)
#   make test   - install, then run the default test suite (a few minutes on 2 cores)
# torch==2.13.0 is installed first so pip takes the local CPU wheel; the project's own
# range (torch<2.14) is then already satisfied and nothing else is downloaded.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-slow gpu-check lint bench bench-evotorch clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev,text,tensorboard]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/distlstm reproduce ergen-kozat --jobs 0 --out runs/ergen-kozat

# pytest exits 5 when it collected no tests: a broken suite, not a pass.
test: $(STAMP)
	@$(BIN)/python -m pytest -q; status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$status

test-slow: $(STAMP)
	@$(BIN)/python -m pytest -q -m slow; status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test-slow: pytest collected no tests" >&2; exit 1; fi; exit $$status

# On a CUDA machine: NCCL collectives, GPU vs CPU/cuDNN outputs, AMP, then the cell table on the GPU.
gpu-check: $(STAMP)
	$(BIN)/python tools/gpu_check.py

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/distlstm bench --compile --output BENCHMARKS.md

# EvoTorch is compared in its own environment: it is not a dependency of distlstm.
bench-evotorch:
	$(PYTHON) -m venv .venv-bench
	.venv-bench/bin/pip install --quiet --disable-pip-version-check torch==2.13.0
	.venv-bench/bin/pip install --quiet --disable-pip-version-check evotorch -e .
	.venv-bench/bin/distlstm bench --sections evotorch --notes '' --output BENCHMARKS-evotorch.md

clean:
	rm -rf $(VENV) .venv-bench runs .pytest_cache .mypy_cache .ruff_cache
