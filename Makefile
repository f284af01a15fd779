# The README's two commands call `make demo` and `make test`; both install what they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test fuzz lint bench clean chromium

setup: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "imgclf needs Python >= 3.11 (set PYTHON=...)")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: setup
	$(BIN)/imgclf train examples/fashion-mini --out runs/demo

test: setup chromium
	$(BIN)/python -m pytest -q

# The .pth loader's fuzz tests with 20x the examples of make test, new random ones each run
# (thousands; one to two minutes). A failure prints the example and keeps it as .../fuzz/example.pth.
fuzz: setup
	HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest -q tests/test_weights_hostile.py -k fuzz

# tests/test_browser.py drives Debian's Chromium through Playwright (never a downloaded browser).
chromium:
	test -x /usr/bin/chromium || (apt-get update -q && apt-get install -y -q chromium chromium-driver)

# ruff, then the layers contract of pyproject.toml (ARCHITECTURE.md): no upward import, no cycle.
lint: setup
	$(BIN)/ruff check src tests benchmarks conftest.py
	$(BIN)/lint-imports

# Benchmarks need the Fashion-MNIST source files (Debian package) to write their folders;
# real_photos.py needs the real-photo sets built by ../shared/tools/realdata.py (it says how
# when they are missing, and skips them); with them, the real-photo scripts take hours.
bench: setup chromium
	test -d /usr/share/datasets/fashion-mnist || (apt-get update -q && apt-get install -y -q dataset-fashion-mnist)
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	$(BIN)/python benchmarks/train_speed.py
	$(BIN)/python benchmarks/export_speed.py
	$(BIN)/python benchmarks/check_speed.py
	$(BIN)/python benchmarks/serve_load.py
	$(BIN)/python benchmarks/studio.py
	$(BIN)/python benchmarks/vs_tutorial.py
	$(BIN)/python benchmarks/throughput.py
	$(BIN)/python benchmarks/scaling.py
	$(BIN)/python benchmarks/backbones.py
	$(BIN)/python benchmarks/real_photos.py
	$(BIN)/python benchmarks/real_photo_levers.py
	$(BIN)/python benchmarks/real_photo_levers.py --backbones efficientnet_lite0 --per-class 25
	$(BIN)/python benchmarks/fine_tune_variants.py
	$(BIN)/python benchmarks/scale_out.py
	$(BIN)/python benchmarks/scale_parts.py

clean:
	rm -rf $(VENV) runs build src/*.egg-info .pytest_cache
