# rnn-nlp-service: `make serve` trains what is missing and serves; `make test` lints, type-checks and tests.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RNN_DATA_DIR ?= ../shared/data
export RNN_DATA_DIR

.PHONY: install lint typecheck test serve train bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	touch $@

install: $(VENV)/.installed

lint: install
	$(PY) -m ruff check model app tests bench
	$(PY) -m ruff format --check model app tests bench

typecheck: install
	$(PY) -m mypy

test: lint typecheck
	$(PY) -m pytest -q

artifacts/sentiment/config.json: | install
	$(PY) -m model train sentiment --out artifacts/sentiment

artifacts/generator/config.json: | install
	$(PY) -m model train generator --out artifacts/generator

train: artifacts/sentiment/config.json artifacts/generator/config.json

serve: train
	$(PY) -m app

# about 45 minutes on 2 cores; rewrites the README's tables and keeps the default artifacts
bench: install
	$(PY) bench/sentiment_quality.py --update-readme --keep artifacts/sentiment
	$(PY) bench/generator_quality.py --update-readme --keep artifacts/generator
	$(PY) bench/service_accuracy.py --update-readme
	$(PY) bench/explanations.py --sentences 100 --steps 16 --update-readme
	$(PY) bench/batching.py --update-readme

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
