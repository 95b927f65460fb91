# The two entry points a newcomer needs: `make serve` and `make test` (see README.md).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DATA   ?= data
STAMP  := $(VENV)/.installed

.PHONY: install chromium serve demo test test-fast lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch and torchvision first, as a matched pair (open_clip needs torchvision).
	$(BIN)/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Browser tests drive Debian's Chromium; install it when missing and we may.
chromium:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null; \
	  else echo "note: /usr/bin/chromium missing; browser tests will be skipped"; fi; \
	fi

serve: install
	$(BIN)/hybrid-search --data-dir $(DATA) serve --demo

demo: install
	$(BIN)/hybrid-search --data-dir $(DATA) demo

test: install chromium
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not model and not browser"

lint: install
	$(BIN)/ruff check hybrid_search tests bench migrations

bench: install
	$(BIN)/python bench/ingest_throughput.py
	$(BIN)/python bench/query_latency.py

clean:
	rm -rf $(VENV) .pytest_cache
