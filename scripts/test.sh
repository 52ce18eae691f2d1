#!/usr/bin/env bash
# Runs the whole dynamo-cdc test suite on a fresh machine: installs what the
# tests need, builds once, runs every Rust test (the stream source against
# the testkit's simulator among them), then two independent end-to-end
# checks that read the Parquet output with pyarrow (and DuckDB) and compare
# it with boto3's TypeDeserializer: one on replayed captures, one on live
# streams of a moto server (started and stopped on a free loopback port),
# with SIGKILL restarts; then the metrics endpoint of a live run, scraped
# and parsed with prometheus_client. The Rust tests include the Kafka end to
# end on a tansu broker process, installed here with `cargo install` when
# missing.
#
#   bash scripts/test.sh
#
# Environment: DYNAMO_CDC_VENV (default .venv) is the Python virtual
# environment the check uses; it is created and filled when missing. The
# Rust tests get its interpreter as DYNAMO_CDC_PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

need_apt=()
command -v cc >/dev/null 2>&1 || need_apt+=(gcc libc6-dev)
# librdkafka (built from source by rdkafka-sys) needs a C++ compiler, make,
# pkg-config, and OpenSSL's headers for TLS.
command -v c++ >/dev/null 2>&1 || need_apt+=(g++)
command -v make >/dev/null 2>&1 || need_apt+=(make)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
if ! { command -v pkg-config >/dev/null 2>&1 && pkg-config --exists openssl; }; then
  need_apt+=(libssl-dev)
fi
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
if command -v python3 >/dev/null 2>&1 && ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  need_apt+=(python3-venv)
fi
# Spark (the dataset check) runs on a Java 17 or newer.
command -v java >/dev/null 2>&1 || need_apt+=(default-jre-headless)
if [ ${#need_apt[@]} -gt 0 ]; then
  step "installing Debian packages: ${need_apt[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
fi

venv="${DYNAMO_CDC_VENV:-.venv}"
stamp="$venv/.requirements.sha256"
want="$(sha256sum scripts/requirements.txt | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  step "preparing the Python environment in $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/requirements.txt
  # docker-compose 1.29.2 validates the compose file; its declared pins
  # (PyYAML<6, which no longer builds, and jsonschema<4) are too old, and it
  # works with the newer versions above.
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps docker-compose==1.29.2
  echo "$want" > "$stamp"
fi

# A real Kafka-protocol broker for the end-to-end test (a separate process;
# the test starts it on a free port with in-memory storage).
if ! command -v tansu >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/tansu" ]; then
  step "installing the tansu broker (cargo install; takes a while the first time)"
  cargo install tansu --version 0.6.0 --locked --features dynostore
fi
DYNAMO_CDC_TANSU="$(command -v tansu || echo "$HOME/.cargo/bin/tansu")"
DYNAMO_CDC_MOTO_SERVER="$(cd "$venv/bin" && pwd)/moto_server"
# botocore checks the Iceberg sink's SigV4 signatures.
DYNAMO_CDC_PYTHON="$(cd "$venv/bin" && pwd)/python"
export DYNAMO_CDC_TANSU DYNAMO_CDC_MOTO_SERVER DYNAMO_CDC_PYTHON

step "building"
cargo build --workspace --all-targets --locked

step "Rust tests (with the tansu/moto end to end and the chaos harness's bounded profile)"
cargo test --workspace --locked -- --include-ignored

step "end-to-end check with pyarrow, DuckDB and boto3"
"$venv/bin/python" scripts/e2e_check.py --bin target/debug/dynamo-cdc

step "end-to-end check on DynamoDB Streams served by moto"
"$venv/bin/python" scripts/moto_e2e.py --bin target/debug/dynamo-cdc

step "Parquet on s3:// (moto): SIGKILL restarts, a lister watching the bucket, awkward values"
"$venv/bin/python" scripts/s3_e2e.py --bin target/debug/dynamo-cdc

step "Spark, pyarrow and DuckDB read the same rows of a dataset, hive partitions included"
"$venv/bin/python" scripts/spark_check.py --bin target/debug/dynamo-cdc

step "Iceberg on a sqlite catalog: SIGKILL restarts, two writers, pyiceberg, DuckDB, Spark, s3://; S3 Tables' layout through a signed REST catalog"
"$venv/bin/python" scripts/rest_catalog.py --self-test
"$venv/bin/python" scripts/iceberg_e2e.py --bin target/debug/dynamo-cdc

step "initial snapshot on moto: SIGKILLs during the scan, the documented DuckDB latest-state view against a Scan"
"$venv/bin/python" scripts/snapshot_check.py --bin target/debug/dynamo-cdc

step "the demo natively: moto, tansu, the registry double, dynamo-cdc-gen load and the bridge with deploy/dynamo-cdc.toml; both sinks checked"
DYNAMO_CDC_VENV="$venv" scripts/demo.sh --duration 40 --check --bin-dir target/debug

step "the compose demo and the image, without a Docker engine: docker-compose config, healthchecks, dependencies, the bridge's config, hadolint"
"$venv/bin/python" scripts/compose_check.py --bin target/debug/dynamo-cdc --self-test

step "documentation: links resolve, every configuration key the binary accepts is documented"
"$venv/bin/python" scripts/docs_check.py --bin target/debug/dynamo-cdc --self-test
"$venv/bin/python" scripts/docs_check.py --bin target/debug/dynamo-cdc

step "metrics, health and JSON logs of a live run on moto, scraped with prometheus_client"
"$venv/bin/python" scripts/metrics_check.py --bin target/debug/dynamo-cdc
