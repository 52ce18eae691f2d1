#!/usr/bin/env python3
"""End-to-end check of the Iceberg sink: a SQL catalog on a sqlite file.

Two DynamoDB tables on a moto server, with awkward values, stream into one
Iceberg table each (`[sinks.iceberg]`, warehouse on the local disk). The
`dynamo-cdc` binary is killed with SIGKILL four times and stopped once with
SIGTERM while a writer keeps changing items, then run until idle. Then:

- every table is read with pyiceberg's `SqlCatalog` (the same catalog name)
  and with DuckDB's `iceberg_scan` (the extension loaded from its wheel's
  file, no network), and compared with the stream read through boto3:
  every change exactly once, value for value;
- every snapshot summary carries `dynamo-cdc.positions`, and the highest
  position per shard is the last change of that shard in the table;
- every data file's manifest entry states its columns' value and null
  counts and bounds truly (against the file read with pyarrow), and a
  filter on `__source_ts_ms` lets pyiceberg skip files by those bounds;
- two bridges run at once on the same tables (two writers on each table,
  with their own checkpoints): every change is still there exactly once;
- the current-state view of docs/iceberg.md, in DuckDB and in Spark SQL, equals
  a boto3 Scan of each table;
- the warehouse on moto's S3 (`s3://`): the same rows, read back with
  pyiceberg from the bucket;
- last, S3 Tables' layout: a REST catalog (scripts/rest_catalog.py) that
  checks every request's SigV4 signature with botocore and gives each table
  a bucket of its own; the sink, configured with the table bucket's ARN,
  writes each table's files into that table's bucket, and a second run from
  an empty checkpoint resumes from the positions in the tables' snapshots
  and adds nothing.

    python scripts/iceberg_e2e.py --bin target/debug/dynamo-cdc

The last line is `iceberg e2e: N passed, M failed`; the exit code is 1 when
anything failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import e2e_check as ec  # noqa: E402
import moto_e2e as me  # noqa: E402
from rest_catalog import RestCatalog  # noqa: E402

import duckdb  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from pyiceberg.catalog.sql import SqlCatalog  # noqa: E402

CATALOG_NAME = "dynamo_cdc"
NAMESPACE = "cdc"
BUCKET = "iceberg-lake"
FIELD_PROPERTY = "dynamo-cdc.field."
KEYS = {me.TABLES[0]: ["pk", "sk"], me.TABLES[1]: ["id"]}


def source_section(moto: me.Moto) -> str:
    """The `[source]` of every run here: both tables on the moto server, polled quickly."""
    return (
        "[source]\n"
        'kind = "dynamodb"\n'
        f"tables = {json.dumps(list(me.TABLES))}\n"
        f'region = "{me.REGION}"\n'
        f"endpoint_url = {ec.toml_string(moto.url)}\n"
        "poll_interval_ms = 50\nidle_poll_interval_ms = 200\nshard_refresh_interval_ms = 1000\n\n"
    )


def write_config(workdir: Path, moto: me.Moto, name: str, warehouse: str, checkpoint: str,
                 catalog: Path, s3: bool = False) -> Path:
    config = workdir / f"{name}.toml"
    store = (f'region = "{me.REGION}"\nendpoint_url = {ec.toml_string(moto.url)}\n' if s3 else "")
    config.write_text(
        source_section(moto)
        + "[sinks.iceberg]\n"
        'catalog = "sql"\n'
        f"catalog_uri = {ec.toml_string('sqlite://' + str(catalog))}\n"
        f'catalog_name = "{CATALOG_NAME}"\n'
        f"warehouse = {ec.toml_string(warehouse)}\n"
        + store
        + f'namespace = "{NAMESPACE}"\n'
        'table = "{table}"\n'
        "commit_interval_ms = 300\n\n"
        "[checkpoint]\n"
        f"path = {ec.toml_string(checkpoint)}\n"
    )
    return config


TABLE_BUCKET_ARN = f"arn:aws:s3tables:{me.REGION}:123456789012:bucket/analytics"


def write_rest_config(workdir: Path, moto: me.Moto, catalog: RestCatalog, name: str, checkpoint: str) -> Path:
    """An S3 Tables configuration: the table bucket's ARN as the warehouse, signed requests."""
    config = workdir / f"{name}.toml"
    config.write_text(
        source_section(moto)
        + "[sinks.iceberg]\n"
        'catalog = "rest"\n'
        f"catalog_uri = {ec.toml_string(catalog.url)}\n"
        f"warehouse = {ec.toml_string(TABLE_BUCKET_ARN)}\n"
        f"endpoint_url = {ec.toml_string(moto.url)}\n"
        f'namespace = "{NAMESPACE}"\n'
        "commit_interval_ms = 300\n\n"
        "[sinks.iceberg.properties]\n"
        '"rest.sigv4-enabled" = "true"\n'
        '"rest.signing-name" = "s3tables"\n'
        f'"rest.signing-region" = "{me.REGION}"\n\n'
        "[checkpoint]\n"
        f"path = {ec.toml_string(checkpoint)}\n"
    )
    return config


