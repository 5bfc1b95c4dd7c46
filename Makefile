# rnn-nlp-service: `make serve` trains what is missing and serves; `make test` lints, type-checks and tests.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RNN_DATA_DIR ?= ../shared/data
export RNN_DATA_DIR

COMPOSE = $(shell $(PY) -c "import compose, pathlib; print(pathlib.Path(compose.__file__).parent / 'docker-compose')")

.PHONY: install lint typecheck docker-check test audit serve train train-ensemble bench wheelhouse keys clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev,bench,onnx]'
	touch $@

install: $(VENV)/.installed

lint: install
	$(PY) -m ruff check model app tests bench
	$(PY) -m ruff format --check model app tests bench

typecheck: install
	$(PY) -m mypy

# the Dockerfile and compose files, validated without an engine (.ci/run also builds and runs them: docker/ci.sh)
docker-check: install
	$(VENV)/bin/hadolint Dockerfile
	$(COMPOSE) -f docker/compose.yaml config --quiet
	RNN_DATA_HOST_DIR=$(RNN_DATA_DIR) $(COMPOSE) -f docker/compose.yaml -f docker/compose.ci.yaml config --quiet
	$(VENV)/bin/kubernetes-validate --strict --quiet docker/k8s.yaml

test: lint typecheck docker-check
	$(PY) -m pytest -q

# known vulnerabilities in the installed dependencies; needs PyPI's JSON API (or OSV), which not every machine reaches
audit: install
	$(VENV)/bin/pip-audit --strict --progress-spinner off

# the kinds of model, from the registry (model/tasks.py): expanded when a recipe runs, after `install`
KINDS = $(shell $(PY) -m model kinds)

# each kind's default preset as the next version of artifacts/KIND, unless its newest version already is one (a
# plain artifact there from before is left as it is), in the foreground
train: install
	for kind in $(KINDS); do $(PY) -m model train $$kind --new-version --unless-newest --out artifacts/$$kind || exit 1; done

# a first answer in minutes: the service starts at once, and a background trainer writes the quick preset of every
# kind that has no version yet, two at a time on one thread each (small models gain less from a second thread than
# from a second job: every route answers within about two and a half minutes on 2 cores, docs/results.md, first
# answers), then the default presets at low priority on one thread; each is written as the next version of
# artifacts/KIND and swapped in live (RNN_MODEL_POLL_SECONDS).
# A kind waiting for its first version answers 503 meanwhile. The trainer's log is artifacts/training.log; it stops
# with the service (Ctrl-C), and the next `make serve` goes on where it stopped.
serve: install
	mkdir -p $(addprefix artifacts/,$(KINDS))
	@echo "serving; the models train in the background (artifacts/training.log): quick versions first, then the defaults"
	setsid sh -c 'printf "%s\n" $(KINDS) | xargs -P 2 -I KIND \
		$(PY) -m model train KIND --preset quick --threads 1 --new-version --if-missing --out artifacts/KIND || exit 1; \
	for kind in $(KINDS); do \
		nice -n 10 $(PY) -m model train $$kind --threads 1 --new-version --unless-newest --out artifacts/$$kind || exit 1; \
	done' >> artifacts/training.log 2>&1 & \
	trainer=$$!; trap 'kill -- -$$trainer 2>/dev/null' EXIT INT TERM; $(PY) -m app

# several hours on 2 cores (the sentiment tables about two, the soak one); rewrites the README's tables and keeps
# the default (and ensemble) artifacts
bench: install
	$(PY) bench/sentiment_quality.py --update-readme --keep artifacts/sentiment --keep-ensemble artifacts/sentiment-ensemble
	ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 $(PY) bench/generator_quality.py --update-readme --keep artifacts/generator
	ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 $(PY) bench/tagger_quality.py --update-readme --keep artifacts/tagger
	$(PY) bench/translator_quality.py --update-readme --keep artifacts/translator
	$(PY) bench/isa.py --update-readme
	$(PY) bench/service_accuracy.py --update-readme
	$(PY) bench/explanations.py --sentences 100 --steps 16 --update-readme
	$(PY) bench/batching.py --update-readme
	$(PY) bench/quantization.py --update-readme
	$(PY) bench/runtime.py --sentiment artifacts/sentiment --sentiment artifacts/sentiment-ensemble --update-readme
	$(PY) bench/serve.py --sentiment artifacts/sentiment --other "the ensemble preset=artifacts/sentiment-ensemble" \
		--update-readme
	$(PY) bench/overload.py --bursts 8 --update-readme
	$(PY) bench/soak.py --minutes 60 --update-readme

# four BiLSTMs and the n-gram bag served whole, for those who want them (four forwards a sentence):
# RNN_SENTIMENT_ARTIFACT=artifacts/sentiment-ensemble make serve
artifacts/sentiment-ensemble/config.json: | install
	$(PY) -m model train sentiment --preset ensemble --out artifacts/sentiment-ensemble

train-ensemble: artifacts/sentiment-ensemble/config.json

# API keys for docker compose (its secrets, docker/secrets/): fresh random keys where the files are missing
keys:
	python3 docker/keys.py

# every wheel the image needs, for `docker build --build-arg WHEELHOUSE=/wheels` on a machine with no index
wheelhouse: install
	$(PY) docker/requirements.py > docker/requirements.txt
	$(PY) -m pip download --quiet --dest docker/wheelhouse -r docker/requirements.txt 'setuptools>=68'
	rm docker/requirements.txt

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
