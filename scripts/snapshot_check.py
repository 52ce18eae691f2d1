#!/usr/bin/env python3
"""The documented latest-state view of a snapshot, run by DuckDB on real output.

Starts `moto_server`, fills a table with items, and runs the binary with
`snapshot = "initial"` (a Parquet and an Iceberg sink) while a writer keeps
changing items; the binary is killed with SIGKILL twice during the scan,
then run until idle while /metrics is scraped for the snapshot's metrics.
DuckDB then runs the SQL of the "The latest state from Parquet, exactly"
block, taken from docs/snapshots.md itself, and both DuckDB views of "The table
as it is now" in docs/iceberg.md over the Iceberg table (the latest row per key,
and the exact one reading S0 from the table's properties); each result must be
the table as a boto3 Scan shows it: the same keys, each at the same version.

    python scripts/snapshot_check.py --bin target/debug/dynamo-cdc

The last line is `snapshot check: N passed, M failed`; exit code 1 on failure.

With `--iceberg-now OUT --table T --want FILE` it only runs the exact views of
docs/iceberg.md (S0 from the table's properties; DuckDB, and Spark SQL over the
table's data files) over an Iceberg table another
test wrote, against the key-to-version map in FILE (tests/tests/snapshot_cli.rs
uses it after a repair snapshot).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import e2e_check as ec  # noqa: E402
from moto_e2e import Moto, environment, free_port  # noqa: E402

import duckdb  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

TABLE = "snap_orders"
ITEMS = 1500
# The page holding the "The latest state from Parquet, exactly" SQL.
README = Path(__file__).resolve().parent.parent / "docs" / "snapshots.md"
# The page holding the Iceberg current-state views.
ICEBERG_DOC = Path(__file__).resolve().parent.parent / "docs" / "iceberg.md"


def create_table(ddb) -> None:
    ddb.create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )


def item(i: int, version: int) -> dict:
    return {"pk": {"S": f"k{i:05} ✓"}, "v": {"N": str(version)},
            "price": {"N": f"{i}.0000000000000000000000000000001"},
            "note": {"S": f'line "{i}"\nnext'}, "tags": {"SS": ["a", f"t{i % 5}"]},
            "nested": {"M": {"l": {"L": [{"N": "-0.5"}, {"BOOL": True}]}}},
            # Items of about 2 KB: a segment's scan takes more than one
            # 1 MB page, so snapshot rows are numbered from 1,000,000 and
            # 2,000,000 (numbers of other lengths than the stream's).
            "pad": {"S": "p" * 2000}}


def fill(ddb) -> None:
    for start in range(0, ITEMS, 25):
        requests = [{"PutRequest": {"Item": item(i, 0)}} for i in range(start, min(start + 25, ITEMS))]
        ddb.batch_write_item(RequestItems={TABLE: requests})


def writer(ddb, stop: threading.Event) -> None:
    n = 1
    while not stop.is_set():
        i = (n * 7919) % (ITEMS + 40)
        if n % 7 == 0:
            ddb.delete_item(TableName=TABLE, Key={"pk": {"S": f"k{i:05} ✓"}})
        else:
            ddb.put_item(TableName=TABLE, Item=item(i, n))
        n += 1
        time.sleep(0.01)


def config(workdir: Path, moto: Moto) -> Path:
    path = workdir / "snapshot.toml"
    path.write_text(
        "[source]\n"
        'kind = "dynamodb"\n'
        f'tables = ["{TABLE}"]\n'
        'region = "us-east-1"\n'
        f"endpoint_url = {ec.toml_string(moto.url)}\n"
        "poll_interval_ms = 50\nidle_poll_interval_ms = 200\nshard_refresh_interval_ms = 1000\n"
        'snapshot = "initial"\nsnapshot_segments = 3\nsnapshot_max_rcu = 100\n\n'
        "[sinks.parquet]\n"
        f"path = {ec.toml_string(str(workdir / 'out' / 'parquet'))}\n"
        "max_file_age_ms = 300\n\n"
        "[sinks.iceberg]\n"
        'catalog = "sql"\n'
        f"catalog_uri = {ec.toml_string('sqlite://' + str(workdir / 'out' / 'catalog.db'))}\n"
        'catalog_name = "dynamo_cdc"\n'
        f"warehouse = {ec.toml_string(str(workdir / 'out' / 'warehouse'))}\n"
        'namespace = "cdc"\n'
        'table = "{table}"\n'
        "commit_interval_ms = 300\n\n"
        "[checkpoint]\n"
        f"path = {ec.toml_string(str(workdir / 'out' / 'checkpoint.json'))}\n"
    )
    return path


def snapshot_samples(port: int) -> dict:
    """The snapshot metrics of a scrape, by (name, sorted labels); empty when
    the endpoint does not answer (yet)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("dynamo_cdc_snapshot_"):
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def readme_sql() -> str:
    text = README.read_text()
    at = text.index("**The latest state from Parquet, exactly.**")
    match = re.search(r"```sql\n(.*?)```", text[at:], re.S)
    assert match, "no SQL block after the latest-state paragraph"
    return match.group(1)


