# napari-vafa — developer commands. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
# Where pip gets torch: empty = the public index (PyPI: the CUDA build on Linux x86-64, several
# GB; the CPU build on macOS and Windows). CPU only on Linux: https://download.pytorch.org/whl/cpu;
# a CUDA version: https://download.pytorch.org/whl/cu126 (cu128, …).
TORCH_INDEX ?=
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-demo
WHEEL_DIR  ?= build/wheel-check
PYTEST_ARGS ?=

# Debian packages that a headless Qt/napari test session needs (Xvfb + xcb + GL).
APT_PACKAGES := xvfb xauth libgl1 libegl1 libgl1-mesa-dri libxkbcommon-x11-0 libxcb-icccm4 \
	libxcb-keysyms1 libxcb-image0 libxcb-render-util0 libxcb-randr0 libxcb-shape0 libxcb-xkb1 \
	libxcb-cursor0 libdbus-1-3 libfontconfig1

.PHONY: help venv sysdeps demo test test-fast bench lint gui wheel-check clean

help:
	@echo "make demo   - create .venv, install, run 'vafa demo' on the bundled sample"
	@echo "make test   - create .venv, install system + test dependencies, run pytest"
	@echo "make bench  - run the performance benchmarks in benchmarks/"
	@echo "make lint   - ruff and the import layers (import-linter)"
	@echo "make wheel-check - build the wheel, install it in a fresh venv as users do, try it"
	@echo "make gui    - open napari with the sample and the VAFA widget"

venv: $(STAMP)

# The extras must not replace the torch installed first (nnunetv2 asks for any torch, and pip
# would fetch a multi-GB CUDA build): a constraints file pins the version that is installed.
CONSTRAINTS := $(VENV)/torch-constraints.txt
TORCH_ARGS := "$(TORCH)"$(if $(TORCH_INDEX), --index-url "$(TORCH_INDEX)")
PIN_TORCH := $(BIN)/python -c "import torch; print('torch==' + torch.__version__.split('+')[0])" > $(CONSTRAINTS)

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip setuptools wheel
	$(BIN)/python -m pip install $(TORCH_ARGS)
	$(PIN_TORCH)
	$(BIN)/python -m pip install -c $(CONSTRAINTS) -e ".[test,napari,qt]"
	touch $(STAMP)

# Installs the missing system packages when we are root and apt-get exists; otherwise says what is missing.
sysdeps:
	@missing=""; for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	else \
		echo "warning: missing system packages for GUI tests:$$missing (install them with apt-get)"; \
	fi

# The demo needs the package alone (no test tools, no GUI).
$(DEMO_STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip setuptools wheel
	$(BIN)/python -m pip install $(TORCH_ARGS)
	$(PIN_TORCH)
	$(BIN)/python -m pip install -c $(CONSTRAINTS) -e .
	touch $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/vafa demo --overwrite

test: sysdeps $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not gui" $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src napari_vafa tests benchmarks scripts
	$(BIN)/ruff format --check src napari_vafa tests benchmarks scripts
	$(BIN)/lint-imports

gui: $(STAMP)
	$(BIN)/vafa gui

# What a user gets from `pip install napari-vafa`: the wheel, no extras, in a fresh venv (then
# the napari extra for the plugin manifest). Run by CI after the tests.
wheel-check: $(STAMP)
	bash scripts/check_wheel.sh "$(WHEEL_DIR)" "$(TORCH)" "$(TORCH_INDEX)"

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
