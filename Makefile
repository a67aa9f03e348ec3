# Two commands: `make demo` runs the main job, `make test` runs the tests. Each sets up .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The set-up stamp; tests/test_demo.py runs the demo chain with INSTALLED= PY=<its python>.
INSTALLED ?= $(VENV)/.installed

# -- The demo: NeuralScale against uniform and MorphNet-style scaling, VGG11 on Fashion-MNIST --------
# Scaled down to finish within 10 minutes, venv install included, on a 2-core CPU where
# `bench/train_throughput.py --device cpu --quick` reports about 60 img/s; the paper's protocol is the
# same scripts with their default settings (in brackets). Override any of these on the command line,
# e.g. make demo DEMO_SEEDS="0 1".
DATA_DIR ?= ./data
DEMO_DIR ?= demo_runs
DEMO_SUBSET ?= 1024          # training images, of 60,000             [all]
DEMO_TEST_SUBSET ?= 500      # test images, of 10,000                 [all]
DEMO_SEARCH_RATIO ?= 0.25    # search budget: default VGG11 x this    [1.0]
DEMO_ITERATIONS ?= 2         # architecture-descent iterations        [15]
DEMO_WARMUP ?= 2             # pre-training epochs before pruning     [10]
DEMO_SEARCH_BATCH ?= 64      # search minibatch                       [256]
DEMO_PRUNE_EVERY ?= 4        # minibatches per pruning step           [50]
DEMO_PRUNE_PER_STEP ?= 40    # units pruned per step                  [10]
DEMO_BATCH ?= 64             # training minibatch                     [128]
DEMO_EPOCHS ?= 4             # training epochs per ratio, LR decays at the paper's fractions  [300]
DEMO_RATIOS ?= 0.125 0.25    # width ratios                           [0.25 .. 2.0]
DEMO_SEEDS ?= 0 1 2          # seeds per method                       [0 1 2 3 4]

DEMO_LAST_IDX = $(shell echo $$(( $(DEMO_ITERATIONS) - 1 )))
DEMO_DIRS = --data_dir $(DATA_DIR) --record_dir $(DEMO_DIR)/prune_record \
	--plots_dir $(DEMO_DIR)/saved_plots --models_dir $(DEMO_DIR)/saved_models --figs_dir $(DEMO_DIR)/figs
DEMO_DATA = --model vgg --dataset FashionMNIST --subset $(DEMO_SUBSET) $(DEMO_DIRS)
DEMO_SEARCH = $(DEMO_DATA) --seed 0 --search_ratio $(DEMO_SEARCH_RATIO) --warmup $(DEMO_WARMUP) \
	--batch-size $(DEMO_SEARCH_BATCH) --prune_every $(DEMO_PRUNE_EVERY) --prune_per_step $(DEMO_PRUNE_PER_STEP)
DEMO_SWIPE = $(DEMO_DATA) --test_subset $(DEMO_TEST_SUBSET) --batch-size $(DEMO_BATCH) --epochs $(DEMO_EPOCHS) --scale_schedule \
	--ratios $(DEMO_RATIOS) --no_latency
# The three methods of a seed train at once, one thread each: the networks are small, so two cores do
# more as two processes than as one process's two threads. Latency is measured afterwards, on a quiet
# machine, by plot_ratio.py: once per width configuration (kept in saved_plots/latency_cache/).
DEMO_PARALLEL = OMP_NUM_THREADS=1

# The test-only packages (pytest, pytest-xdist) come from requirements-test.txt, installed by `make test` only.
TEST_INSTALLED ?= $(VENV)/.installed-test

# -- The data: Fashion-MNIST from Debian's dataset-fashion-mnist, unless the four IDX files are already
# where the loader looks (utils/data.py _find_fashion_mnist: DATA_DIR/FashionMNIST/raw, DATA_DIR, the
# package's folder), gzipped or not. Installs as root with apt; otherwise one line and exit 2.
FMNIST_SYSTEM_DIR ?= /usr/share/datasets/fashion-mnist
FMNIST_FILES = train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte
APT_GET ?= apt-get
IS_ROOT ?= $(filter 0,$(shell id -u))
FMNIST_INSTALL = apt-get update && apt-get install -y dataset-fashion-mnist

