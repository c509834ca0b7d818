# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# Both create .venv when it is missing and install the package once (a stamp file skips it later).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
P2M := $(VENV)/bin/p2m
STAMP := $(VENV)/.installed-stamp
DEMO ?= demo

.PHONY: install test demo clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

demo: $(STAMP)
	$(P2M) data synth --out $(DEMO)/data --models-per-category 4 --views 4 --seed 0
	$(P2M) data check $(DEMO)/data
	$(P2M) data preview $(DEMO)/data --split train --count 12 --out $(DEMO)/preview.png
	rm -rf $(DEMO)/experiments/demo
	$(P2M) search launch --data $(DEMO)/data --storage-path $(DEMO)/experiments --name demo
	$(P2M) results analyze $(DEMO)/experiments/demo

clean:
	rm -rf $(DEMO) .pytest_cache
