# Two commands on a fresh machine: `make demo` and `make test`. Both install first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo test bench quality clean

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

bench: install
	$(PY) bench/bench_index.py
	$(PY) bench/bench_synth.py
	$(PY) bench/bench_transform.py
	$(PY) bench/bench_preprocess.py
	$(PY) bench/bench_loader.py
	$(PY) bench/bench_train.py
	$(PY) bench/bench_infer.py
	$(PY) bench/bench_models.py

# The quality table (about 2 h here): oracle, matched-filter bank, CQT and 1D CPU models and
# their stack on the standard synthetic set, and the likelihood-ratio bounds on the same
# samples (12 min); the CQT presets compared by AUC (about 3 h); then the 1D data-scaling
# points (hours each).
quality: install
	bash bench/bench_quality.sh
	$(PY) bench/bench_ceiling.py --data quality-data/data --out runs/quality/ceiling --jobs 2 \
	  --compare bank=runs/quality/mf.csv stack=runs/quality/submission.csv
	bash bench/bench_presets.sh quality-data runs/presets 2 default bpo12 bpo16h16 seed
	bash bench/bench_scaling.sh 64000 cpu1d 3
	WARMUP=0.1 bash bench/bench_scaling.sh 256000 cpu1d 1

clean:
	rm -rf runs/demo demo-data
