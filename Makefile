# The two commands of the README. Each sets up its own environment on a fresh machine.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.lever-installed
DEMO_DIR ?= runs/demo
BENCH_ARGS ?=

.PHONY: setup test demo lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup_env.sh
	VENV=$(VENV) bash scripts/setup_env.sh
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q

demo: setup
	VENV=$(VENV) DEMO_DIR=$(DEMO_DIR) bash scripts/demo.sh

bench: setup
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1 \
		$(PY) bench/speed.py $(BENCH_ARGS)

lint: setup
	$(VENV)/bin/ruff check lever_core adapters tests bench examples

clean:
	rm -rf $(VENV) runs .pytest_cache
