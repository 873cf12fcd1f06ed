# sertool: two entry points for a fresh machine.
#   make demo   installs everything the main job needs into .venv and runs it on the built-in demo corpus
#   make test   installs the test dependencies into .venv and runs the whole test suite
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
PIP     = $(PY) -m pip --disable-pip-version-check -q
STAMP   = $(VENV)/.installed

.PHONY: demo test lint clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip setuptools wheel

# torch==2.13.0 resolves to the CPU wheel on this kind of machine; pinned in setup.cfg's [whisper] extra.
$(STAMP): $(VENV)/bin/python setup.cfg pyproject.toml
	$(PIP) install -e ".[all,test]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/sertool demo --out demo

test: $(STAMP)
	$(VENV)/bin/ruff check sertool tests benchmarks
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check sertool tests benchmarks
	$(VENV)/bin/ruff format --check sertool tests benchmarks

clean:
	rm -rf $(VENV) demo .pytest_cache .ruff_cache *.egg-info
