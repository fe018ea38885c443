# Backprop Lab. `make run` starts the whole service on the embedded defaults; `make test` runs every test.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install run test browser bench bench-engine bench-service bench-predict clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/backprop db upgrade
	$(VENV)/bin/backprop dev

test: $(STAMP) browser
	$(PY) -m pytest -q $(PYTEST_ARGS)

# The dashboard's browser tests drive Debian's chromium (Playwright cannot download its own here).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	  else echo "chromium is missing and installing it needs root: apt-get install -y chromium" >&2; fi; }

# Benchmarks compare against PyTorch CPU when it is installed (the wheel on this machine's disk).
bench: bench-engine bench-service bench-predict

bench-engine: $(STAMP)
	$(PY) -m pip install -q torch==2.13.0 || true
	$(PY) -m bench.engine

bench-service: $(STAMP)
	$(PY) -m bench.service

bench-predict: $(STAMP)
	$(PY) -m bench.predict

clean:
	rm -rf $(VENV) data .pytest_cache
