#!/usr/bin/env bash
# The side-by-side benchmark: dynamo-cdc, the common Python pipeline
# (scripts/bench/peer.py: boto3's TypeDeserializer, pyarrow, fastavro,
# confluent-kafka) and the serde_json parse ceiling, on the same seeded
# inputs (F1 mixed ~1.3 KB records, F2 small items, F3 items near 400 KB,
# F4 wide and deep) and the same single core; then memory as the input
# grows tenfold, the live AWS SDK path against replay, and latency at
# 5,000 changes/s over 8 shards. Every output pair is read back and checked
# equal row for row (scripts/bench/check.py). The report is printed and
# saved to target/bench-report.md.
#
#   bash scripts/bench.sh
#
# Environment: BENCH_VENV (default .venv-bench) for the peer's Python
# environment, created when missing; BENCH_INPUTS, BENCH_BYTES, BENCH_RUNS,
# BENCH_PARTS, BENCH_LATENCY_SECS as described in
# crates/pipeline/benches/compare/main.rs.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v taskset >/dev/null 2>&1 || echo "note: taskset is missing; contenders will not be pinned to one core" >&2

venv="${BENCH_VENV:-.venv-bench}"
stamp="$venv/.requirements.sha256"
want="$(sha256sum scripts/bench/requirements.txt | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "==> preparing the peer's Python environment in $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/bench/requirements.txt
  echo "$want" > "$stamp"
fi
BENCH_PYTHON="$(cd "$venv/bin" && pwd)/python"
export BENCH_PYTHON

mkdir -p target
cargo bench --locked -p dynamo-cdc --bench compare | tee target/bench-report.md