def check_table_buckets(catalog: RestCatalog, moto: me.Moto) -> list:
    """Each table lives in a bucket of its own, which holds its data files."""
    check = ec.Check("S3 Tables: each table's data files are in its own --table-s3 bucket")
    s3 = moto.client("s3")
    buckets = set()
    for dynamodb_table in me.TABLES:
        table = catalog.catalog.load_table(f"{NAMESPACE}.{dynamodb_table}")
        location = table.metadata.location.rstrip("/")
        bucket = location.removeprefix("s3://")
        if not location.startswith("s3://") or "/" in bucket or not bucket.endswith("--table-s3"):
            check.problem(f"{dynamodb_table}: location {location} is not a bucket of its own")
            continue
        buckets.add(bucket)
        files = [task.file.file_path for task in table.scan().plan_files()]
        outside = [f for f in files if not f.startswith(location + "/data/")]
        if not files or outside:
            check.problem(f"{dynamodb_table}: {len(files)} data files, outside {location}/data/: {outside[:3]}")
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="data/").get("Contents", [])]
        if len([k for k in keys if k.endswith(".parquet")]) < len(files):
            check.problem(f"{dynamodb_table}: the bucket {bucket} holds fewer data files than the table names")
    if len(buckets) != len(me.TABLES):
        check.problem(f"{len(me.TABLES)} tables share {len(buckets)} buckets")
    signed = ec.Check("S3 Tables: every catalog request carried a valid SigV4 signature for s3tables")
    if catalog.requests == 0 or catalog.verified != catalog.requests or catalog.rejected:
        signed.problem(f"{catalog.requests} requests, {catalog.verified} verified, {catalog.rejected} rejected")
    return [check, signed]


def s3_tables(binary: Path, workdir: Path, moto: me.Moto) -> list:
    catalog = RestCatalog(workdir, moto, TABLE_BUCKET_ARN, me.REGION)
    try:
        out = workdir / "out-s3tables"
        config = write_rest_config(workdir, moto, catalog, "s3tables", str(out / "checkpoint.json"))
        checks = [exits(me.run_until_idle(binary, config, workdir, "s3tables-run"), 3,
                        "the run into S3 Tables' layout")]
        checks += check_tables(catalog.catalog, moto, "S3 Tables", duck=False)
        checks += check_table_buckets(catalog, moto)
        # From an empty checkpoint: the positions come from the tables'
        # snapshots (through the signed catalog), so reading resumes after
        # them: nothing is added twice, and the bad record, which lies
        # before them, is not read (nor dead-lettered) again.
        again = write_rest_config(workdir, moto, catalog, "s3tables-again", str(out / "again" / "checkpoint.json"))
        checks.append(exits(me.run_until_idle(binary, again, workdir, "s3tables-again"), 0,
                            "the run into S3 Tables' layout from an empty checkpoint"))
        checks += check_tables(catalog.catalog, moto, "S3 Tables, after a run from an empty checkpoint", duck=False)
        return checks
    finally:
        catalog.stop()


