PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

# bash + pipefail so `jupyter-book ... | tee` fails when jupyter-book does.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c

.PHONY: venv lint test standin nbtest nbcheck book browser lab bench device-prep device-run-cpu clean

venv: $(VENV)/.installed

# Stamp: reinstall only when the dependency list changes.
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[test,book,torch,browser]' -c constraints.txt
	# torchvision (test-only: tests/test_torch_zoo.py's model zoo), pinned in constraints.txt, with
	# --no-deps so that it can never replace the CPU torch; pillow and numpy come with the test extra.
	# Its wheel is a CUDA build whose C ops do not load beside the CPU torch: tests/torch_models.py
	# (torchvision_models) imports torchvision.models without them.
	$(PY) -m pip install --no-deps torchvision -c constraints.txt
	touch $@

# ruff.toml's rules over the package, tests, bench and the book's extension.
lint: venv
	$(VENV)/bin/ruff check .

# Each chapter executes once: the book build executes it (cached in _build/.jupyter_cache),
# nbcheck checks the executed notebooks as nbval would, the browser test reads the HTML.
test: venv
	$(MAKE) lint
	$(PY) -m pytest -q tests
	$(MAKE) standin
	$(MAKE) book
	$(MAKE) nbcheck
	$(MAKE) browser

# The GPU path without a GPU (README, "The CuPy stand-in"): the xp-parametrised tests on a strict
# NumPy-backed stand-in importable as cupy (tests/cupy_standin), and one chapter end to end with
# GAUGELIT_BACKEND=cupy on it (IPython, for the chapter's display calls); under 2 minutes.
STANDIN_CHAPTER ?= your-network
standin: venv
	PYTHONPATH="$(CURDIR)/tests/cupy_standin$${PYTHONPATH:+:$$PYTHONPATH}" $(PY) -m pytest -q -p no:cacheprovider \
	  tests/core tests/solvers tests/training -k cupy
	mkdir -p _build/standin
	$(VENV)/bin/jupytext --quiet --to py:percent -o _build/standin/$(STANDIN_CHAPTER).py book/$(STANDIN_CHAPTER).md
	cd book && PYTHONPATH="$(CURDIR)/tests/cupy_standin:$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH}" \
	  GAUGELIT_BACKEND=cupy MPLBACKEND=Agg "$(CURDIR)/$(VENV)/bin/ipython" --no-banner \
	  "$(CURDIR)/_build/standin/$(STANDIN_CHAPTER).py"

# Every cell of the notebooks the book build executed ran without error (nbval's lax check,
# without executing a second time), and no output shows a path of this machine.
nbcheck: venv
	GAUGELIT_BOOK_BUILD=_build $(PY) -m pytest -q -p no:cacheprovider tests/built_book/test_executed_notebooks.py

# The built book in headless Chromium (tests/built_book/test_book_browser.py): offline typesetting,
# figures, console errors, links, equation numbers; screenshots in _build/screenshots/.
# Skips, saying why, where no Chromium is installed (.ci/run installs Debian's).
browser: venv
	GAUGELIT_BOOK_BUILD=_build $(PY) -m pytest -q -rs -p no:cacheprovider tests/built_book/test_book_browser.py

# JupyterLab with jupytext: each book/*.md opens as a notebook (lab/ holds that setting).
# LAB_ARGS passes options, e.g. make lab LAB_ARGS='--no-browser --port 8899'. Containers often
# run as root, which Jupyter refuses unless told.
LAB_ARGS ?=
lab: $(VENV)/.lab-installed
	JUPYTER_CONFIG_PATH="$(CURDIR)/lab$${JUPYTER_CONFIG_PATH:+:$$JUPYTER_CONFIG_PATH}" \
	  $(VENV)/bin/jupyter lab --ServerApp.root_dir="$(CURDIR)" --LabApp.default_url=/lab/tree/book \
	  $$([ "$$(id -u)" = 0 ] && echo --allow-root) $(LAB_ARGS)

$(VENV)/.lab-installed: $(VENV)/.installed
	$(PY) -m pip install -e '.[lab]' -c constraints.txt
	touch $@

# Standalone nbval over fresh executions (make test no longer runs it: nbcheck reads the
# book build's executions). MyST-notebook chapters -> _nbval/<path>.ipynb -> nbval.
nbtest: venv
	rm -rf _nbval
	@nbs=$$(find book -name '*.md' -exec grep -l '^jupytext:' {} + 2>/dev/null || true); \
	if [ -z "$$nbs" ]; then echo "nbtest: no jupytext notebooks under book/, nothing to run"; exit 0; fi; \
	for md in $$nbs; do \
	  mkdir -p "_nbval/$$(dirname "$$md")"; \
	  $(VENV)/bin/jupytext --to notebook --output "_nbval/$${md%.md}.ipynb" "$$md"; \
	done; \
	rc=0; $(PY) -m pytest --nbval-lax --nbval-current-env -p no:cacheprovider _nbval || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "nbtest: pytest collected no notebooks"; exit 0; fi; \
	exit $$rc

# -W -n: warnings and broken references fail the build; a failed cell is only
# a warning in jupyter-book 1, hence the explicit log check.
# _ext/preexecute.py first executes the chapters not yet in the build's execution cache, one per
# core, so that the build itself executes nothing again.
book: venv
	mkdir -p _build
	$(PY) _ext/preexecute.py _build/.jupyter_cache $$(grep -l '^jupytext:' book/*.md)
	$(VENV)/bin/jupyter-book build . -W -n --keep-going 2>&1 | tee _build/book.log
	! grep -qE 'Execution Failed|Executing notebook failed' _build/book.log
	test -f _build/html/index.html

# The benchmark suite at full size (torch, for row 4, comes with `pip install -e '.[bench]'`;
# without it that row says skipped). Writes bench/results/<machine>.json; tests run it tiny.
bench: venv
	$(PY) bench/suite.py

# What bench/device_run.sh carries to a GPU machine without network: wheels its python lacks,
# MNIST and Fashion-MNIST, and (RESULTS=path/to/results.tar.gz) an earlier call's results to resume.
device-prep: venv
	PYTHON=$(PY) bash bench/device_prep.sh $(if $(RESULTS),RESULTS=$(RESULTS))

# The same script in its CPU mode (NumPy, a tiny grid, no wheels); tests/bench/test_device_run.py runs it too.
device-run-cpu: venv
	PYTHON=$(PY) bash bench/device_run.sh --cpu

clean:
	rm -rf _build _nbval
