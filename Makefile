# Scrub In — set-up and everyday commands. `make demo` and `make test` are all a new machine needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEB_PACKAGES := libusb-1.0-0 dicom3tools dcmtk libegl1 libgl1-mesa-dri libgl1 chromium

.PHONY: install demo test bench lint clean-cache deb

install: $(STAMP)

deb:
	@sh .ci/deb-packages.sh $(DEB_PACKAGES)

$(STAMP): pyproject.toml
	@$(MAKE) --no-print-directory deb
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $(STAMP)

demo: install
	$(BIN)/scrubin demo --out out/demo

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python -m benchmarks

lint: install
	$(BIN)/ruff check .

clean-cache:
	rm -rf samples/cache