def open_catalog(catalog: Path, warehouse: str, moto: me.Moto | None = None) -> SqlCatalog:
    props = {"uri": f"sqlite:///{catalog}", "warehouse": warehouse}
    if moto is not None:
        props.update({"s3.endpoint": moto.url, "s3.access-key-id": "test",
                      "s3.secret-access-key": "test", "s3.region": me.REGION})
    return SqlCatalog(CATALOG_NAME, **props)


def specs_of(table) -> dict:
    """Column name -> ColumnSpec, from the forms the sink records per field."""
    arrow = table.schema().as_arrow()
    specs = {}
    for key, value in table.properties.items():
        if not key.startswith(FIELD_PROPERTY):
            continue
        name = key[len(FIELD_PROPERTY):]
        form = json.loads(value)
        field = arrow.field(name)
        specs[name] = ec.ColumnSpec(name, form["attribute"], form["type"], field.type)
    return specs


def decode_row(row: dict, specs: dict, notes: list, unioned: bool = False) -> dict:
    """Attribute -> tagged value; an attribute may span fields of several forms."""
    image = {}
    for spec in specs.values():
        value = ec.top_level(ec.decode_cell(spec, row.get(spec.column), notes, unioned))
        if value is None:
            continue
        if spec.attr in image:
            notes.append(f"attribute {spec.attr} has values in two fields")
        image[spec.attr] = value
    return image


def compare_rows(rows: list, specs: dict, expected: dict, name: str, unioned: bool = False) -> list:
    """Every expected change exactly once, each row's values and meta columns."""
    once = ec.Check(f"{name}: every change exactly once ({len(expected)} changes)")
    values = ec.Check(f"{name}: every value as boto3's TypeDeserializer reads it")
    seen = {}
    for row in rows:
        key = (row.get("__table"), row.get("__shard_id"), row.get("__sequence_number"))
        seen[key] = seen.get(key, 0) + 1
        change = expected.get(key)
        label = ec.row_label(row, "?")
        if change is None:
            once.mismatch(label, "(row)", "a change of the stream", "a row for something else")
            continue
        for column, want in ec.expected_meta(change).items():
            if not ec.same_scalar(want, row.get(column)):
                values.mismatch(label, column, repr(want), repr(row.get(column)))
        notes = []
        got = decode_row(row, specs, notes, unioned)
        want = {a: ec.top_level(v) for a, v in change.image.items() if ec.top_level(v) is not None}
        for attr in sorted(set(got) | set(want)):
            if got.get(attr) != want.get(attr):
                values.mismatch(label, attr, ec.render(want.get(attr)), ec.render(got.get(attr)))
        for note in notes:
            values.mismatch(label, "(row)", "a well-formed value", note)
    for key, change in expected.items():
        if seen.get(key, 0) != 1:
            once.mismatch(change.row_id, "(row)", "one row", f"{seen.get(key, 0)} rows")
    return [once, values]


def expected_by_table(moto: me.Moto) -> dict:
    expected, _bad = me.expected_changes(me.read_stream(moto))
    out = {t: {} for t in me.TABLES}
    for (table, shard, seq), change in expected.items():
        out[table][(table, shard, seq)] = change
    return out


def load_extension(con) -> None:
    import duckdb_extension_avro as avro
    import duckdb_extension_iceberg as iceberg
    for module, name in ((avro, "avro"), (iceberg, "iceberg")):
        files = list(Path(module.__file__).parent.rglob(f"{name}.duckdb_extension"))
        if not files:
            raise RuntimeError(f"no {name}.duckdb_extension in {module.__file__}")
        con.execute(f"LOAD '{files[0]}'")


