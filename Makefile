# Two commands from a fresh clone: `make demo` (set up, then the demo of the shipped models) and `make test`.
# Both create .venv on first use; set PYTHON to pick the interpreter (Python >= 3.11).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
DEMO_OUT ?= demo
BIN := $(VENV)/bin

.PHONY: demo test setup clean

demo: $(VENV)/.installed
	$(BIN)/bloodgen demo --out $(DEMO_OUT)

test: $(VENV)/.installed
	$(BIN)/python -m pytest

setup: $(VENV)/.installed

# torch is installed first and pinned so pip never swaps it for another build when resolving the rest.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "bloodgen needs Python >= 3.11; set PYTHON=python3.11"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e '.[dev]' $(TORCH_SPEC)
	touch $@

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
