#!/usr/bin/env python3
"""End-to-end check of the dynamodb source against a moto server.

Starts `moto_server` on a free loopback port, creates two tables with
NEW_AND_OLD_IMAGES streams, writes inserts, updates and deletes with awkward
values through boto3, and runs the `dynamo-cdc` binary on them. The
reference is the stream itself, read independently through boto3 (raw wire
JSON, decoded with boto3's TypeDeserializer); the Parquet output is read with
pyarrow and must hold every change exactly once, in order, value for value.
Then a writer keeps changing items while the binary is killed with SIGKILL
several times and restarted; after a last run the check is repeated.

    python scripts/moto_e2e.py --bin target/debug/dynamo-cdc

The last line is `moto e2e: N passed, M failed`; the exit code is 1 when
anything failed.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import e2e_check as ec  # noqa: E402  (shared decoding and comparison)

import boto3  # noqa: E402

REGION = "us-east-1"
TABLES = ("e2e_orders", "e2e_people")
CREDENTIALS = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}


_PICKED: set[int] = set()


def free_port() -> int:
    """A loopback port free now, below the kernel's ephemeral range: the
    kernel never hands those out for port 0 or for the source ports of
    outgoing connections, so no client running meanwhile takes it before
    its server binds it. Never the same port twice in a process."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            ceiling = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        ceiling = 32768
    floor = 12000
    if ceiling <= floor + 100:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    span = ceiling - floor
    start = (os.getpid() * 7919 + len(_PICKED)) % span
    for step in range(span):
        port = floor + (start + step) % span
        if port in _PICKED:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _PICKED.add(port)
        return port
    raise RuntimeError(f"no free loopback port between {floor} and {ceiling}")


