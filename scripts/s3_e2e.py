#!/usr/bin/env python3
"""End-to-end check of Parquet on an object store: moto's S3.

The same scenario as `moto_e2e.py` (two tables with awkward values, a
writer changing items while the `dynamo-cdc` binary is killed with SIGKILL
and restarted, a graceful SIGTERM, a last run), with `[sinks.parquet] path`
an `s3://` URL on the same moto server. While the bridge runs, a lister
keeps listing the bucket and reads every data object it sees: none may be
partial or carry a temp name. At the end every object is read back with
pyarrow (fetched with boto3, independently of the bridge) and compared with
the stream, read through boto3: every change exactly once, value for value,
and the invalid records in the dead-letter objects. Last, the awkward-values
capture of `e2e_check.py` is replayed into `s3://` and compared value by
value with pyarrow and DuckDB.

    python scripts/s3_e2e.py --bin target/debug/dynamo-cdc

The last line is `s3 e2e: N passed, M failed`; the exit code is 1 when
anything failed.
"""

from __future__ import annotations

import argparse
import io
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import e2e_check as ec  # noqa: E402
import moto_e2e as me  # noqa: E402

import pyarrow.parquet as pq  # noqa: E402

BUCKET = "analytics-lake"
PREFIX = "dynamodb"
# `<shard>_<firstSeq>.parquet`, or `<shard>-<firstSeq>-<lastSeq>.parquet` of earlier versions.
DATA_NAME = re.compile(r"[^/]+/date=\d{4}-\d{2}-\d{2}/(?:[^/]+_\d+|[^/]+-\d+-\d+)\.parquet")


def write_config(workdir: Path, moto: me.Moto) -> Path:
    config = workdir / "s3.toml"
    config.write_text(
        "[source]\n"
        'kind = "dynamodb"\n'
        f"tables = {list(me.TABLES)!r}\n".replace("'", '"')
        + f'region = "{me.REGION}"\n'
        f"endpoint_url = {ec.toml_string(moto.url)}\n"
        "poll_interval_ms = 50\nidle_poll_interval_ms = 200\nshard_refresh_interval_ms = 1000\n\n"
        "[sinks.parquet]\n"
        f'path = "s3://{BUCKET}/{PREFIX}"\n'
        f'region = "{me.REGION}"\n'
        f"endpoint_url = {ec.toml_string(moto.url)}\n"
        "max_file_age_ms = 300\nmax_rows_per_file = 50\n\n"
        "[checkpoint]\n"
        f"path = {ec.toml_string(str(workdir / 'out' / 'checkpoint.json'))}\n"
    )
    return config


def mirror(s3, root: Path, prefix: str = PREFIX) -> None:
    """Copies the bucket's prefix to `root` as the local layout: data objects
    under their names; dead-letter objects (one per batch) joined into
    `_dead_letter/<table>.jsonl`."""
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    for key in list_keys(s3, prefix):
        rel = key[len(prefix) + 1:]
        body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        if rel.startswith(("_dead_letter/", "_gaps/")):
            top, table = rel.split("/")[:2]
            (root / top).mkdir(parents=True, exist_ok=True)
            with open(root / top / f"{table}.jsonl", "ab") as f:
                f.write(body if body.endswith(b"\n") else body + b"\n")
            continue
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(body)


def list_keys(s3, prefix: str = PREFIX) -> list:
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix + "/"):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


class Lister(threading.Thread):
    """Lists the prefix over and over; every data object it sees must have a
    committed name and read whole."""

    def __init__(self, s3):
        super().__init__(daemon=True)
        self.s3 = s3
        self.halt = threading.Event()
        self.listings = 0
        self.read = set()
        self.problems = []

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                keys = list_keys(self.s3)
            except Exception:  # noqa: BLE001 - moto busy: try again
                time.sleep(0.05)
                continue
            self.listings += 1
            for key in keys:
                rel = key[len(PREFIX) + 1:]
                if rel.startswith(("_dead_letter/", "_gaps/")):
                    continue
                if not DATA_NAME.fullmatch(rel):
                    self.problems.append(f"a non-data name was listed: {key}")
                    continue
                if key in self.read:
                    continue
                try:
                    body = self.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
                    pq.read_table(io.BytesIO(body))
                    self.read.add(key)
                except Exception as e:  # noqa: BLE001 - a partial object is the finding
                    self.problems.append(f"{key} was listed but does not read whole: {e}")
            time.sleep(0.02)


def check_missing_bucket(binary: Path, workdir: Path, moto: me.Moto) -> list:
    """A bucket that does not exist stops the run before anything is read,
    naming the bucket and what was being done."""
    out = workdir / "nobucket"
    out.mkdir(parents=True, exist_ok=True)
    config = write_config(out, moto)
    config.write_text(config.read_text().replace(f"s3://{BUCKET}/", "s3://no-such-bucket-here/"))
    check = ec.Check("a missing bucket stops the run at start with a clear message")
    result = subprocess.run([str(binary), "run", "--config", str(config)], cwd=out, env=me.environment(),
                            capture_output=True, text=True, timeout=120)
    if result.returncode in (0, 3) or "no-such-bucket-here" not in result.stderr:
        check.problem(f"exit code {result.returncode}: {result.stderr[-1500:]}")
    if (out / "out" / "checkpoint.json").exists():
        check.problem("a checkpoint was written: something was read")
    return [check]