# -- The study: NeuralScale against uniform and MorphNet-style scaling at equal parameters, equal MACs and
# equal latency on this CPU, VGG11 on Fashion-MNIST (docs/latency.md). Scaled to finish within an hour on
# a 2-core CPU where `bench/train_throughput.py --device cpu --quick` reports about 60 img/s; every
# network trains until its test accuracy has plateaued (plot_ratio.py prints the evidence under each
# table). Override any of these on the command line, e.g. make study STUDY_SEEDS="0 1".
STUDY_DIR ?= study_runs
STUDY_SUBSET ?= 2048         # training images, of 60,000             [all]
STUDY_TEST_SUBSET ?= 2000    # test images, of 10,000                 [all]
STUDY_SEARCH_RATIO ?= 0.25   # search budget: default VGG11 x this    [1.0]
STUDY_ITERATIONS ?= 2        # architecture-descent iterations        [15]
STUDY_WARMUP ?= 2            # pre-training epochs before pruning     [10]
STUDY_SEARCH_BATCH ?= 64     # search minibatch                       [256]
STUDY_PRUNE_EVERY ?= 4       # minibatches per pruning step           [50]
STUDY_PRUNE_PER_STEP ?= 40   # units pruned per step                  [10]
STUDY_BATCH ?= 64            # training minibatch                     [128]
STUDY_TEST_BATCH ?= 200      # test minibatch: equal batches, so the per-batch mean is the accuracy  [128]
STUDY_EPOCHS ?= 20           # training epochs per ratio, LR decays at the paper's fractions (20: the
                             # 2nd decay falls before the last quarter, as in the paper)  [300]
STUDY_PLATEAU ?= 0.3         # then on at the last LR until the best test accuracy rose < this many
                             # points over the last quarter of the epochs (at most 2x); empty: off  [off]
STUDY_RATIOS ?= 0.125 0.25   # width ratios                           [0.25 .. 2.0]
STUDY_SEEDS ?= 0 1 2         # seeds per method                       [0 1 2 3 4]
STUDY_PRECISION ?= bf16      # training and timed arithmetic: bf16 autocast (native on this CPU)  [fp32]
STUDY_CLOCK ?= cpu           # latency clock: cpu = this process's CPU time at one thread, which the
                             # other jobs of a shared machine do not inflate; wall on a quiet machine

STUDY_LAST_IDX = $(shell echo $$(( $(STUDY_ITERATIONS) - 1 )))
STUDY_DIRS = --data_dir $(DATA_DIR) --record_dir $(STUDY_DIR)/prune_record \
	--plots_dir $(STUDY_DIR)/saved_plots --models_dir $(STUDY_DIR)/saved_models --figs_dir $(STUDY_DIR)/figs
STUDY_LATENCY = --device cpu --precision $(strip $(STUDY_PRECISION)) --latency_clock $(strip $(STUDY_CLOCK))
STUDY_DATA = --model vgg --dataset FashionMNIST --subset $(STUDY_SUBSET) $(STUDY_DIRS) $(STUDY_LATENCY)
STUDY_SEARCH = $(STUDY_DATA) --seed 0 --search_ratio $(STUDY_SEARCH_RATIO) --warmup $(STUDY_WARMUP) \
	--batch-size $(STUDY_SEARCH_BATCH) --prune_every $(STUDY_PRUNE_EVERY) --prune_per_step $(STUDY_PRUNE_PER_STEP)
# The test set in file order (--test_order fixed) and in equal batches: a shuffled order moves each
# epoch's accuracy by noise, which the best-epoch statistic and the plateau check would pick up.
STUDY_SWIPE = $(STUDY_DATA) --test_subset $(STUDY_TEST_SUBSET) --batch-size $(STUDY_BATCH) \
	--test-batch-size $(STUDY_TEST_BATCH) --test_order fixed --epochs $(STUDY_EPOCHS) --scale_schedule \
	--ratios $(STUDY_RATIOS) --no_latency $(if $(strip $(STUDY_PLATEAU)),--plateau $(strip $(STUDY_PLATEAU)))
STUDY_TABLE = --model vgg --dataset FashionMNIST $(STUDY_DIRS) $(STUDY_LATENCY) --ratios $(STUDY_RATIOS) \
	--seeds $(STUDY_SEEDS) --methods uniform morphnet neuralscale_it15 --late_idx $(STUDY_LAST_IDX) \
	--morph_record fmnist_morph --uniform_name vgg_uni_fmnist $(STUDY_TABLE_FLAGS)
STUDY_TABLE_FLAGS ?=         # more plot_ratio.py flags (the chain's test passes --no_latency)
# One thread per process: latency tables and measurements are of one thread (the cpu clock needs it),
# and small networks train faster as parallel processes than as one process's threads.
STUDY_ENV = OMP_NUM_THREADS=1

.PHONY: data demo study test test-fast

data:
	@for dir in "$(DATA_DIR)/FashionMNIST/raw" "$(DATA_DIR)" "$(FMNIST_SYSTEM_DIR)"; do \
	  n=0; for f in $(FMNIST_FILES); do \
	    if [ -f "$$dir/$$f" ] || [ -f "$$dir/$$f.gz" ]; then n=$$((n + 1)); fi; \
	  done; \
	  if [ $$n = 4 ]; then exit 0; fi; \
	done; \
	if [ -z "$(IS_ROOT)" ] || ! command -v $(APT_GET) >/dev/null 2>&1; then \
	  echo "error: Fashion-MNIST not found in $(DATA_DIR) or $(FMNIST_SYSTEM_DIR); as root run \`$(FMNIST_INSTALL)\`, or put the four IDX files in $(DATA_DIR)" >&2; \
	  exit 2; \
	fi; \
	echo "Fashion-MNIST: installing Debian's dataset-fashion-mnist"; \
	$(APT_GET) update && $(APT_GET) install -y dataset-fashion-mnist

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.installed-test: $(INSTALLED) requirements-test.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-test.txt
	touch $@