def scan_versions(ddb) -> dict:
    """The table as a boto3 Scan shows it: key to version."""
    scan = []
    kwargs = {"TableName": TABLE}
    while True:
        page = ddb.scan(**kwargs)
        scan.extend(page["Items"])
        if "LastEvaluatedKey" not in page:
            break
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    return {i["pk"]["S"]: int(i["v"]["N"]) for i in scan}


def compare_view(got: dict, want: dict, name: str) -> ec.Check:
    check = ec.Check(name)
    if set(got) != set(want):
        check.problem(f"keys: {len(set(got) - set(want))} extra, {len(set(want) - set(got))} missing")
    wrong = [k for k, v in want.items() if k in got and int(got[k]) != v]
    for key in wrong[:10]:
        check.problem(f"{key}: version {got[key]} in the view, {want[key]} in the table")
    if len(wrong) > 10:
        check.problem(f"... {len(wrong)} keys at another version")
    return check


def iceberg_view_check(workdir: Path, ddb) -> ec.Check:
    """The DuckDB view of docs/iceberg.md over the Iceberg table of the same run."""
    import iceberg_e2e as ie
    from pyiceberg.catalog.sql import SqlCatalog
    name = "the documented DuckDB view (docs/iceberg.md) over the Iceberg table equals a Scan"
    warehouse = workdir / "out" / "warehouse"
    catalog = SqlCatalog("dynamo_cdc", uri=f"sqlite:///{workdir / 'out' / 'catalog.db'}",
                         warehouse=f"file://{warehouse}")
    table = catalog.load_table(f"cdc.{TABLE}")
    text = ICEBERG_DOC.read_text()
    at = text.index("## The table as it is now")
    block = re.search(r"```sql\n(.*?)```", text[at:], re.S).group(1)
    duck = next(s for s in block.split(";") if "iceberg_scan" in s)
    duck = re.sub(r"iceberg_scan\('[^']*'\)", f"iceberg_scan('{table.metadata_location}')", duck)
    duck = duck.replace("PARTITION BY pk, sk", "PARTITION BY pk").replace("orders_now", f"{TABLE}_now")
    db = duckdb.connect()
    ie.load_extension(db)
    db.execute(duck)
    got = dict(db.execute(f"SELECT pk, v FROM {TABLE}_now").fetchall())
    return compare_view(got, scan_versions(ddb), name)


def iceberg_exact_sql() -> str:
    """The DuckDB block of docs/iceberg.md that reads S0 from the table's properties."""
    text = ICEBERG_DOC.read_text()
    match = re.search(r"```sql\n(-- DuckDB \(LOAD iceberg\): the latest state after any snapshot.*?)```",
                      text, re.S)
    assert match, "no exact DuckDB view in docs/iceberg.md"
    return match.group(1)