def duckdb_rows(metadata_location: str) -> list:
    con = duckdb.connect()
    load_extension(con)
    relation = con.execute("SELECT * FROM iceberg_scan(?)", [metadata_location])
    names = [d[0] for d in relation.description]
    return [dict(zip(names, r)) for r in relation.fetchall()]


def check_tables(catalog: SqlCatalog, moto: me.Moto, name: str, duck: bool = True) -> list:
    checks = []
    expected = expected_by_table(moto)
    for dynamodb_table in me.TABLES:
        table = catalog.load_table(f"{NAMESPACE}.{dynamodb_table}")
        specs = specs_of(table)
        rows = table.scan().to_arrow().to_pylist()
        checks += compare_rows(rows, specs, expected[dynamodb_table],
                               f"{name}: {dynamodb_table} via pyiceberg")
        if duck:
            checks += compare_rows(duckdb_rows(table.metadata_location), specs,
                                   expected[dynamodb_table], f"{name}: {dynamodb_table} via DuckDB iceberg_scan")
        checks.append(check_summaries(table, rows, f"{name}: {dynamodb_table}"))
    return checks


def decode_bound(raw: bytes, type_name: str):
    """Iceberg's single-value serialization of the types bounds are kept for."""
    if type_name == "long":
        return int.from_bytes(raw, "little", signed=True)
    if type_name == "boolean":
        return raw[0] != 0
    if type_name == "string":
        return raw.decode("utf-8")
    return None


def local_path(location: str) -> str:
    return location[len("file://"):] if location.startswith("file://") else location


def check_file_metrics(catalog: SqlCatalog, name: str) -> list:
    """Manifest counts and bounds against the files; bounds used to skip files."""
    checks = []
    pruned = ec.Check(f"{name}: a filter on __source_ts_ms skips files by their bounds")
    skipped_somewhere = False
    for dynamodb_table in me.TABLES:
        table = catalog.load_table(f"{NAMESPACE}.{dynamodb_table}")
        schema = table.schema()
        top = {f.field_id: f for f in schema.fields}
        check = ec.Check(f"{name}: {dynamodb_table} manifest counts and bounds match its files")
        files = table.inspect.files().to_pylist()
        if not files:
            check.problem("no data files")
        ts_id = schema.find_field("__source_ts_ms").field_id
        ts_upper = {}
        for entry in files:
            path = entry["file_path"]
            data = pq.read_table(local_path(path))
            by_id = {}
            for field in data.schema:
                meta = field.metadata or {}
                if b"PARQUET:field_id" in meta:
                    by_id[int(meta[b"PARQUET:field_id"])] = data.column(field.name)
            if entry["record_count"] != data.num_rows:
                check.mismatch(path, "record_count", str(data.num_rows), str(entry["record_count"]))
            values = dict(entry["value_counts"] or [])
            nulls = dict(entry["null_value_counts"] or [])
            lower = dict(entry["lower_bounds"] or [])
            upper = dict(entry["upper_bounds"] or [])
            for fid, column in by_id.items():
                if fid not in top or not top[fid].field_type.is_primitive:
                    continue
                if values.get(fid) != data.num_rows:
                    check.mismatch(path, f"value_counts[{top[fid].name}]", str(data.num_rows), str(values.get(fid)))
                if fid in nulls and nulls[fid] != column.null_count:
                    check.mismatch(path, f"null_value_counts[{top[fid].name}]", str(column.null_count), str(nulls[fid]))
                type_name = str(top[fid].field_type)
                present = [v for v in column.to_pylist() if v is not None]
                for bounds, pick, label in ((lower, min, "lower"), (upper, max, "upper")):
                    if fid not in bounds:
                        continue
                    bound = decode_bound(bounds[fid], type_name)
                    if bound is None:
                        check.problem(f"{path}: a {label} bound on {top[fid].name}, of type {type_name}")
                        continue
                    if not present:
                        check.problem(f"{path}: a {label} bound on {top[fid].name}, which has no values")
                        continue
                    actual = pick(present)
                    # Long strings' bounds are truncated: a shorter prefix
                    # below, a prefix incremented above. Others are exact.
                    holds = (bound <= actual if label == "lower" else bound >= actual) \
                        if type_name == "string" else bound == actual
                    if not holds:
                        check.mismatch(path, f"{label} bound of {top[fid].name}", repr(actual), repr(bound))
            if ts_id not in lower or ts_id not in upper:
                check.problem(f"{path}: no bounds on __source_ts_ms")
            else:
                ts_upper[path] = decode_bound(upper[ts_id], "long")
        checks.append(check)
        if len(set(ts_upper.values())) < 2:
            continue
        # The file that ends first cannot hold a later change.
        cut = min(ts_upper.values())
        earliest = [p for p, u in ts_upper.items() if u == cut]
        planned = [t.file.file_path for t in table.scan(row_filter=f"__source_ts_ms > {cut}").plan_files()]
        wrongly = [p for p in earliest if p in planned]
        if wrongly:
            pruned.problem(f"{dynamodb_table}: planned {wrongly[0]}, whose changes all end at {cut}")
        else:
            skipped_somewhere = True
        every = table.scan().to_arrow()
        want = sorted(r for r in every.column("__sequence_number").to_pylist()
                      if r is not None and every.num_rows)
        later = [row["__sequence_number"] for row in every.to_pylist() if row["__source_ts_ms"] > cut]
        got = table.scan(row_filter=f"__source_ts_ms > {cut}").to_arrow()
        if sorted(got.column("__sequence_number").to_pylist()) != sorted(later) or not want:
            pruned.problem(f"{dynamodb_table}: the filtered scan returned other rows than the filter selects")
    if not skipped_somewhere:
        pruned.problem("no table had files with different __source_ts_ms bounds to skip")
    checks.append(pruned)
    return checks


