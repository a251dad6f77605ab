# The two commands of the quick start are `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PORT   ?= 8000
CORPUS ?= ../shared/fixtures/daily_papers_corpus.json.gz

.PHONY: run test bench install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	PORT=$(PORT) $(BIN)/gunicorn -c gunicorn.conf.py wsgi:app

test: $(STAMP)
	$(BIN)/python -m pytest

# bench/run.py (the targets of issue 7, which also runs bench/bench_query.py), then bench/load.py
# (a realistic traffic mix), then bench/stall.py (readers during a hung refresh); all update README's
# Benchmarks section. About 16 minutes on a shared 2-core host.
bench: $(STAMP)
	command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
	$(BIN)/py-spy --version >/dev/null 2>&1 || $(BIN)/python -m pip install --quiet py-spy || echo "bench: no py-spy, no profile"
	$(BIN)/python bench/run.py $(CORPUS) --readme --wait-quiet 120 $(BENCH_ARGS)
	$(BIN)/python bench/load.py $(CORPUS) --readme $(LOAD_ARGS)
	$(BIN)/python bench/stall.py $(CORPUS) --readme

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis *.egg-info
