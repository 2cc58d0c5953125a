# `make test` builds .venv from requirements.txt when it is missing (or older than
# requirements.txt) and runs the test suite on the CPU; `make demo` runs the CPU demo.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.requirements-installed

.PHONY: test demo venv clean

venv: $(STAMP)

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

# Two single-threaded pytest workers (pytest-xdist): one per core of a 2-core machine; worksteal
# balances the long end-to-end tests between them.
TEST_WORKERS ?= 2

test: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal tests

demo: $(STAMP)
	bash Run_demo.sh

clean:
	rm -rf $(VENV) .pytest_cache