def iceberg_exact_view(catalog_db: Path, warehouse: Path, table: str) -> dict:
    """The exact view of docs/iceberg.md (S0 from the table's properties) over
    an Iceberg table in namespace `cdc` of a sqlite catalog: key to version."""
    import iceberg_e2e as ie
    from pyiceberg.catalog.sql import SqlCatalog
    catalog = SqlCatalog("dynamo_cdc", uri=f"sqlite:///{catalog_db}", warehouse=f"file://{warehouse}")
    metadata = catalog.load_table(f"cdc.{table}").metadata_location.removeprefix("file://")
    sql = re.sub(r"'out/warehouse/[^']*\.metadata\.json'", f"'{metadata}'", iceberg_exact_sql())
    sql = sql.replace("PARTITION BY r.pk, r.sk", "PARTITION BY r.pk")
    sql = sql.replace("c.pk = r.pk AND c.sk = r.sk", "c.pk = r.pk").replace("orders_now", f"{table}_now")
    db = duckdb.connect()
    ie.load_extension(db)
    for statement in [s for s in sql.split(";") if s.strip()]:
        db.execute(statement)
    return dict(db.execute(f"SELECT pk, v FROM {table}_now").fetchall())


def spark_exact_sql() -> str:
    """The Spark SQL block of docs/iceberg.md's exact view."""
    text = ICEBERG_DOC.read_text()
    match = re.search(r"```sql\n(-- Spark SQL: the latest state after any snapshot.*?)```", text, re.S)
    assert match, "no exact Spark SQL view in docs/iceberg.md"
    return match.group(1)


def spark_exact_view(catalog_db: Path, warehouse: Path, table: str) -> dict:
    """The exact Spark SQL view of docs/iceberg.md over the table's current
    data files (Spark has no Iceberg runtime here), with S0 from pyiceberg's
    `table.properties` as the page's PySpark snippet makes it: key to version."""
    import iceberg_e2e as ie
    from pyiceberg.catalog.sql import SqlCatalog
    catalog = SqlCatalog("dynamo_cdc", uri=f"sqlite:///{catalog_db}", warehouse=f"file://{warehouse}")
    iceberg = catalog.load_table(f"cdc.{table}")
    props = iceberg.properties
    newest = props.get("dynamo-cdc.snapshot-newest")
    record = json.loads(props[f"dynamo-cdc.snapshot.{newest}"]) if newest else {"id": "", "s0": {}}
    spark = ie.start_spark()
    try:
        files = [task.file.file_path for task in iceberg.scan().plan_files()]
        spark.read.option("mergeSchema", "true").parquet(*files).createOrReplaceTempView("changelog")
        spark.createDataFrame(list(record["s0"].items()), "shard string, seq string") \
            .createOrReplaceTempView("s0")
        sql = spark_exact_sql().replace("lake.cdc.orders", "changelog").replace("<id>", record["id"])
        sql = sql.replace("PARTITION BY r.pk, r.sk", "PARTITION BY r.pk")
        sql = sql.replace("c.pk = r.pk AND c.sk = r.sk", "c.pk = r.pk").replace("orders_now", f"{table}_now")
        spark.sql(sql.strip().rstrip(";"))
        return {r["pk"]: r["v"] for r in spark.sql(f"SELECT pk, v FROM {table}_now").collect()}
    finally:
        spark.stop()


def iceberg_exact_check(workdir: Path, ddb) -> ec.Check:
    """The exact DuckDB view of docs/iceberg.md over the Iceberg table of the same run."""
    got = iceberg_exact_view(workdir / "out" / "catalog.db", workdir / "out" / "warehouse", TABLE)
    return compare_view(got, scan_versions(ddb),
                        "the exact DuckDB view (docs/iceberg.md, S0 from the table's properties) equals a Scan")


MARKER_SQL = """SELECT __op, __snapshot_id, __snapshot, count(*) FROM {rows}
                GROUP BY ALL ORDER BY ALL"""