# Two workers, one file each at a time (a file's module fixtures stay in one process), one torch thread
# each (tests/conftest.py): most tests are single-threaded or wait on subprocesses.
TEST_WORKERS ?= 2
PYTEST = $(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

test: $(TEST_INSTALLED)
	$(PYTEST) tests

# The edit loop: everything but the end-to-end script runs (marked slow).
test-fast: $(TEST_INSTALLED)
	$(PYTEST) -m "not slow" tests

# Every step resumes: a second `make demo` reuses what the first one finished.
demo: data $(INSTALLED)
	$(PY) architecture_descent.py $(DEMO_SEARCH) --iterations $(DEMO_ITERATIONS) --save fmnist_search
	$(PY) architecture_descent.py $(DEMO_SEARCH) --morph --save fmnist_morph
	for seed in $(DEMO_SEEDS); do \
	  $(DEMO_PARALLEL) $(PY) ratio_swipe.py $(DEMO_SWIPE) --seed $$seed --uniform --save vgg_uni_fmnist_$$seed & u=$$!; \
	  $(DEMO_PARALLEL) $(PY) ratio_swipe.py $(DEMO_SWIPE) --seed $$seed --morph --prune_fname fmnist_morph \
	    --save vgg_pruned_fmnist_$$seed & m=$$!; \
	  $(DEMO_PARALLEL) $(PY) ratio_swipe.py $(DEMO_SWIPE) --seed $$seed --prune_fname fmnist_search \
	    --descent_idx $(DEMO_LAST_IDX) --save vgg_late_fmnist_$$seed & n=$$!; \
	  failed=0; for pid in $$u $$m $$n; do wait $$pid || failed=1; done; [ $$failed = 0 ] || exit 1; \
	done
	$(PY) plot_ratio.py --model vgg --dataset FashionMNIST $(DEMO_DIRS) --ratios $(DEMO_RATIOS) \
	  --seeds $(DEMO_SEEDS) --methods uniform morphnet neuralscale_it15 \
	  --uniform_name vgg_uni_fmnist --morph_name vgg_pruned_fmnist --late_name vgg_late_fmnist \
	  --prune_fname fmnist_search --late_idx $(DEMO_LAST_IDX) --morph_record fmnist_morph

# Every step resumes: a second `make study` reuses what the first one finished. The latency table is
# measured first, alone (list_architecture.py); every later step finds it in prune_record/latency_tables.
study: data $(INSTALLED)
	$(STUDY_ENV) $(PY) list_architecture.py --model vgg --dataset FashionMNIST $(STUDY_DIRS) $(STUDY_LATENCY) \
	  --budget latency --ratios $(STUDY_RATIOS)
	pids=""; for budget in params macs latency; do \
	  $(STUDY_ENV) $(PY) architecture_descent.py $(STUDY_SEARCH) --iterations $(STUDY_ITERATIONS) \
	    --budget $$budget --save fmnist_$$budget & pids="$$pids $$!"; \
	done; \
	$(STUDY_ENV) $(PY) architecture_descent.py $(STUDY_SEARCH) --morph --save fmnist_morph & pids="$$pids $$!"; \
	failed=0; for pid in $$pids; do wait $$pid || failed=1; done; [ $$failed = 0 ] || exit 1
	for seed in $(STUDY_SEEDS); do \
	  pids=""; \
	  $(STUDY_ENV) $(PY) ratio_swipe.py $(STUDY_SWIPE) --seed $$seed --uniform --save vgg_uni_fmnist_$$seed \
	    & pids="$$pids $$!"; \
	  for budget in params macs latency; do \
	    $(STUDY_ENV) $(PY) ratio_swipe.py $(STUDY_SWIPE) --seed $$seed --budget $$budget --morph \
	      --prune_fname fmnist_morph --save vgg_pruned_$${budget}_fmnist_$$seed & pids="$$pids $$!"; \
	    $(STUDY_ENV) $(PY) ratio_swipe.py $(STUDY_SWIPE) --seed $$seed --budget $$budget \
	      --prune_fname fmnist_$$budget --descent_idx $(STUDY_LAST_IDX) --save vgg_ns_$${budget}_fmnist_$$seed \
	      & pids="$$pids $$!"; \
	  done; \
	  failed=0; for pid in $$pids; do wait $$pid || failed=1; done; [ $$failed = 0 ] || exit 1; \
	done
	for budget in params macs latency; do \
	  $(STUDY_ENV) $(PY) plot_ratio.py $(STUDY_TABLE) --budget $$budget --prune_fname fmnist_$$budget \
	    --morph_name vgg_pruned_$${budget}_fmnist --late_name vgg_ns_$${budget}_fmnist || exit 1; \
	done