def check_summaries(table, rows: list, name: str) -> ec.Check:
    """Each snapshot names its positions; the highest per shard is the table's last row."""
    check = ec.Check(f"{name}: snapshot summaries carry the positions of their rows")
    highest = {}
    snapshots = table.metadata.snapshots
    if not snapshots:
        check.problem("no snapshots")
    for snapshot in snapshots:
        props = snapshot.summary.additional_properties if snapshot.summary else {}
        if props.get("added-data-files") in (None, "0"):
            continue
        text = props.get("dynamo-cdc.positions")
        if text is None:
            check.problem(f"snapshot {snapshot.snapshot_id} adds files but has no dynamo-cdc.positions")
            continue
        for shard, seq in json.loads(text).items():
            highest[shard] = max(highest.get(shard, seq), seq)
    last = {}
    for row in rows:
        shard, seq = row["__shard_id"], row["__sequence_number"]
        last[shard] = max(last.get(shard, seq), seq)
    if highest != last:
        check.mismatch("positions", "(summary)", json.dumps(last, sort_keys=True)[:300],
                       json.dumps(highest, sort_keys=True)[:300])
    return check


# ---------------------------------------------------------------------------
# The current-state view
# ---------------------------------------------------------------------------


def current_state_sql(source: str, keys: list, exclude: str) -> str:
    """The view of docs/iceberg.md: the latest row per key by position, deletes removed."""
    key_list = ", ".join(keys)
    return (
        f"SELECT * {exclude} FROM ("
        f" SELECT *, row_number() OVER (PARTITION BY {key_list} ORDER BY lpad(__sequence_number, 40, '0') DESC) AS __rank"
        f" FROM {source}) AS latest"
        " WHERE __rank = 1 AND __op <> 'd'"
    )


def key_of(image: dict, table: str) -> tuple:
    """An item's key, with numbers compared by value (-0.000 is 0)."""
    def one(value):
        if isinstance(value, tuple) and value[0] == "N":
            return ("N", str(value[1].normalize() if value[1] != 0 else Decimal(0)))
        return repr(value)
    return tuple(one(image.get(k)) for k in KEYS[table])


