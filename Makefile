# The two commands of the README. Each sets up its own environment on a fresh machine.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.lever-installed
DEMO_DIR ?= runs/demo

.PHONY: setup test demo lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup_env.sh
	VENV=$(VENV) bash scripts/setup_env.sh
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q

demo: setup
	VENV=$(VENV) DEMO_DIR=$(DEMO_DIR) bash scripts/demo.sh

lint: setup
	$(VENV)/bin/ruff check lever_core adapters tests bench examples

clean:
	rm -rf $(VENV) runs .pytest_cache
