# Scrub In — set-up and everyday commands. `make demo` and `make test` are all a new machine needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Exact versions of every Python package (runtime, test, build): `make install` uses them so
# the same commit installs the same stack next month. `make lock` refreshes them from the
# newest releases; `make test-latest` runs the suite on the newest releases without touching
# the lock (see README "Reproducible installs").
LOCK   := constraints.txt
DEB_PACKAGES := libusb-1.0-0 dicom3tools dcmtk libegl1 libgl1-mesa-dri libgl1 chromium coturn janus espeak-ng

.PHONY: install demo test bench lint clean-cache deb protos lock test-latest fuzz

# Foxglove Studio's prebuilt MCAP reader and Foxglove's schemas (npm, pinned by the lock file)
# for tests/mentor/test_recording_foxglove.py; npm comes with nodesource's nodejs, Debian's
# nodejs needs its npm package.
FOXGLOVE := tests/mentor/foxglove
install: $(STAMP) $(FOXGLOVE)/node_modules/.installed

$(FOXGLOVE)/node_modules/.installed: $(FOXGLOVE)/package.json $(FOXGLOVE)/package-lock.json
	@command -v npm >/dev/null 2>&1 || sh .ci/deb-packages.sh nodejs npm
	cd $(FOXGLOVE) && npm ci --ignore-scripts --no-audit --no-fund
	@touch $@

deb:
	@sh .ci/deb-packages.sh $(DEB_PACKAGES)

$(STAMP): pyproject.toml $(LOCK)
	@$(MAKE) --no-print-directory deb
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	PIP_CONSTRAINT=$(CURDIR)/$(LOCK) $(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	PIP_CONSTRAINT=$(CURDIR)/$(LOCK) $(BIN)/python -m pip install -q -e '.[test]'
	$(BIN)/python -m scrubin.warm
	@touch $(STAMP)

demo: install
	$(BIN)/scrubin demo --out out/demo

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python -m benchmarks

protos: install
	$(BIN)/python -m scrubin.protos.build

# Mutation fuzzing of every parser of untrusted input (fuzz/README.md): FUZZ_TIME seconds,
# crashes saved in fuzz/out/. `make fuzz FUZZ_TIME=3600 FUZZ_TARGETS=dicom,glb FUZZ_SEED=7`
FUZZ_TIME ?= 300
FUZZ_SEED ?= 0
FUZZ_TARGETS ?=
fuzz: install
	$(BIN)/python -m fuzz --time $(FUZZ_TIME) --seed $(FUZZ_SEED) $(if $(FUZZ_TARGETS),--targets $(FUZZ_TARGETS))

lint: install
	$(BIN)/ruff check .

lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install -q --upgrade pip setuptools wheel
	.venv-lock/bin/python -m pip install -q '.[test]'
	.venv-lock/bin/python -m pip freeze --all --exclude scrubin | LC_ALL=C sort > $(LOCK).new
	mv $(LOCK).new $(LOCK) && rm -rf .venv-lock
	@echo "$(LOCK) refreshed: review 'git diff $(LOCK)', run 'make test', commit"

test-latest:
	@$(MAKE) --no-print-directory deb
	rm -rf .venv-latest && $(PYTHON) -m venv .venv-latest
	.venv-latest/bin/python -m pip install -q --upgrade pip setuptools wheel
	.venv-latest/bin/python -m pip install -q -e '.[test]'
	.venv-latest/bin/ruff check .
	.venv-latest/bin/python -m pytest -q

clean-cache:
	rm -rf samples/cache