def scan_items(moto: me.Moto, table: str) -> dict:
    ddb = moto.client("dynamodb")
    raw = []
    ddb.meta.events.register("after-call.dynamodb.Scan", lambda http_response, **_: raw.append(http_response.content))
    items = {}
    kwargs = {"TableName": table}
    while True:
        raw.clear()
        page = ddb.scan(**kwargs)
        for wire in json.loads(raw[-1], parse_float=Decimal)["Items"]:
            try:
                image = {n: ec.top_level(ec.tag(ec.EXPECT_DESERIALIZER.deserialize(ec.from_wire(av))))
                         for n, av in wire.items()}
            except Exception:  # noqa: BLE001 - more than 38 digits: dead-lettered, not in the table
                continue
            image = {n: v for n, v in image.items() if v is not None}
            items[key_of(image, table)] = image
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def compare_state(rows: list, specs: dict, items: dict, table: str, name: str) -> ec.Check:
    check = ec.Check(f"{name}: the current-state view of {table} equals a boto3 Scan ({len(items)} items)")
    got = {}
    for row in rows:
        notes = []
        image = decode_row(row, specs, notes, unioned=True)
        for note in notes:
            check.problem(note)
        got[key_of(image, table)] = image
    for key in sorted(set(got) | set(items)):
        if got.get(key) != items.get(key):
            check.mismatch(str(key)[:80], "(item)", str(items.get(key))[:200], str(got.get(key))[:200])
    return check


def check_current_state(catalog: SqlCatalog, moto: me.Moto, workdir: Path) -> list:
    checks = []
    spark = None
    try:
        for table_name in me.TABLES:
            table = catalog.load_table(f"{NAMESPACE}.{table_name}")
            specs = specs_of(table)
            items = scan_items(moto, table_name)
            con = duckdb.connect()
            load_extension(con)
            con.execute(f"CREATE VIEW changelog AS SELECT * FROM iceberg_scan('{table.metadata_location}')")
            sql = current_state_sql("changelog", KEYS[table_name], "EXCLUDE (__rank)")
            relation = con.execute(sql)
            names = [d[0] for d in relation.description]
            rows = [dict(zip(names, r)) for r in relation.fetchall()]
            checks.append(compare_state(rows, specs, items, table_name, "DuckDB"))
            # Spark SQL: the same statement over the table's current data
            # files (the Iceberg runtime jar needs a network this check does
            # not have; with it, the source is the catalog's table).
            if spark is None:
                spark = start_spark()
            files = [task.file.file_path for task in table.scan().plan_files()]
            spark.read.option("mergeSchema", "true").parquet(*files).createOrReplaceTempView("changelog")
            frame = spark.sql(current_state_sql("changelog", KEYS[table_name], "")).drop("__rank")
            rows = [r.asDict(recursive=True) for r in frame.collect()]
            rows = [{k: (bytes(v) if isinstance(v, bytearray) else v) for k, v in r.items()} for r in rows]
            for r in rows:
                for k, v in r.items():
                    if isinstance(v, list):
                        r[k] = [bytes(x) if isinstance(x, bytearray) else x for x in v]
            checks.append(compare_state(rows, specs, items, table_name, "Spark SQL"))
    finally:
        if spark is not None:
            spark.stop()
    return checks


def start_spark():
    from pyspark.sql import SparkSession
    return (SparkSession.builder.master("local[1]").appName("iceberg-e2e")
            .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "2")
            .getOrCreate())


# ---------------------------------------------------------------------------
# Scenarios
# ---------------------------------------------------------------------------


def exits(result: subprocess.CompletedProcess, want: int, what: str) -> ec.Check:
    check = ec.Check(f"{what} exits {want}")
    if result.returncode != want:
        check.problem(f"exit code {result.returncode}: {result.stderr[-2000:]}")
    return check


