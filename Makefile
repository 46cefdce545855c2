# Two commands a user needs: `make demo` (the default experiment on the CPU) and `make test`.
# Both create .venv and install the project on first use. On a machine without an NVIDIA GPU, torch is pinned
# to TORCH_SPEC (a CPU build here); override it, e.g. `make demo TORCH_SPEC=torch`, elsewhere.
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.ssmbench-installed

.PHONY: install demo test test-gpu bench clean-venv

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	if ! command -v nvidia-smi >/dev/null 2>&1; then $(PY) -m pip install -q "$(TORCH_SPEC)"; fi
	$(PY) -m pip install -q -e ".[dev,launchers]"
	touch $(STAMP)

install: $(STAMP)

# The default experiment (conf/experiment/demo.yaml): every model family on selective copying, CPU-sized.
# Writes outputs/demo/{rows/,rows.csv,summary.md,plots/} (git-ignored: the committed reference in results/demo
# stays untouched) and prints the summary.
demo: $(STAMP)
	$(VENV)/bin/ssmbench -m experiment=demo resume=false results_root=outputs
	$(VENV)/bin/ssmbench-report outputs/demo

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q

# On a CUDA machine: the same kernel tests at full size.
test-gpu: $(STAMP)
	$(PY) -m pytest -q -m gpu

clean-venv:
	rm -rf $(VENV)
