#!/usr/bin/env bash
# The side-by-side benchmark: dynamo-cdc, three Lambda-style peers (the
# common Python pipeline, scripts/bench/peer.py: boto3's TypeDeserializer,
# pyarrow, fastavro, confluent-kafka; its lean variant, peer_lean.py; and
# the Node.js one, scripts/bench/node: unmarshall, apache-arrow with
# parquet-wasm, avsc, kafkajs) and two parse ceilings (serde_json and
# simd-json), on the
# same seeded inputs (F1 mixed ~1.3 KB records, F2 small items, F3 items
# near 400 KB, F4 wide and deep) and the same single core; then memory as
# the input grows tenfold, the live AWS SDK path against replay, and
# latency at 5,000 changes/s over 8 shards. Every peer's outputs are read
# back and checked equal to dynamo-cdc's row for row
# (scripts/bench/check.py). The report is printed and saved to
# target/bench-report.md.
#
#   bash scripts/bench.sh
#
# Environment: BENCH_VENV (default .venv-bench) for the Python peers'
# environment, created when missing; the Node.js peer's packages are
# installed (npm ci) when missing or when its lockfile changed, and the peer
# is left out, with a note, when node is missing or they cannot be
# installed; BENCH_NODE (default: node from PATH); BENCH_INPUTS,
# BENCH_BYTES, BENCH_RUNS, BENCH_PAIRED_RUNS,
# BENCH_PARTS, BENCH_LATENCY_SECS, BENCH_BRIDGE, BENCH_BASELINE as described in
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

# The Node.js peer's packages, stamped with the lockfile they came from.
node_dir=scripts/bench/node
node_stamp="$node_dir/node_modules/.package-lock.sha256"
BENCH_NODE="${BENCH_NODE:-node}"
if ! command -v "$BENCH_NODE" >/dev/null 2>&1; then
  echo "note: node ($BENCH_NODE) is missing; the Node.js peer will be left out" >&2
else
  want="$(sha256sum "$node_dir/package-lock.json" | cut -d' ' -f1)"
  if [ ! -d "$node_dir/node_modules" ] || [ "$(cat "$node_stamp" 2>/dev/null)" != "$want" ]; then
    echo "==> installing the Node.js peer's packages in $node_dir (npm ci)" >&2
    if command -v npm >/dev/null 2>&1 &&
      (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error >&2); then
      echo "$want" > "$node_stamp"
    else
      # Without its packages (none, stale or half installed) the peer is left out.
      echo "note: npm is missing or npm ci failed; the Node.js peer will be left out" >&2
      rm -rf "$node_dir/node_modules"
    fi
  fi
fi
export BENCH_NODE

mkdir -p target
cargo bench --locked -p dynamo-cdc --bench compare | tee target/bench-report.md
