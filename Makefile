# Two commands on a fresh machine: `make demo` and `make test`. Both install first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo test bench quality gpu-check clean

# Re-install whenever the package metadata changes; the stamp makes repeat runs instant.
$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[synth,dev,track]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(PY) -m infer.demo

test: install
	$(PY) -m ruff check .
	$(PY) -m pytest -q tests

# On a GPU box: every GPU and multi-process path, a table of checks with figures and pass/fail
# (5-8 min on one modern GPU). Without CUDA it is a dry run at tiny sizes on the CPU.
gpu-check: install
	$(PY) bench/gpu_check.py --out runs/gpu-check

bench: install
	$(PY) bench/bench_index.py
	$(PY) bench/bench_synth.py
	$(PY) bench/bench_transform.py
	$(PY) bench/bench_preprocess.py
	$(PY) bench/bench_loader.py
	$(PY) bench/bench_train.py
	$(PY) bench/bench_infer.py
	$(PY) bench/bench_models.py

# The quality table (under 1 h here): oracle, matched-filter bank, CQT and 1D CPU models and
# their stack on the standard synthetic set, and the likelihood-ratio bounds on the same
# samples (12 min); the CQT presets compared by AUC (about 3 h); then the 1D and CQT
# data-scaling points (hours each; the 256,000-sample set needs about 45 GB of disk while it is
# made) and the stack of the two 256,000-sample models (the README's best detector); training
# with injections against the fixed set (about 1 h) and the injection's cost beside a step;
# the search against the matched-filter search on an hour of strain (about 1.5 h).
quality: install
	bash bench/bench_quality.sh
	$(PY) bench/bench_ceiling.py --data quality-data/data --out runs/quality/ceiling --jobs 2 \
	  --compare bank=runs/quality/mf.csv stack=runs/quality/submission.csv
	bash bench/bench_presets.sh quality-data runs/presets 2 default bpo12 bpo16h16 seed
	bash bench/bench_scaling.sh 64000 cpu1d 3
	TRAIN_ARGS=ema=true bash bench/bench_scaling.sh 64000 cpu 2
	bash bench/bench_scaling.sh 256000 cpu1d 1
	TRAIN_ARGS=ema=true bash bench/bench_scaling.sh 256000 cpu 1
	$(PY) -m infer --runs runs/scaling/cpu_n256000_e1 runs/scaling/cpu1d_n256000_e1 \
	  --store scaling-data/n256000/cache/test.zarr --out runs/scaling/stack_n256000.csv \
	  --truth quality-data/data/truth.csv --bank runs/quality/mf.csv --quiet \
	  members=stack "tta=[swap,flip]"
	MF=runs/quality/mf.csv bash bench/bench_inject_quality.sh quality-data runs/inject
	$(PY) bench/bench_inject.py --store quality-data/cache/train.zarr --bank quality-data/bank100k
	bash bench/bench_search_sensitivity.sh search-data runs/search-bench

clean:
	rm -rf runs/demo demo-data
