#!/usr/bin/env bash
# Benchmarks of pivotwatch: throughput and peak memory on one core, and detection
# quality against scikit-learn's IsolationForest on the same windows.
# Run from the repository root: bench/run.sh
# Scratch output goes to bench/out/ (git-ignored); the tables are also written to
# bench/out/results.md.
#
# Environment knobs:
#   CARGO_TARGET_DIR      build directory (default /work/target)
#   BENCH_DEVICES         starting fleet size for the throughput run (default 100)
#   BENCH_DAYS            days for the throughput run (default 14)
#   BENCH_MIN_FLOWS       minimum flows for the throughput run (default 2000000)
#   BENCH_REPS            repetitions per timed command (default 5)
#   BENCH_CPU             core the throughput runs are pinned to (default 0)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
OUT="$ROOT/bench/out"
mkdir -p "$OUT"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/work/target}"
DEVICES="${BENCH_DEVICES:-100}"
DAYS="${BENCH_DAYS:-14}"
MIN_FLOWS="${BENCH_MIN_FLOWS:-2000000}"
REPS="${BENCH_REPS:-5}"
CPU="${BENCH_CPU:-0}"

echo "== build (release)"
cargo build --release
BIN="$CARGO_TARGET_DIR/release/pivotwatch"
"$BIN" simulate --help > /dev/null

echo "== tools"
if [ ! -x /usr/bin/time ]; then
    echo "installing GNU time"
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq time
fi
command -v taskset > /dev/null || { echo "taskset (util-linux) is required" >&2; exit 1; }

VENV="$OUT/venv"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
if ! "$PY" -c 'import numpy, sklearn' 2> /dev/null; then
    "$PY" -m pip install --quiet --upgrade pip
    "$PY" -m pip install --quiet numpy scikit-learn
fi

echo "== machine"
{
    echo "### Machine"
    echo
    echo "- nproc: $(nproc)"
    echo "- CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "- memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
    echo "- kernel: $(uname -r)"
    echo "- pivotwatch: $("$BIN" --version)"
    echo "- rustc: $(rustc --version)"
    echo "- Python: $("$PY" -c 'import platform; print(platform.python_version())'),"\
         "numpy $("$PY" -c 'import numpy; print(numpy.__version__)'),"\
         "scikit-learn $("$PY" -c 'import sklearn; print(sklearn.__version__)')"
} > "$OUT/machine.md"
cat "$OUT/machine.md"

echo "== throughput: simulate a fleet with >= $MIN_FLOWS flows"
SIM="$OUT/throughput_sim"
while :; do
    rm -rf "$SIM"
    "$BIN" simulate --out "$SIM" --devices "$DEVICES" --days "$DAYS" --seed 7 > /dev/null
    FLOWS=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["flows"])' "$SIM/simulation.json")
    echo "  --devices $DEVICES --days $DAYS: $FLOWS flows"
    if [ "$FLOWS" -ge "$MIN_FLOWS" ]; then break; fi
    DEVICES=$(( DEVICES + DEVICES / 10 + 1 ))
done

echo "== throughput: $REPS repetitions pinned to CPU $CPU"
"$PY" bench/throughput.py "$BIN" "$SIM" "$OUT/throughput.json" --reps "$REPS" --cpu "$CPU" \
    > "$OUT/throughput.md"
cat "$OUT/throughput.md"

echo "== quality vs scikit-learn"
STATUS=0
"$PY" bench/compare.py --bin "$BIN" --out "$OUT" --reps "$REPS" > "$OUT/quality.md" || STATUS=$?
cat "$OUT/quality.md"

cat "$OUT/machine.md" "$OUT/throughput.md" "$OUT/quality.md" > "$OUT/results.md"
echo
echo "tables written to bench/out/results.md; raw figures in bench/out/throughput.json and bench/out/quality.json"
exit "$STATUS"