def marker_check(workdir: Path, snapshot_id: str) -> ec.Check:
    """Snapshot rows carry the snapshot's id and one `first`, at most one
    `last` and `true` for the rest, in Parquet and in Iceberg (read by DuckDB);
    changes of the stream have no snapshot columns (Iceberg: nulls)."""
    import iceberg_e2e as ie
    from pyiceberg.catalog.sql import SqlCatalog
    check = ec.Check("snapshot rows carry the id and one first, at most one last, in Parquet and Iceberg")
    warehouse = workdir / "out" / "warehouse"
    catalog = SqlCatalog("dynamo_cdc", uri=f"sqlite:///{workdir / 'out' / 'catalog.db'}",
                         warehouse=f"file://{warehouse}")
    table = catalog.load_table(f"cdc.{TABLE}")
    db = duckdb.connect()
    ie.load_extension(db)
    sources = {
        "parquet": f"read_parquet('{workdir}/out/parquet/{TABLE}/*/snapshot-*.parquet', union_by_name = true)",
        "iceberg": f"iceberg_scan('{table.metadata_location}')",
    }
    for sink, rows in sources.items():
        counts = {}
        for op, sid, marker, n in db.execute(MARKER_SQL.format(rows=rows)).fetchall():
            counts[(op, sid, marker)] = n
        snapshot = {k: n for k, n in counts.items() if k[0] == "r"}
        stream = {k: n for k, n in counts.items() if k[0] != "r"}
        if any(sid != snapshot_id or marker not in ("first", "true", "last") for _, sid, marker in snapshot):
            check.problem(f"{sink}: snapshot rows {snapshot}")
        if snapshot.get(("r", snapshot_id, "first")) != 1 or snapshot.get(("r", snapshot_id, "last"), 0) > 1:
            check.problem(f"{sink}: markers {snapshot}")
        if any(sid is not None or marker is not None for _, sid, marker in stream):
            check.problem(f"{sink}: stream changes with snapshot columns {stream}")
        if sink == "iceberg" and not stream:
            check.problem("iceberg: no stream changes to compare with")
    return check


def view_checks(plan_file: Path, workdir: Path, ddb) -> list:
    """The documented latest-state view against a Scan, and where the rows came from."""
    checks = []
    plan = json.loads(plan_file.read_text())
    sql = readme_sql().replace("<id>", plan["id"])
    sql = sql.replace("out/parquet", str(workdir / "out" / "parquet"))
    sql = sql.replace("orders", TABLE)
    db = duckdb.connect()
    for statement in [s for s in sql.split(";") if s.strip()]:
        db.execute(statement)
    got = dict(db.execute(f"SELECT pk, v FROM {TABLE}_now").fetchall())
    checks.append(compare_view(got, scan_versions(ddb),
                               "the documented DuckDB view (docs/snapshots.md) equals a Scan of the table"))
    checks.append(iceberg_view_check(workdir, ddb))
    checks.append(iceberg_exact_check(workdir, ddb))
    checks.append(marker_check(workdir, plan["id"]))
    check = ec.Check("most rows came from the snapshot")
    snapshot_rows = db.execute(
        f"SELECT count(*) FROM read_parquet('{workdir}/out/parquet/{TABLE}/*/*.parquet', "
        f"union_by_name = true) WHERE __op = 'r'").fetchone()[0]
    if snapshot_rows < ITEMS // 2:
        check.problem(f"{snapshot_rows} snapshot rows")
    checks.append(check)
    return checks


