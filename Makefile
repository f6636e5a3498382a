# Two entry points: `make demo` runs the pipeline end to end on the embedded default,
# `make test` runs the test suite. Both create .venv and install on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DATA_DIR ?= data
OUT_DIR ?= outputs
# DeepSpeed JIT-compiles ops on first use; keep them with the venv so only the first run pays.
export TORCH_EXTENSIONS_DIR := $(abspath $(VENV))/torch_extensions
export DS_ACCELERATOR := cpu
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install demo test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first and pinned: an unpinned resolve pulls a multi-GB CUDA build.
	$(PY) -m pip install --disable-pip-version-check -q "torch==2.13.0"
	$(PY) -m pip install --disable-pip-version-check -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m ray_jobs.cli data fetch movielens --data-dir $(DATA_DIR)/raw
	$(PY) -m ray_jobs.cli prepare --config ray_jobs/configs/demo.yaml \
		--set input.root=$(DATA_DIR)/raw --set output_dir=$(OUT_DIR)/demo/prepared
	$(PY) -m ray_jobs.cli benchmark --config ray_jobs/configs/benchmark_demo.yaml \
		--set data.prepared=$(OUT_DIR)/demo/prepared --set out_dir=$(OUT_DIR)/demo
	$(PY) -m ray_jobs.cli tune --config ray_jobs/configs/tune_demo.yaml \
		--set data.prepared=$(OUT_DIR)/demo/prepared \
		--set ours.set.0=transfer.init_from=$(OUT_DIR)/demo/models/pretrained \
		--set storage_path=$(OUT_DIR)/demo/tune --set out_dir=$(OUT_DIR)/demo/tune
	$(PY) -m ray_jobs.cli registry list

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/bench_prepare.py --data-dir $(DATA_DIR)/raw
	$(PY) benchmarks/bench_train_step.py

clean:
	rm -rf $(OUT_DIR) .pytest_cache
