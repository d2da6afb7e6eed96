# Two entry points, both self-installing: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The CPU wheel of torch 2.13.0 is installed first; constraints.txt keeps every later install on it.
TORCH_SPEC ?= torch==2.13.0

# Offline, headless, and no writes outside the project.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export MPLBACKEND := Agg
export IPYTHONDIR := $(CURDIR)/.cache/ipython
export JUPYTER_CONFIG_DIR := $(CURDIR)/.cache/jupyter/config
export JUPYTER_DATA_DIR := $(CURDIR)/.cache/jupyter/data
export JUPYTER_RUNTIME_DIR := $(CURDIR)/.cache/jupyter/runtime
export MPLCONFIGDIR := $(CURDIR)/.cache/matplotlib
export NUMBA_CACHE_DIR := $(CURDIR)/.cache/numba

.PHONY: install demo test lab board demo-html clean help

help:
	@echo "make demo   set up .venv if needed, then run the workbook on the built-in demo data"
	@echo "make test   set up .venv if needed, then run the test suite"
	@echo "make lab    open JupyterLab on notebooks/ (localhost only)"
	@echo "make board  TensorBoard over outputs/ (localhost only): the curves of every run, live"
	@echo "make demo-html  render the executed demo notebooks (after make demo) to docs/demo/*.html"

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,lab]'
	$(PY) -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $(STAMP)

# Every notebook, headless, on the built-in demo (configs/demo.yaml); e.g. DEMO_ARGS="--device cpu --no-resume".
DEMO_ARGS ?=
demo: $(STAMP)
	$(PY) -m tdsm_core demo $(DEMO_ARGS)

test: $(STAMP)
	$(PY) -m pytest -q

lab: $(STAMP)
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks --ip=127.0.0.1 --no-browser $(if $(filter 0,$(shell id -u)),--allow-root,)

# Every trainer writes TensorBoard events into <run folder>/tensorboard (the encoder's into <split>/encoder/tensorboard).
board: $(STAMP)
	$(VENV)/bin/tensorboard --logdir outputs --host 127.0.0.1 --port $(or $(PORT),6006)

# The executed demo notebooks as HTML under docs/demo/ (run make demo first), for readers who run nothing.
demo-html: $(STAMP)
	test -d outputs/demo/notebooks || { echo "run make demo first: outputs/demo/notebooks is missing"; exit 2; }
	mkdir -p docs/demo
	$(VENV)/bin/jupyter nbconvert --to html --output-dir docs/demo outputs/demo/notebooks/0*.ipynb

clean:
	rm -rf outputs .cache .pytest_cache