def iceberg_now(out: Path, table: str, want_file: Path) -> int:
    """`--iceberg-now`: the exact view over a table another test wrote (in
    `out`: catalog.db and warehouse/), against the versions in `want_file`."""
    want = json.loads(want_file.read_text())
    checks = [
        compare_view(iceberg_exact_view(out / "catalog.db", out / "warehouse", table), want,
                     "the exact DuckDB view (docs/iceberg.md) equals the table"),
        compare_view(spark_exact_view(out / "catalog.db", out / "warehouse", table), want,
                     "the exact Spark SQL view (docs/iceberg.md) over the data files equals the table"),
    ]
    passed, failed = ec.print_report(checks, 40)
    print(f"iceberg view check: {passed} passed, {failed} failed")
    return 1 if failed else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin")
    parser.add_argument("--iceberg-now", type=Path, metavar="OUT",
                        help="only run the exact Iceberg view over OUT/catalog.db, OUT/warehouse")
    parser.add_argument("--table", help="with --iceberg-now: the table")
    parser.add_argument("--want", type=Path, help="with --iceberg-now: JSON of key to version")
    args = parser.parse_args(argv)
    if args.iceberg_now:
        if not (args.table and args.want):
            parser.error("--iceberg-now needs --table and --want")
        return iceberg_now(args.iceberg_now, args.table, args.want)
    if not args.bin:
        parser.error("--bin is required")
    binary = Path(args.bin).resolve()
    checks = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        moto = Moto(workdir)
        try:
            ddb = moto.client("dynamodb")
            create_table(ddb)
            fill(ddb)
            cfg = config(workdir, moto)
            stop = threading.Event()
            thread = threading.Thread(target=writer, args=(ddb, stop), daemon=True)
            thread.start()
            plan_dir = workdir / "out" / "parquet" / "_snapshots" / TABLE
            for into_scan in (0.5, 1.0):
                child = subprocess.Popen([str(binary), "run", "--config", str(cfg)], cwd=workdir,
                                         env=environment(), stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
                # Killed once the scan has begun (its plan is written first),
                # however long the start takes on a loaded machine.
                deadline = time.time() + 120
                while not list(plan_dir.glob("*.json")) and child.poll() is None and time.time() < deadline:
                    time.sleep(0.05)
                time.sleep(into_scan)
                child.kill()
                child.wait()
            plans = sorted(plan_dir.glob("*.json"))
            check = ec.Check("the kills came during the scan")
            if len(plans) != 1 or json.loads(plans[0].read_text())["finished_ms"] is not None:
                check.problem(f"plans: {[p.read_text() for p in plans]}")
            checks.append(check)
            stop.set()
            thread.join()
            port = free_port()
            log = open(workdir / "last-run.log", "w")
            child = subprocess.Popen([str(binary), "run", "--config", str(cfg), "--until-idle", "3",
                                      "--metrics-listen", f"127.0.0.1:{port}"],
                                     cwd=workdir, env=environment(), stdout=subprocess.DEVNULL,
                                     stderr=log)
            # The snapshot's metrics, scraped while the last run finishes it.
            samples = {}
            deadline = time.time() + 600
            while child.poll() is None and time.time() < deadline:
                samples = snapshot_samples(port) or samples
                time.sleep(0.3)
            if child.poll() is None:
                child.kill()
            child.wait()
            log.close()
            check = ec.Check("the last run finishes the snapshot and exits 0")
            if child.returncode != 0:
                check.problem((workdir / "last-run.log").read_text()[-2000:])
            checks.append(check)
            check = ec.Check("/metrics shows the snapshot's items, segments and consumed capacity")
            items = samples.get(("dynamo_cdc_snapshot_items_total", (("table", TABLE),)), 0)
            done = samples.get(("dynamo_cdc_snapshot_segments", (("state", "done"), ("table", TABLE))))
            pending = samples.get(("dynamo_cdc_snapshot_segments", (("state", "pending"), ("table", TABLE))))
            rcu = samples.get(("dynamo_cdc_snapshot_consumed_rcu", (("table", TABLE),)))
            if items <= 0 or done is None or pending is None or done + pending != 3 or not rcu:
                check.problem(f"samples: {samples}")
            checks.append(check)

            # Changes after the snapshot, to keys it delivered: each of these
            # keys now has a snapshot row and a newer change in both sinks.
            for i in range(0, ITEMS, 5):
                ddb.put_item(TableName=TABLE, Item=item(i, 1_000_000 + i))
            after = subprocess.run([str(binary), "run", "--config", str(cfg), "--until-idle", "3"],
                                   cwd=workdir, env=environment(), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True, timeout=600)
            check = ec.Check("a run after the snapshot delivers the changes made since and exits 0")
            if after.returncode != 0:
                check.problem(after.stderr[-2000:])
            checks.append(check)

            if plans:
                checks += view_checks(plans[0], workdir, ddb)
            else:
                check = ec.Check("a snapshot plan was written")
                check.problem(f"none under {plan_dir}")
                checks.append(check)
        finally:
            moto.stop()
    passed, failed = ec.print_report(checks, 40)
    print(f"snapshot check: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