def two_writers(binary: Path, workdir: Path, moto: me.Moto, catalog: Path, warehouse: str) -> list:
    """Two bridges at once, each with its own checkpoint, on the same tables."""
    ddb = moto.client("dynamodb")
    writer = me.Writer(ddb)
    writer.start()
    configs = [write_config(workdir, moto, f"writer{i}", warehouse,
                            str(workdir / "out" / f"writer{i}.checkpoint.json"), catalog) for i in (1, 2)]
    children = [subprocess.Popen([str(binary), "run", "--config", str(c), "--until-idle", "3"], cwd=workdir,
                                 env=me.environment(), stdout=subprocess.DEVNULL,
                                 stderr=open(workdir / f"writer{i}.stderr", "wb"))
                for i, c in enumerate(configs, 1)]
    import time
    time.sleep(4)
    writer.halt.set()
    writer.join()
    check = ec.Check("two writers at once: both finish (exit 0)")
    for i, child in enumerate(children, 1):
        try:
            code = child.wait(timeout=240)
        except subprocess.TimeoutExpired:
            child.kill()
            code = "timeout"
        if code != 0:
            check.problem(f"writer {i}: exit {code}; see {workdir / f'writer{i}.stderr'}")
    # Whether their commits collided depends on timing; the sink's own tests
    # make the collision happen for certain. Here the table must be exact
    # either way (checked by the caller).
    return [check]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin", required=True, type=Path, help="the dynamo-cdc binary")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--skip-spark", action="store_true", help="leave out the Spark SQL view check")
    args = parser.parse_args(argv)
    binary = args.bin.resolve()
    workdir = Path(tempfile.mkdtemp(prefix="iceberg-e2e-"))
    checks = []
    moto = me.Moto(workdir)
    try:
        ddb = moto.client("dynamodb")
        me.create_tables(ddb)
        me.write_phase_one(ddb)
        catalog_file = workdir / "out" / "catalog.db"
        warehouse = str(workdir / "out" / "warehouse")
        config = write_config(workdir, moto, "local", warehouse, str(workdir / "out" / "checkpoint.json"),
                              catalog_file)

        checks.append(exits(me.run_until_idle(binary, config, workdir, "run1"), 3,
                            "the first run (one record dead-lettered)"))
        catalog = open_catalog(catalog_file, warehouse)
        checks += check_tables(catalog, moto, "after the first run")

        checks += me.crash_while_writing(binary, config, workdir, ddb, seed=13)
        checks.append(exits(me.run_until_idle(binary, config, workdir, "run-last"), 0,
                            "the run after the crashes"))
        checks += check_tables(open_catalog(catalog_file, warehouse), moto, "after SIGKILL restarts")
        checks += check_file_metrics(open_catalog(catalog_file, warehouse), "after SIGKILL restarts")

        checks += two_writers(binary, workdir, moto, catalog_file, warehouse)
        checks += check_tables(open_catalog(catalog_file, warehouse), moto, "after two writers")

        if not args.skip_spark:
            checks += check_current_state(open_catalog(catalog_file, warehouse), moto, workdir)

        # The warehouse on moto's S3.
        moto.client("s3").create_bucket(Bucket=BUCKET)
        # Its own directory: the dead letters of the runs above are kept
        # beside their checkpoint, and would make this run's one a repeat.
        s3_catalog = workdir / "out-s3" / "catalog.db"
        s3_warehouse = f"s3://{BUCKET}/warehouse"
        s3_config = write_config(workdir, moto, "s3", s3_warehouse, str(workdir / "out-s3" / "checkpoint.json"),
                                 s3_catalog, s3=True)
        checks.append(exits(me.run_until_idle(binary, s3_config, workdir, "s3-run"), 3, "the run into s3://"))
        checks += check_tables(open_catalog(s3_catalog, s3_warehouse, moto), moto, "on S3", duck=False)

        checks += s3_tables(binary, workdir, moto)
    finally:
        moto.stop()
        passed, failed = ec.print_report(checks, 20)
        print(f"iceberg e2e: {passed} passed, {failed} failed")
        if args.keep or failed:
            print(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
