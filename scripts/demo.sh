#!/usr/bin/env bash
# Runs the demo topology natively, without Docker: moto (DynamoDB, DynamoDB
# Streams and S3 with the bucket `lake`), the tansu Kafka broker, the testkit's
# Schema Registry double, `dynamo-cdc-gen load` writing to the table, and the
# bridge (`dynamo-cdc run`) with deploy/dynamo-cdc.toml, its endpoints set
# through the environment variables that file reads. Everything listens on
# free 127.0.0.1 ports; every process started here is stopped on exit.
#
#   scripts/demo.sh                         # until Ctrl-C
#   scripts/demo.sh --duration 40 --check   # bounded, then verify both sinks
#
# Options:
#   --duration S   run S seconds, then stop (default: until Ctrl-C; 40 with --check)
#   --bin-dir DIR  where dynamo-cdc and dynamo-cdc-gen are (default: target/debug)
#   --rate N       writes per second of the load generator (default: 20)
#   --check        once the duration has passed, verify with Python (the virtual
#                  environment ${DYNAMO_CDC_VENV:-.venv}) that changes reached
#                  both sinks: Parquet objects under s3://lake/cdc with rows of
#                  inserts, updates and deletes; the Kafka topic exists and
#                  dynamo_cdc_changes_delivered_total{sink="kafka"} > 0; no dead
#                  letters; /metrics moves between two scrapes
#   --keep         keep the scratch directory (logs, checkpoint) afterwards
#
# Environment: DYNAMO_CDC_MOTO_SERVER (default: the venv's moto_server),
# DYNAMO_CDC_TANSU (default: tansu on PATH, else ~/.cargo/bin/tansu),
# DYNAMO_CDC_VENV (default: .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"

usage() { sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

duration=""
bin_dir="target/debug"
rate=20
check=0
keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --duration)
      [ $# -ge 2 ] || die "--duration needs a number of seconds"
      [[ "$2" =~ ^[1-9][0-9]*$ ]] || die "--duration '$2' is not a whole number of seconds above 0"
      duration="$2"; shift 2 ;;
    --bin-dir)
      [ $# -ge 2 ] || die "--bin-dir needs a directory"
      bin_dir="$2"; shift 2 ;;
    --rate)
      [ $# -ge 2 ] || die "--rate needs a number of writes per second"
      [[ "$2" =~ ^[0-9]+([.][0-9]+)?$ ]] || die "--rate '$2' is not a number"
      rate="$2"; shift 2 ;;
    --check) check=1; shift ;;
    --keep) keep=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument '$1'" ;;
  esac
done
if [ "$check" = 1 ] && [ -z "$duration" ]; then
  duration=40
fi

# --- What runs, and from where ---
config="$root/deploy/dynamo-cdc.toml"
[ -f "$config" ] || die "$config is missing"
bin_dir="$(cd "$bin_dir" 2>/dev/null && pwd)" || die "--bin-dir: no such directory"
bridge="$bin_dir/dynamo-cdc"
gen="$bin_dir/dynamo-cdc-gen"
for b in "$bridge" "$gen"; do
  [ -x "$b" ] || die "$b is missing: build it with 'cargo build -p dynamo-cdc -p dynamo-cdc-testkit' (or pass --bin-dir)"
done
venv="${DYNAMO_CDC_VENV:-.venv}"
moto_server="${DYNAMO_CDC_MOTO_SERVER:-$venv/bin/moto_server}"
[ -x "$moto_server" ] || die "moto_server not found at $moto_server (set DYNAMO_CDC_MOTO_SERVER, or run scripts/test.sh, which installs it in $venv)"
tansu="${DYNAMO_CDC_TANSU:-}"
if [ -z "$tansu" ]; then
  tansu="$(command -v tansu || echo "$HOME/.cargo/bin/tansu")"
fi
[ -x "$tansu" ] || die "tansu not found at $tansu (set DYNAMO_CDC_TANSU, or 'cargo install tansu --version 0.6.0 --locked --features dynostore')"
py="$venv/bin/python"
if [ "$check" = 1 ]; then
  [ -x "$py" ] || die "--check needs the Python environment $venv (boto3, pyarrow, prometheus_client): run scripts/test.sh, or set DYNAMO_CDC_VENV"
