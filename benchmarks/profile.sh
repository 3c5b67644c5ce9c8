#!/usr/bin/env bash
# Counts instructions (valgrind --tool=callgrind) for Coffer's main commands on a small
# generated volume: reproducible from run to run, unlike timings on a shared machine.
# Usage: benchmarks/profile.sh [OUT_DIR]   (after `swift build -c release`)
# Valgrind 3.19 cannot read the DWARF 5 debug info Swift emits: the binary is profiled
# without it (function names stay).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-.build/profile}
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 2; }
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
objcopy --strip-debug .build/release/coffer "$work/coffer"
.build/release/coffer-fixtures --db "$work/v/db.sqlite" --media-root "$work/v/media" --jobs 300 --seed 5 --max-file-bytes 65536 >/dev/null
export DB_PATH="$work/v/db.sqlite" MEDIA_ROOT="$work/v/media" COFFER_REPO="$work/repo" MIN_FREE_SPACE_GB=0 ALERT_FREE_SPACE_GB=0
profile() {
  local name=$1; shift
  valgrind --tool=callgrind --callgrind-out-file="$out/$name.callgrind" "$work/coffer" "$@" >/dev/null 2>"$out/$name.log" || true
  printf '%-18s %15s instructions\n' "$name" "$(grep -o 'Collected : [0-9]*' "$out/$name.log" | grep -o '[0-9]*$')"
}
profile version --version
profile verify-live verify --quiet
profile backup-full backup --quiet --full
profile backup-unchanged backup --quiet
profile verify-data verify --quiet --repo "$work/repo" --read-data
profile restore restore --quiet --db "$work/r/db.sqlite" --media-root "$work/r/media"
sqlite3 "$DB_PATH" "UPDATE jobs SET created_at = datetime('now', '-90 days') WHERE status IN ('COMPLETE', 'FAILED', 'CANCELED')"
profile export export-jobs --quiet --out "$work/export"
echo "call graphs in $out (callgrind_annotate --inclusive=yes $out/backup-full.callgrind)"
