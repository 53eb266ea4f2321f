# lkvm: build, test, cross-compile, benchmark.
#
#   make run        boot the default guest (Debian kernel + busybox shell)
#   make run ARCH=a the default guest of architecture a, inside the boot lab
#   make test       everything CI runs
#   make boot-test [ARCH=a]  boot lab: L1 Linux under QEMU runs lkvm on L2
#   make cross      static lkvm for x86_64, aarch64, riscv64gc, powerpc64le
#   make bench      VMM overhead benchmarks (JSON lines)
#   make fuzz [FUZZ_SECONDS=n] [FUZZ_TARGETS="a b"]  every fuzz target n s (60)
#   make fuzz-smoke the short fuzz run CI does: every target on its seeds
#   make deps       install apt packages, QEMU, cross linkers, rustup targets

HOST_TARGET := x86_64-unknown-linux-gnu
CROSS_TARGETS := x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu \
                 riscv64gc-unknown-linux-gnu powerpc64le-unknown-linux-gnu
STATIC := RUSTFLAGS="-C target-feature=+crt-static"
CARGO ?= cargo

ARCH ?=

.PHONY: all build cross deps lint fmt-check clippy unit test bench run clean \
        boot-test boot-test-supported fuzz fuzz-build fuzz-smoke

all: build

build:
	$(STATIC) $(CARGO) build --release --target $(HOST_TARGET)

cross:
	@for t in $(CROSS_TARGETS); do \
		echo "== lkvm for $$t"; \
		$(STATIC) $(CARGO) build --release --target $$t || exit 1; \
	done

deps:
	./tests/tools/deps.sh

fmt-check:
	$(CARGO) fmt --check
	$(CARGO) fmt --manifest-path fuzz/Cargo.toml --check

clippy:
	@for t in $(CROSS_TARGETS); do \
		echo "== clippy for $$t"; \
		$(CARGO) clippy --all-targets --target $$t -- -D warnings || exit 1; \
	done

lint: fmt-check clippy

unit:
	$(CARGO) test --all-targets
	python3 -m unittest discover -s tests/boot -p 'test_*.py'

test: lint unit fuzz-smoke cross boot-test-supported

# Fuzzing (fuzz/, cargo-fuzz on nightly Rust; docs/testing.md). Each target
# runs FUZZ_SECONDS (make fuzz) or FUZZ_SMOKE_SECONDS (make fuzz-smoke) with
# libFuzzer's -rss_limit_mb=2048 -timeout=10; any crash, timeout or
# out-of-memory fails. The smoke's budget (CI has the machine to itself, so
# two targets run at a time): 24 targets x 15 s / 2 (about 3 min) plus a
# clean build (2.5 min on 2 cores), about 5.5 min.
FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 15
FUZZ_JOBS ?= 1
FUZZ_SMOKE_JOBS ?= 2
FUZZ_TARGETS ?=

fuzz-build:
	cd fuzz && $(CARGO) +nightly fuzz build

fuzz: fuzz-build
	python3 tests/tools/fuzz.py run --seconds $(FUZZ_SECONDS) --jobs $(FUZZ_JOBS) $(FUZZ_TARGETS)

fuzz-smoke: fuzz-build
	python3 tests/tools/fuzz.py smoke --seconds $(FUZZ_SMOKE_SECONDS) --jobs $(FUZZ_SMOKE_JOBS) $(FUZZ_TARGETS)

# Every architecture (or ARCH=...); fails for those lkvm does not support yet.
boot-test:
	python3 tests/boot/lab.py test $(ARCH)

boot-test-supported:
	python3 tests/boot/lab.py test --supported

bench: build
	python3 tests/bench/bench.py
	python3 tests/boot/lab.py bench $(ARCH)

run:
ifeq ($(ARCH),)
	python3 tests/boot/lab.py run-host
else
	python3 tests/boot/lab.py run $(ARCH)
endif

clean:
	$(CARGO) clean