def check_awkward_capture(binary: Path, workdir: Path, moto: me.Moto, s3) -> list:
    """The awkward-values capture that `e2e_check.py` writes to a local
    dataset, replayed into `s3://` and compared value by value."""
    capture = ec.build_capture()
    capture_dir = workdir / "capture"
    ec.write_capture(capture, capture_dir)
    out = workdir / "awkward"
    out.mkdir(parents=True, exist_ok=True)
    config = out / "config.toml"
    config.write_text(
        "[source]\n"
        'kind = "replay"\n'
        f"path = {ec.toml_string(str(capture_dir))}\n"
        "[sinks.parquet]\n"
        f'path = "s3://{BUCKET}/awkward"\n'
        f'region = "{me.REGION}"\n'
        f"endpoint_url = {ec.toml_string(moto.url)}\n"
        "[checkpoint]\n"
        f"path = {ec.toml_string(str(out / 'checkpoint.json'))}\n"
    )
    # Credentials from a profile, not the environment: the AWS chain's
    # shared credentials file.
    profile_dir = out / "aws"
    profile_dir.mkdir(exist_ok=True)
    (profile_dir / "credentials").write_text(
        "[lake]\naws_access_key_id = from-profile\naws_secret_access_key = from-profile\n")
    (profile_dir / "config").write_text("[profile lake]\nregion = us-east-1\n")
    env = {k: v for k, v in me.environment().items() if not k.startswith("AWS_ACCESS_KEY")
           and not k.startswith("AWS_SECRET")}
    env.update({"AWS_SHARED_CREDENTIALS_FILE": str(profile_dir / "credentials"),
                "AWS_CONFIG_FILE": str(profile_dir / "config"), "AWS_PROFILE": "lake"})
    run = ec.Check("awkward capture to s3:// with credentials from a profile: the run exits 3 "
                   "(bad records dead-lettered)")
    result = subprocess.run([str(binary), "run", "--config", str(config)], cwd=workdir, env=env,
                            capture_output=True, text=True, timeout=600)
    if result.returncode != 3:
        run.problem(f"exit code {result.returncode}: {result.stderr[-2000:]}")
    root = out / "mirror"
    mirror(s3, root, "awkward")
    expected = {(c.shard, c.seq): c for c in capture.changes}
    schema = ec.Check("awkward capture on s3: schema and field metadata")
    files = ec.read_output_files(root, "auto", schema)
    once = ec.Check("awkward capture on s3: each change exactly once, nothing else")
    ec.check_rows_once(files, expected, once)
    values = ec.Check("awkward capture on s3: values read with pyarrow")
    ec.check_values_pyarrow(files, expected, values)
    duck = ec.Check("awkward capture on s3: values read with DuckDB")
    ec.check_values_duckdb(root, files, expected, duck)
    dead = ec.Check("awkward capture on s3: dead letters")
    dead_dir = ec.find_dead_letter_dir(root, out, dead)
    ec.check_dead_letters(ec.read_dead_letters(dead_dir, dead), capture, dead, dead_dir is not None)
    return [run, schema, once, values, duck, dead]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin", required=True, type=Path, help="the dynamo-cdc binary")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    binary = args.bin.resolve()
    workdir = Path(tempfile.mkdtemp(prefix="s3-e2e-"))
    checks = []
    moto = me.Moto(workdir)
    lister = None
    try:
        ddb = moto.client("dynamodb")
        s3 = moto.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        me.create_tables(ddb)
        me.write_phase_one(ddb)
        config = write_config(workdir, moto)
        root = workdir / "mirror"
        lister = Lister(moto.client("s3"))
        lister.start()

        first = me.run_until_idle(binary, config, workdir, "run1")
        exit_check = ec.Check("first run to s3:// exits 3 (one record dead-lettered)")
        if first.returncode != 3:
            exit_check.problem(f"exit code {first.returncode}: {first.stderr[-2000:]}")
        checks.append(exit_check)
        mirror(s3, root)
        checks += me.check_output(root, me.read_stream(moto), "s3, after the first run")

        checks += me.crash_while_writing(binary, config, workdir, ddb, seed=12)

        last = me.run_until_idle(binary, config, workdir, "run-last")
        last_check = ec.Check("the run after the crashes exits 0")
        if last.returncode != 0:
            last_check.problem(f"exit code {last.returncode}: {last.stderr[-2000:]}")
        checks.append(last_check)
        lister.halt.set()
        lister.join()
        seen = ec.Check(f"no partial or temp object was ever listed ({lister.listings} listings, "
                        f"{len(lister.read)} objects read while the bridge ran)")
        for p in lister.problems[:20]:
            seen.problem(p)
        if lister.listings < 10 or not lister.read:
            seen.problem("the lister saw too little to tell")
        checks.append(seen)
        mirror(s3, root)
        checks += me.check_output(root, me.read_stream(moto), "s3, after SIGKILL restarts")
        checks += check_awkward_capture(binary, workdir, moto, s3)
        checks += check_missing_bucket(binary, workdir, moto)
    finally:
        if lister is not None:
            lister.halt.set()
        moto.stop()
        passed, failed = ec.print_report(checks, 20)
        print(f"s3 e2e: {passed} passed, {failed} failed")
        if args.keep or failed:
            print(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