class Moto:
    """A moto server process on a free loopback port."""

    def __init__(self, workdir: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        server = Path(sys.executable).parent / "moto_server"
        self.log = open(workdir / "moto.log", "wb")
        self.process = subprocess.Popen(
            [str(server), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 30
        while True:
            try:
                self.client("dynamodb").list_tables()
                return
            except Exception:  # noqa: BLE001 - not up yet
                if time.time() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"moto_server did not start; see {workdir / 'moto.log'}")
                time.sleep(0.2)

    def client(self, service: str):
        return boto3.client(service, endpoint_url=self.url, region_name=REGION, **CREDENTIALS)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


# ---------------------------------------------------------------------------
# Writing awkward changes
# ---------------------------------------------------------------------------


def create_tables(ddb) -> None:
    ddb.create_table(
        TableName=TABLES[0],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                              {"AttributeName": "sk", "AttributeType": "N"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    ddb.create_table(
        TableName=TABLES[1],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "B"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )


def awkward_orders() -> list:
    """Items whose values probe the type mapping (wire form)."""
    big = "9" * 38
    return [
        {"pk": {"S": "unicode ✓ é 日本 😀"}, "sk": {"N": "1"}, "note": {"S": ""},
         "quote": {"S": 'a "quoted" \\ back\nslash\ttab \u0001'}},
        {"pk": {"S": "numbers"}, "sk": {"N": "-0.000"},
         "big": {"N": big}, "neg": {"N": "-" + big}, "tiny": {"N": "1E-130"},
         "huge": {"N": "9.9999999999999999999999999999999999999E+125"},
         "frac": {"N": "1.50"}, "exp": {"N": "1e3"}, "lead": {"N": "0012"}},
        {"pk": {"S": "binary"}, "sk": {"N": "2"}, "b": {"B": base64.b64decode("AAEC/w==")},
         "empty_b": {"B": b""}, "bs": {"BS": [b"\x02", b"\x01", b"\xff\x00"]}},
        {"pk": {"S": "sets"}, "sk": {"N": "3"}, "ss": {"SS": ["b", "a", "é", "Z"]},
         "ns": {"NS": ["10", "-2", "3.5", "1e2"]}},
        {"pk": {"S": "nested"}, "sk": {"N": "4"},
         "m": {"M": {"a": {"L": [{"N": "1"}, {"S": "x"}, {"NULL": True}, {"BOOL": False},
                                 {"M": {"deep": {"SS": ["q"]}, "n": {"N": "-1.0"}}}]},
                     "empty_l": {"L": []}, "empty_m": {"M": {}}}},
         "flag": {"BOOL": True}, "nothing": {"NULL": True}},
    ]


def write_phase_one(ddb) -> None:
    """Inserts, overwrites, updates and deletes with awkward values."""
    for item in awkward_orders():
        ddb.put_item(TableName=TABLES[0], Item=item)
    # Overwrite and update the same items: per-item order matters.
    ddb.put_item(TableName=TABLES[0], Item={"pk": {"S": "numbers"}, "sk": {"N": "-0.000"},
                                            "big": {"N": "1"}})
    for step in range(3):
        ddb.update_item(
            TableName=TABLES[0], Key={"pk": {"S": "nested"}, "sk": {"N": "4"}},
            UpdateExpression="SET #c = :c, flag = :f",
            ExpressionAttributeNames={"#c": "count"},
            ExpressionAttributeValues={":c": {"N": str(step)}, ":f": {"BOOL": step % 2 == 0}},
        )
    ddb.delete_item(TableName=TABLES[0], Key={"pk": {"S": "binary"}, "sk": {"N": "2"}})
    ddb.put_item(TableName=TABLES[0], Item={"pk": {"S": "binary"}, "sk": {"N": "2"}, "back": {"BOOL": True}})
    # More digits than DynamoDB allows (moto accepts it): dead-lettered, the
    # rest flows.
    ddb.put_item(TableName=TABLES[0], Item={"pk": {"S": "too-long"}, "sk": {"N": "5"},
                                            "n": {"N": "1" * 39}})
    for i in range(20):
        ddb.put_item(TableName=TABLES[1], Item={"id": {"B": bytes([i, 255 - i])},
                                                "name": {"S": f"person {i}"}, "age": {"N": str(20 + i)}})
    for i in range(0, 20, 3):
        ddb.delete_item(TableName=TABLES[1], Key={"id": {"B": bytes([i, 255 - i])}})


class Writer(threading.Thread):
    """Keeps changing a small set of items until stopped."""

    def __init__(self, ddb):
        super().__init__(daemon=True)
        self.ddb = ddb
        self.halt = threading.Event()
        self.count = 0
        self.error = None

    def run(self) -> None:
        rng = random.Random(7)
        try:
            while not self.halt.is_set():
                key = {"pk": {"S": f"live-{rng.randrange(12)}"}, "sk": {"N": str(rng.randrange(3))}}
                roll = rng.random()
                if roll < 0.15:
                    self.ddb.delete_item(TableName=TABLES[0], Key=key)
                elif roll < 0.5:
                    self.ddb.update_item(
                        TableName=TABLES[0], Key=key, UpdateExpression="SET v = :v, t = :t",
                        ExpressionAttributeValues={":v": {"N": str(self.count)},
                                                   ":t": {"S": f"tick {self.count} ✓"}},
                    )
                else:
                    item = dict(key, v={"N": f"{self.count}.25"}, tags={"SS": [f"t{self.count % 5}", "x"]})
                    self.ddb.put_item(TableName=TABLES[0], Item=item)
                self.count += 1
                time.sleep(0.004)
        except Exception as error:  # noqa: BLE001 - reported by the check
            self.error = error


# ---------------------------------------------------------------------------
# The reference: the stream read through boto3
# ---------------------------------------------------------------------------


def read_stream(moto: Moto) -> list:
    """Every record of every table's stream as raw wire JSON dicts."""
    ddb = moto.client("dynamodb")
    streams = moto.client("dynamodbstreams")
    raw_pages = []
    streams.meta.events.register(
        "after-call.dynamodbstreams.GetRecords",
        lambda http_response, **_: raw_pages.append(http_response.content),
    )
    records = []
    for table in TABLES:
        arn = ddb.describe_table(TableName=table)["Table"]["LatestStreamArn"]
        for shard in streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]:
            iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard["ShardId"],
                                                  ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
            while iterator:
                raw_pages.clear()
                page = streams.get_records(ShardIterator=iterator, Limit=1000)
                body = json.loads(raw_pages[-1], parse_float=Decimal)
                for record in body["Records"]:
                    records.append((table, shard["ShardId"], record))
                if not page["Records"]:
                    break
                iterator = page.get("NextShardIterator")
    return records


def expected_changes(records: list) -> tuple:
    """(expected rows by (table, shard, seq), dead-lettered (table, seq)) from raw records."""
    expected = {}
    bad = set()
    for table, shard, record in records:
        body = record["dynamodb"]
        seq = body["SequenceNumber"]
        op = ec.OPS[record["eventName"]]
        image_wire = body.get("OldImage" if op == "d" else "NewImage") or body["Keys"]
        try:
            image = {name: ec.tag(ec.EXPECT_DESERIALIZER.deserialize(ec.from_wire(av)))
                     for name, av in image_wire.items()}
        except Exception:  # noqa: BLE001 - more than 38 digits: boto3 refuses it too
            bad.add((table, seq))
            continue
        ts_ms = int((Decimal(body["ApproximateCreationDateTime"]) * 1000).to_integral_value())
        change = ec.ExpectedChange(table=table, shard=shard, seq=seq, event_id=record["eventID"],
                                   op=op, ttl=False, ts_ms=ts_ms, image_wire=image_wire, image=image)
        # moto numbers shards the same in every table: key by table too.
        expected[(table, shard, seq)] = change
    return expected, bad


# ---------------------------------------------------------------------------
# Running the binary and checking the output
# ---------------------------------------------------------------------------


def write_config(workdir: Path, moto: Moto) -> Path:
    config = workdir / "moto.toml"
    config.write_text(
        "[source]\n"
        'kind = "dynamodb"\n'
        f"tables = {json.dumps(list(TABLES))}\n"
        f'region = "{REGION}"\n'
        f"endpoint_url = {ec.toml_string(moto.url)}\n"
        "poll_interval_ms = 50\nidle_poll_interval_ms = 200\nshard_refresh_interval_ms = 1000\n\n"
        "[sinks.parquet]\n"
        f"path = {ec.toml_string(str(workdir / 'out' / 'parquet'))}\n"
        "max_file_age_ms = 300\nmax_rows_per_file = 50\n\n"
        "[checkpoint]\n"
        f"path = {ec.toml_string(str(workdir / 'out' / 'checkpoint.json'))}\n"
    )
    return config


def environment() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                "AWS_EC2_METADATA_DISABLED": "true"})
    return env


def run_until_idle(binary: Path, config: Path, workdir: Path, label: str) -> subprocess.CompletedProcess:
    result = subprocess.run([str(binary), "run", "--config", str(config), "--until-idle", "3"],
                            cwd=workdir, env=environment(), capture_output=True, text=True, timeout=300)
    (workdir / f"{label}.stderr").write_text(result.stderr)
    return result


def check_output(root: Path, records: list, name: str) -> list:
    expected, bad = expected_changes(records)
    schema = ec.Check(f"{name}: output files are readable and typed")
    files = ec.read_output_files(root, "auto", schema)
    by_key = {}
    for key, change in expected.items():
        by_key[(change.shard, change.seq, change.table)] = change
    once = ec.Check(f"{name}: every change exactly once ({len(expected)} changes)")
    values = ec.Check(f"{name}: every value as boto3's TypeDeserializer reads it")
    order = ec.Check(f"{name}: rows in stream order within each file")
    seen = {}
    for f in files:
        seqs = []
        for index, row in enumerate(f.rows):
            key = (row.get("__shard_id"), row.get("__sequence_number"), row.get("__table"))
            seen[key] = seen.get(key, 0) + 1
            seqs.append(int(row.get("__sequence_number") or 0))
            change = by_key.get(key)
            if change is None:
                once.mismatch(ec.row_label(row, f"{f.rel}#{index}"), "(row)", "a change of the stream",
                              "a row for something else")
                continue
            ec.compare_row(row, f.specs, change, values, ec.row_label(row, f.rel))
        if seqs != sorted(seqs):
            order.problem(f"{f.rel}: sequence numbers out of order")
    for key, change in by_key.items():
        if seen.get(key, 0) != 1:
            once.mismatch(change.row_id, "(row)", "one row", f"{seen.get(key, 0)} rows")
    letters = ec.Check(f"{name}: the {len(bad)} invalid record(s) are dead-lettered, not written")
    for table, seq in sorted(bad):
        dead = root / "_dead_letter" / f"{table}.jsonl"
        held = set()
        if dead.exists():
            held = {json.loads(line).get("sequence_number") for line in dead.read_text().splitlines()}
        if seq not in held:
            letters.problem(f"{table} record {seq} is not in {dead}")
        if any(key[1] == seq and key[2] == table for key in seen):
            letters.problem(f"{table} record {seq} was written as a row")
    return [schema, once, values, order, letters]


def crash_while_writing(binary: Path, config: Path, workdir: Path, ddb, seed: int) -> list:
    """Four SIGKILLs at random points and one SIGTERM while a writer keeps
    changing items; returns the checks of the SIGTERM and the writer."""
    checks = []
    writer = Writer(ddb)
    writer.start()
    rng = random.Random(seed)
    for round_ in range(4):
        child = subprocess.Popen([str(binary), "run", "--config", str(config)], cwd=workdir,
                                 env=environment(), stdout=subprocess.DEVNULL,
                                 stderr=open(workdir / f"kill{round_}.stderr", "wb"))
        time.sleep(rng.uniform(0.8, 2.5))
        child.send_signal(signal.SIGKILL)
        child.wait()
    # One graceful stop on SIGTERM too.
    child = subprocess.Popen([str(binary), "run", "--config", str(config)], cwd=workdir,
                             env=environment(), stdout=subprocess.DEVNULL,
                             stderr=open(workdir / "term.stderr", "wb"))
    time.sleep(1.5)
    child.send_signal(signal.SIGTERM)
    term = ec.Check("SIGTERM: exits 0 within 10 s")
    try:
        code = child.wait(timeout=10)
        if code != 0:
            term.problem(f"exit code {code}")
    except subprocess.TimeoutExpired:
        child.kill()
        term.problem("still running 10 s after SIGTERM")
    checks.append(term)
    writer.halt.set()
    writer.join()
    wrote = ec.Check(f"the writer made {writer.count} changes without error")
    if writer.error is not None or writer.count < 50:
        wrote.problem(f"writer: {writer.error!r}, {writer.count} changes")
    checks.append(wrote)
    return checks


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin", required=True, type=Path, help="the dynamo-cdc binary")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    binary = args.bin.resolve()
    workdir = Path(tempfile.mkdtemp(prefix="moto-e2e-"))
    checks = []
    moto = Moto(workdir)
    try:
        ddb = moto.client("dynamodb")
        create_tables(ddb)
        write_phase_one(ddb)
        config = write_config(workdir, moto)
        root = workdir / "out" / "parquet"

        first = run_until_idle(binary, config, workdir, "run1")
        exit_check = ec.Check("first run exits 3 (one record dead-lettered)")
        if first.returncode != 3:
            exit_check.problem(f"exit code {first.returncode}: {first.stderr[-2000:]}")
        checks.append(exit_check)
        checks += check_output(root, read_stream(moto), "after the first run")

        # Crashes while a writer keeps changing items.
        checks += crash_while_writing(binary, config, workdir, ddb, seed=11)

        last = run_until_idle(binary, config, workdir, "run-last")
        last_check = ec.Check("the run after the crashes exits 0")
        if last.returncode != 0:
            last_check.problem(f"exit code {last.returncode}: {last.stderr[-2000:]}")
        checks.append(last_check)
        checks += check_output(root, read_stream(moto), "after SIGKILL restarts")
    finally:
        moto.stop()
        passed, failed = ec.print_report(checks, 20)
        print(f"moto e2e: {passed} passed, {failed} failed")
        if args.keep or failed:
            print(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
