# Sealpost: the two commands a newcomer runs are `make demo` and `make test`.
# Each first installs what is missing (scripts/deps.sh), then builds and acts.

SHELL := /bin/bash
CARGO ?= cargo

.PHONY: all deps build test demo bench fmt deb

all: build

deps:
	@scripts/deps.sh

build: deps
	$(CARGO) build --workspace --locked

# One profile (dev, with optimised dependencies) shared by unit and end-to-end tests. The
# binaries are built first because the end-to-end suite runs them as real processes. Last,
# the client library builds without its CLI's crates (scripts/check-layers.sh).
test: deps
	$(CARGO) build --workspace --bins --locked
	$(CARGO) test --workspace --locked
	CARGO=$(CARGO) scripts/check-layers.sh

demo: deps
	scripts/demo.sh

bench: deps
	scripts/bench.sh

# The Debian package (release build, dpkg-deb): target/debian/sealpost-node_*.deb.
deb: deps
	$(CARGO) build --release --locked -p sealpost-server -p sealpost-client --bins
	scripts/deb.sh

fmt:
	$(CARGO) fmt --all
