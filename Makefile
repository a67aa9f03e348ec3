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

# The test-only packages (pytest) come from requirements-test.txt, installed by `make test` only.
TEST_INSTALLED ?= $(VENV)/.installed-test

# -- The data: Fashion-MNIST from Debian's dataset-fashion-mnist, unless the four IDX files are already
# where the loader looks (utils/data.py _find_fashion_mnist: DATA_DIR/FashionMNIST/raw, DATA_DIR, the
# package's folder), gzipped or not. Installs as root with apt; otherwise one line and exit 2.
FMNIST_SYSTEM_DIR ?= /usr/share/datasets/fashion-mnist
FMNIST_FILES = train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte
APT_GET ?= apt-get
IS_ROOT ?= $(filter 0,$(shell id -u))
FMNIST_INSTALL = apt-get update && apt-get install -y dataset-fashion-mnist

.PHONY: data demo test test-fast

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

test: $(TEST_INSTALLED)
	$(PY) -m pytest tests

# The edit loop: everything but the end-to-end script runs (marked slow).
test-fast: $(TEST_INSTALLED)
	$(PY) -m pytest -m "not slow" tests

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