elif [ ! -x "$py" ]; then
  py="$(command -v python3)" || die "python3 is needed (to pick free ports and poll endpoints)"
fi

# The bridge's table and topic, as the config names them.
table="$(sed -n 's/^tables *= *\["\([^"]*\)".*/\1/p' "$config" | head -1)"
[ -n "$table" ] || die "$config has no 'tables = [\"...\"]' line"
topic_pattern="$(sed -n 's/^topic *= *"\([^"]*\)".*/\1/p' "$config" | head -1)"
topic="${topic_pattern//\{table\}/$table}"
topic="${topic:-$table}"

# Four distinct free ports, held open together while they are picked.
read -r moto_port kafka_port registry_port metrics_port < <("$py" - <<'EOF'
import socket
socks = [socket.socket() for _ in range(4)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
EOF
)
moto_url="http://127.0.0.1:$moto_port"
kafka="127.0.0.1:$kafka_port"
registry_url="http://127.0.0.1:$registry_port"
metrics_url="http://127.0.0.1:$metrics_port"

work="$(mktemp -d "${TMPDIR:-/tmp}/dynamo-cdc-demo.XXXXXX")"
mkdir -p "$work/tansu"

# Local endpoints take any credentials; never the machine's own.
export AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo AWS_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true
unset AWS_SESSION_TOKEN AWS_PROFILE AWS_DEFAULT_PROFILE

# --- Teardown: every child, newest first, gracefully, then for good ---
pids=()
names=()
status=0
cleanup() {
  local code=$?
  if [ "$status" != 0 ]; then code=$status; fi
  trap - EXIT INT TERM
  local i
  for ((i=${#pids[@]}-1; i>=0; i--)); do
    kill -TERM "${pids[i]}" 2>/dev/null || true
    # The load generator prints its summary and the bridge commits its files
    # on SIGTERM: give each a moment before moving on.
    local waited=0
    while kill -0 "${pids[i]}" 2>/dev/null && [ $waited -lt 100 ]; do
      sleep 0.1; waited=$((waited + 1))
    done
    kill -KILL "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
  if [ -f "$work/load.log" ] && grep -q '^summary:' "$work/load.log"; then
    printf '\nload generator:\n'
    sed -n '/^summary:/,$p' "$work/load.log"
  fi
  if [ "$keep" = 1 ] || [ "$code" != 0 ]; then
    printf '\nlogs and checkpoint kept in %s\n' "$work"
  else
    rm -rf "$work"
  fi
  exit "$code"
}
trap cleanup EXIT
# Ctrl-C is how an open-ended demo ends: exit 0 then, as the load generator
# does; a bounded run that is interrupted did not finish.
trap 'if [ -n "$duration" ]; then status=130; fi; exit 0' INT
trap 'status=143; exit 143' TERM

# start NAME LOG COMMAND...: runs a child in the background, remembered for
# teardown.
start() {
  local name="$1" log="$2"
  shift 2
  "$@" >"$log" 2>&1 &
  pids+=("$!")
  names+=("$name")
}

# Fails, with the end of its log, when a child has exited.
alive() {
  local i
  for i in "${!pids[@]}"; do
    if ! kill -0 "${pids[i]}" 2>/dev/null; then
      local log="$work/${names[i]}.log"
      printf 'demo: %s exited; the end of %s:\n' "${names[i]}" "$log" >&2
      tail -n 20 "$log" >&2 || true
      status=1
      exit 1
    fi
  done
}

wait_port() {
  local port="$1" what="$2" tries=0
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    alive
    tries=$((tries + 1))
    [ $tries -lt 600 ] || die "$what did not open port $port within 60 s"
    sleep 0.1
  done
}

http_status() {
  "$py" - "$1" <<'EOF'
import sys, urllib.request, urllib.error
try:
    with urllib.request.urlopen(sys.argv[1], timeout=3) as r:
        print(r.status)
except urllib.error.HTTPError as e:
    print(e.code)
except OSError:
    print(0)
EOF
}

cat <<EOF
dynamo-cdc demo, native (no Docker); scratch directory $work
  DynamoDB, Streams, S3 (moto)  $moto_url
  Kafka (tansu)                 $kafka  (topic $topic)
  Schema Registry (double)      $registry_url
  load generator                $rate writes/s into table $table
  bridge                        $config
    metrics                     $metrics_url/metrics  (/healthz, /readyz)
    Parquet                     s3://lake/cdc on moto
  logs                          $work/*.log
EOF

start moto "$work/moto.log" "$moto_server" -H 127.0.0.1 -p "$moto_port"
wait_port "$moto_port" "moto"
# A bucket in moto: any signature will do, moto routes by the service named
# in the credential scope.
"$py" - "$moto_url" <<'EOF' || die "cannot create the bucket 'lake' in moto"
import sys, urllib.request
request = urllib.request.Request(f"{sys.argv[1]}/lake", method="PUT", data=b"", headers={
    "Authorization": "AWS4-HMAC-SHA256 Credential=demo/20260101/us-east-1/s3/aws4_request, "
                     "SignedHeaders=host, Signature=0"})
with urllib.request.urlopen(request, timeout=10) as r:
    assert r.status == 200, r.status
EOF

(cd "$work/tansu" && exec env RUST_LOG=warn "$tansu" broker \
  --listener-url "tcp://$kafka" --advertised-listener-url "tcp://$kafka" \
  --storage-engine memory://tansu/) >"$work/tansu.log" 2>&1 &
pids+=("$!"); names+=("tansu")
wait_port "$kafka_port" "tansu"

start registry "$work/registry.log" "$gen" registry --listen "127.0.0.1:$registry_port"
wait_port "$registry_port" "the schema registry double"

# The load generator creates the table (with its stream) before its first
# write; the bridge must find the table when it starts, so it comes second.
# It reads the stream from its trim horizon: no write is missed.
start load "$work/load.log" "$gen" load --endpoint-url "$moto_url" --table "$table" \
  --rate "$rate" --create
tries=0
until grep -q "table \`$table\`" "$work/load.log" 2>/dev/null; do
  alive
  tries=$((tries + 1))
  [ $tries -lt 600 ] || die "the load generator did not start writing within 60 s; see $work/load.log"
  sleep 0.1
done

start bridge "$work/bridge.log" env \
  DYNAMODB_ENDPOINT_URL="$moto_url" \
  KAFKA_BROKERS="$kafka" \
  SCHEMA_REGISTRY_URL="$registry_url" \
  PARQUET_PATH="s3://lake/cdc" \
  S3_ENDPOINT_URL="$moto_url" \
  CHECKPOINT_PATH="$work/checkpoint.json" \
  ICEBERG_CATALOG_URI="sqlite://$work/iceberg-catalog.db" \
  ICEBERG_WAREHOUSE="s3://lake/warehouse" \
  METRICS_LISTEN="127.0.0.1:$metrics_port" \
  "$bridge" run --config "$config"
tries=0
until [ "$(http_status "$metrics_url/readyz")" = 200 ]; do
  alive
  tries=$((tries + 1))
  [ $tries -lt 120 ] || die "the bridge was not ready within 60 s; see $work/bridge.log"
  sleep 0.5
done
started=$SECONDS
if [ -n "$duration" ]; then
  echo "running for $duration s (Ctrl-C stops earlier)"
else
  echo "running; Ctrl-C stops everything"
fi
while [ -z "$duration" ] || [ $((SECONDS - started)) -lt "$duration" ]; do
  alive
  sleep 1
done

if [ "$check" = 1 ]; then
  echo "checking both sinks and the metrics"
  if ! "$py" - "$moto_url" "$kafka" "$metrics_url" "$table" "$topic" <<'EOF'
"""Changes reached both sinks, and /metrics moves."""
import io, socket, struct, sys, time, urllib.request

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
from prometheus_client.parser import text_string_to_metric_families

moto_url, kafka, metrics_url, table, topic = sys.argv[1:6]
results = []


def check(name, ok, detail=""):
    results.append(bool(ok))
    print(f"  {'ok  ' if ok else 'FAIL'} {name}" + ("" if ok else f": {detail}"))


def delivered(sink=None):
    """Sum of dynamo_cdc_changes_delivered_total (of one sink), and of dead letters."""
    with urllib.request.urlopen(f"{metrics_url}/metrics", timeout=5) as r:
        text = r.read().decode()
    total = dead = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "dynamo_cdc_changes_delivered_total" and sink in (None, s.labels.get("sink")):
                total += s.value
            if s.name == "dynamo_cdc_dead_letters_total":
                dead += s.value
    return total, dead


def topics():
    """Topic names from a Kafka Metadata request (v0, all topics)."""
    host, port = kafka.rsplit(":", 1)
    client = b"demo-check"
    body = struct.pack(">hhih", 3, 0, 1, len(client)) + client + struct.pack(">i", 0)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(struct.pack(">i", len(body)) + body)
        size = struct.unpack(">i", s.recv(4, socket.MSG_WAITALL))[0]
        data = b""
        while len(data) < size:
            chunk = s.recv(size - len(data))
            if not chunk:
                raise OSError("the broker closed the connection")
            data += chunk
    at = 4  # correlation id

    def take(fmt):
        nonlocal at
        v = struct.unpack_from(fmt, data, at)
        at += struct.calcsize(fmt)
        return v[0]

    def string():
        nonlocal at
        n = take(">h")
        v = data[at:at + n].decode()
        at += max(n, 0)
        return v

    for _ in range(take(">i")):  # brokers: node id, host, port
        take(">i"); string(); take(">i")
    names = {}
    for _ in range(take(">i")):
        error = take(">h")
        name = string()
        names[name] = error
        for _ in range(take(">i")):  # partitions
            take(">h"); take(">i"); take(">i")
            for _ in range(take(">i")):
                take(">i")
            for _ in range(take(">i")):
                take(">i")
    return names


s3 = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1",
                  aws_access_key_id="demo", aws_secret_access_key="demo")


def parquet_rows():
    """(files, rows, ops) of the table's Parquet objects under s3://lake/cdc."""
    files = rows = 0
    ops = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket="lake", Prefix=f"cdc/{table}/"):
        for obj in page.get("Contents", []):
            if not obj["Key"].endswith(".parquet"):
                continue
            body = s3.get_object(Bucket="lake", Key=obj["Key"])["Body"].read()
            t = pq.read_table(pa.BufferReader(body))
            files += 1
            rows += t.num_rows
            ops.update(t.column("__op").to_pylist())
    return files, rows, ops


# Parquet files are committed every 10 s: wait for them (and for Kafka) a while.
deadline = time.time() + 60
while True:
    kafka_delivered, dead = delivered("kafka")
    iceberg_delivered, _ = delivered("iceberg")
    files, rows, ops = parquet_rows()
    if (kafka_delivered > 0 and iceberg_delivered > 0 and rows > 0 and {"c", "u", "d"} <= ops) \
            or time.time() > deadline:
        break
    time.sleep(2)
check(f"Parquet objects under s3://lake/cdc/{table}/ read by pyarrow", files > 0 and rows > 0,
      f"{files} files, {rows} rows")
check("the Parquet rows hold inserts, updates and deletes", {"c", "u", "d"} <= ops, f"ops {sorted(ops)}")
check('dynamo_cdc_changes_delivered_total{sink="kafka"} > 0', kafka_delivered > 0, f"{kafka_delivered}")
check('dynamo_cdc_changes_delivered_total{sink="iceberg"} > 0 (committed to the changelog table)',
      iceberg_delivered > 0, f"{iceberg_delivered}")
try:
    names = topics()
    check(f"the Kafka topic {topic} exists", names.get(topic) == 0, f"topics {names}")
except OSError as e:
    check(f"the Kafka topic {topic} exists", False, f"metadata request failed: {e}")
check("no dead letters", dead == 0, f"{dead}")

# Two scrapes: the delivered counter grows while the load runs.
first, _ = delivered()
deadline = time.time() + 30
second = first
while second <= first and time.time() < deadline:
    time.sleep(2)
    second, _ = delivered()
check("/metrics moves: the delivered counter grew between two scrapes", second > first,
      f"{first} then {second}")
print(f"  Parquet: {files} files, {rows} rows; delivered to Kafka: {kafka_delivered:.0f}, "
      f"to Iceberg: {iceberg_delivered:.0f}")
failed = results.count(False)
print(f"demo check: {len(results) - failed} passed, {failed} failed")
sys.exit(1 if failed else 0)
EOF
  then
    status=1
    die "the check failed; logs are kept in $work"
  fi
fi
