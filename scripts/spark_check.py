#!/usr/bin/env python3
"""Spark reads the Parquet dataset the bridge writes, hive partitions and
all, and gets the same rows as pyarrow and DuckDB.

Replays the example capture (`examples/data`) into a local dataset with the
`dynamo-cdc` binary, then reads every table three ways: Spark (pyspark on
the machine's Java, partition discovery on `date=`), pyarrow.dataset with
hive partitioning, and DuckDB's `read_parquet(..., hive_partitioning = true)`.
Rows are compared after a neutral rendering (decimals and dates as text,
bytes as hex, maps with sorted keys): the three readers must agree row for
row, `date` included.

    python scripts/spark_check.py --bin target/debug/dynamo-cdc

The last line is `spark check: N passed, M failed`.
"""

from __future__ import annotations

import argparse
import datetime
import decimal
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import duckdb
import pyarrow.dataset as pads

REPO = Path(__file__).resolve().parent.parent


def neutral(value):
    """A reader-independent rendering of one cell."""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "0x" + bytes(value).hex()
    if isinstance(value, decimal.Decimal):
        return format(value.normalize(), "f") if value == value.to_integral() else str(value.normalize())
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: neutral(v) for k, v in sorted(value.items())}
    if hasattr(value, "asDict"):
        return neutral(value.asDict(recursive=True))
    if isinstance(value, (list, tuple)):
        return [neutral(v) for v in value]
    if isinstance(value, float):
        return repr(value)
    return value


def key_of(row: dict) -> str:
    return json.dumps({k: neutral(v) for k, v in sorted(row.items())}, sort_keys=True, default=str)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin", required=True, type=Path)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="dynamo-cdc-spark-"))
    results: list[tuple[str, bool, str]] = []

    def check(name: str, ok: bool, detail: str = "") -> None:
        results.append((name, bool(ok), detail))
        print(f"  {'ok  ' if ok else 'FAIL'} {name}" + ("" if ok else f": {detail}"))

    try:
        root = work / "parquet"
        config = work / "spark.toml"
        config.write_text(
            "[source]\nkind = \"replay\"\n"
            f"path = {json.dumps(str(REPO / 'examples' / 'data'))}\n"
            f"[sinks.parquet]\npath = {json.dumps(str(root))}\n"
            f"[checkpoint]\npath = {json.dumps(str(work / 'checkpoint.json'))}\n"
        )
        run = subprocess.run([str(args.bin.resolve()), "run", "--quiet", "--config", str(config)],
                             capture_output=True, text=True, timeout=300)
        check("the bridge writes the dataset", run.returncode in (0, 3), run.stderr[-1500:])
        tables = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("_"))
        check("tables were written", len(tables) >= 1, str(tables))

        # Loopback only: Spark would otherwise pick the machine's address.
        os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
        from pyspark.sql import SparkSession

        spark = (SparkSession.builder.master("local[1]").appName("dynamo-cdc-spark-check")
                 .config("spark.ui.enabled", "false")
                 .config("spark.ui.showConsoleProgress", "false")
                 .config("spark.sql.session.timeZone", "UTC")
                 .config("spark.driver.host", "127.0.0.1")
                 .config("spark.driver.bindAddress", "127.0.0.1")
                 .getOrCreate())
        spark.sparkContext.setLogLevel("ERROR")
        try:
            for table in tables:
                path = root / table
                by_spark = [r.asDict(recursive=True) for r in spark.read.parquet(str(path)).collect()]
                by_arrow = pads.dataset(str(path), format="parquet", partitioning="hive").to_table().to_pylist()
                con = duckdb.connect()
                cur = con.execute(
                    f"SELECT * FROM read_parquet('{path}/*/*.parquet', hive_partitioning = true)")
                cols = [d[0] for d in cur.description]
                by_duck = [dict(zip(cols, r)) for r in cur.fetchall()]
                spark_rows = sorted(key_of(r) for r in by_spark)
                arrow_rows = sorted(key_of(r) for r in by_arrow)
                duck_rows = sorted(key_of(r) for r in by_duck)
                check(f"{table}: Spark sees the date partitions",
                      bool(by_spark) and all("date" in r and r["date"] is not None for r in by_spark))
                check(f"{table}: Spark reads {len(by_arrow)} rows, as pyarrow does", len(by_spark) == len(by_arrow),
                      f"spark {len(by_spark)}, pyarrow {len(by_arrow)}")
                diff = [r for r in spark_rows if r not in set(arrow_rows)][:2]
                check(f"{table}: Spark's rows are pyarrow's, value for value", spark_rows == arrow_rows,
                      f"for example {diff}")
                diff = [r for r in duck_rows if r not in set(arrow_rows)][:2]
                check(f"{table}: DuckDB's rows are pyarrow's, value for value", duck_rows == arrow_rows,
                      f"for example {diff}")
        finally:
            spark.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    failed = sum(1 for _, ok, _ in results if not ok)
    print(f"spark check: {len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
