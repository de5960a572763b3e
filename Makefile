PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

# bash + pipefail so `jupyter-book ... | tee` fails when jupyter-book does.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c

.PHONY: venv test nbtest book bench clean

venv: $(VENV)/.installed

# Stamp: reinstall only when the dependency list changes.
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[test,book,torch]' -c constraints.txt
	touch $@

test: venv
	$(PY) -m pytest -q tests
	$(MAKE) nbtest
	$(MAKE) book

# MyST-notebook chapters (those with a jupytext header) -> _nbval/<path>.ipynb -> nbval.
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
book: venv
	mkdir -p _build
	$(VENV)/bin/jupyter-book build . -W -n --keep-going 2>&1 | tee _build/book.log
	! grep -qE 'Execution Failed|Executing notebook failed' _build/book.log
	test -f _build/html/index.html

# The benchmark suite at full size (torch, for row 4, comes with `pip install -e '.[bench]'`;
# without it that row says skipped). Writes bench/results/<machine>.json; tests run it tiny.
bench: venv
	$(PY) bench/suite.py

clean:
	rm -rf _build _nbval
