#!/usr/bin/env python3
"""End-to-end check of the metrics and health endpoints against moto.

Starts `moto_server` on a free loopback port, creates a table with a
NEW_AND_OLD_IMAGES stream, starts the `dynamo-cdc` binary with
`--metrics-listen` on another free port, and writes inserts, updates and
deletes through boto3 while the bridge runs. `/metrics` is scraped over
loopback and parsed with `prometheus_client`'s text parser (independent of
the bridge's own code); its counters must match what was written and
delivered, the lag and time-to-data-loss gauges must be sane, and
`/healthz` and `/readyz` must answer 200. With `--log-format json` every
line on standard error must be one JSON object, and no secret may appear in
the logs or the metrics.

    python scripts/metrics_check.py --bin target/debug/dynamo-cdc

The last line is `metrics check: N passed, M failed`; the exit code is 1
when anything failed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import e2e_check as ec  # noqa: E402
from moto_e2e import REGION, Moto, environment, free_port  # noqa: E402

import pyarrow.parquet as pq  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

TABLE = "metrics_orders"
SECRET = "registry-hunter2"


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def scrape(base: str) -> dict:
    """Samples by (name, sorted labels)."""
    status, text = get(f"{base}/metrics")
    if status != 200:
        raise RuntimeError(f"/metrics answered {status}")
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    out["__text__"] = text
    return out


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: dict, name: str, **labels) -> float:
    """Sum over every sample of `name` whose labels include `labels`."""
    n = 0.0
    for key, v in samples.items():
        if key == "__text__" or key[0] != name:
            continue
        have = dict(key[1])
        if all(have.get(k) == w for k, w in labels.items()):
            n += v
    return n


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", required=True, type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args(argv)
    binary = args.bin.resolve()
    work = Path(tempfile.mkdtemp(prefix="dynamo-cdc-metrics-"))
    checks: list[tuple[str, bool, str]] = []

    def check(name: str, ok: bool, detail: str = "") -> None:
        checks.append((name, bool(ok), detail))
        print(f"  {'ok  ' if ok else 'FAIL'} {name}" + ("" if ok else f": {detail}"))

    moto = Moto(work)
    child = None
    try:
        ddb = moto.client("dynamodb")
        ddb.create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        config = work / "metrics.toml"
        config.write_text(
            "[source]\n"
            'kind = "dynamodb"\n'
            f'tables = ["{TABLE}"]\n'
            f'region = "{REGION}"\n'
            # The endpoint comes from the environment: interpolation is part
            # of what is checked.
            'endpoint_url = "${MOTO_URL:?set MOTO_URL}"\n'
            "poll_interval_ms = 50\nidle_poll_interval_ms = 200\nshard_refresh_interval_ms = 1000\n\n"
            "[sinks.parquet]\n"
            f"path = {ec.toml_string(str(work / 'out' / 'parquet'))}\n"
            "max_file_age_ms = 300\n\n"
            "[checkpoint]\n"
            f"path = {ec.toml_string(str(work / 'out' / 'checkpoint.json'))}\n"
        )
        env = environment()
        env["MOTO_URL"] = moto.url
        env["AWS_SECRET_ACCESS_KEY"] = SECRET
        log_path = work / "bridge.log"
        log = open(log_path, "wb")
        child = subprocess.Popen(
            [str(binary), "--log", "debug", "--log-format", "json", "run", "--config", str(config),
             "--metrics-listen", f"127.0.0.1:{port}"],
            cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=log,
        )
        deadline = time.time() + 60
        ready = (0, "")
        while time.time() < deadline:
            try:
                ready = get(f"{base}/readyz")
                if ready[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        check("/readyz answers 200 once the stream answered", ready[0] == 200, repr(ready))
        health = get(f"{base}/healthz")
        check("/healthz answers 200", health[0] == 200, repr(health))

        # Writes: 30 inserts, 20 updates, 10 deletes.
        started_ms = time.time() * 1000
        for i in range(30):
            ddb.put_item(TableName=TABLE, Item={"id": {"S": f"k{i}"}, "n": {"N": str(i)}})
        for i in range(20):
            ddb.update_item(TableName=TABLE, Key={"id": {"S": f"k{i}"}},
                            UpdateExpression="SET n = :v", ExpressionAttributeValues={":v": {"N": "100"}})
        for i in range(10):
            ddb.delete_item(TableName=TABLE, Key={"id": {"S": f"k{i}"}})
        written = {"c": 30, "u": 20, "d": 10}

        deadline = time.time() + 90
        samples = scrape(base)
        while time.time() < deadline:
            samples = scrape(base)
            if total(samples, "dynamo_cdc_changes_delivered_total", sink="parquet", table=TABLE) >= 60:
                break
            time.sleep(0.3)
        for op, n in written.items():
            got = value(samples, "dynamo_cdc_changes_read_total", table=TABLE, op=op)
            check(f"changes read {{op={op}}} = {n}", got == n, f"got {got}")
        delivered = total(samples, "dynamo_cdc_changes_delivered_total", sink="parquet", table=TABLE)
        check("changes delivered to parquet = 60", delivered == 60, f"got {delivered}")
        rows = sum(pq.ParquetFile(f).metadata.num_rows
                   for f in (work / "out" / "parquet").rglob("*.parquet"))
        check("the dataset holds what the counter says", rows == delivered, f"{rows} rows")
        files = value(samples, "dynamo_cdc_parquet_files_committed_total")
        check("files committed counted", files >= 1, f"got {files}")
        check("no dead letters", total(samples, "dynamo_cdc_dead_letters_total") == 0)
        check("no gaps", total(samples, "dynamo_cdc_gaps_total") == 0)
        ok_calls = value(samples, "dynamo_cdc_source_requests_total", api="GetRecords", result="ok")
        check("GetRecords calls counted", ok_calls >= 1, f"got {ok_calls}")
        age = value(samples, "dynamo_cdc_checkpoint_age_seconds")
        check("checkpoint age is recent", 0 <= age < 30, f"got {age}")

        # Caught up: lag drops to 0, time to data loss near a day.
        deadline = time.time() + 30
        while time.time() < deadline:
            samples = scrape(base)
            if value(samples, "dynamo_cdc_source_lag_seconds", table=TABLE) == 0:
                break
            time.sleep(0.3)
        lag = value(samples, "dynamo_cdc_source_lag_seconds", table=TABLE)
        check("lag is 0 once caught up", lag == 0, f"got {lag}")
        ttdl = value(samples, "dynamo_cdc_time_to_data_loss_seconds", table=TABLE)
        elapsed = (time.time() * 1000 - started_ms) / 1000
        check("time to data loss is close to a day", 86400 - elapsed - 120 <= ttdl <= 86400, f"got {ttdl}")
        text = samples["__text__"]
        for name in ("dynamo_cdc_changes_read_total", "dynamo_cdc_source_lag_seconds",
                     "dynamo_cdc_time_to_data_loss_seconds", "dynamo_cdc_sink_pauses_total"):
            if name == "dynamo_cdc_sink_pauses_total":
                continue  # registered on the first pause only
            check(f"{name} has HELP and TYPE", f"# HELP {name}" in text and f"# TYPE {name}" in text)
        promtool = shutil.which("promtool")
        if promtool:
            p = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
            check("promtool check metrics", p.returncode == 0, p.stdout + p.stderr)

        child.terminate()
        code = child.wait(timeout=60)
        log.close()
        check("SIGTERM stops the run with exit 0", code == 0, f"exit {code}")
        lines = log_path.read_text(errors="replace").splitlines()
        bad = []
        for line in lines:
            try:
                obj = json.loads(line)
                # Events of other libraries may carry fields and no message.
                if not ({"timestamp", "level", "target", "fields"} <= obj.keys()
                        and isinstance(obj["fields"], dict)):
                    bad.append(line)
            except ValueError:
                bad.append(line)
        check("--log-format json writes one JSON object per line", lines and not bad, "\n".join(bad[:3]))
        ours = [json.loads(x) for x in lines if '"target":"dynamo_cdc' in x]
        check("the bridge's own lines carry a message",
              ours and all("message" in o["fields"] for o in ours), str(ours[:2]))
        everything = log_path.read_text(errors="replace") + text
        check("no secret in logs or metrics", SECRET not in everything)
    finally:
        if child and child.poll() is None:
            child.kill()
        moto.stop()
    failed = sum(1 for _, ok, _ in checks if not ok)
    passed = len(checks) - failed
    if failed == 0 and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"scratch directory kept: {work}")
    print(f"metrics check: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
