# Two commands on a fresh machine: `make demo` and `make test`.
# Both create .venv (python3 -m venv) when missing and install the package into it; a stamp file
# keeps the second run quick.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
FMNIST := /usr/share/datasets/fashion-mnist

.PHONY: demo test test-slow bench install data browser clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[test,export,serve]'
	@touch $(STAMP)

install: $(STAMP)

# Fashion-MNIST: the Debian package when apt is usable; otherwise `alexnet` downloads it on first use.
data:
	@if [ ! -f $(FMNIST)/t10k-labels-idx1-ubyte.gz ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 \
		|| echo "note: could not install dataset-fashion-mnist; alexnet will download Fashion-MNIST instead"; \
	fi

# Chromium and its driver, Debian's, for the browser test of `alexnet serve` (never a downloaded build): best
# effort, as root with apt; without them that test is skipped and says why.
browser:
	@if [ ! -x /usr/bin/chromedriver ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && apt-get install -y -qq chromium chromium-driver) >/dev/null 2>&1 \
		|| echo "note: could not install chromium and chromium-driver; the browser test of alexnet serve is skipped"; \
	fi

demo: install data
	$(BIN)/alexnet demo

test: install data browser
	$(BIN)/python -m pytest -q

test-slow: install data browser
	$(BIN)/python -m pytest -q -m slow

bench: install data
	$(BIN)/python bench/input_pipeline.py
	$(BIN)/python bench/train_step.py

clean:
	rm -rf $(VENV) build *.egg-info
