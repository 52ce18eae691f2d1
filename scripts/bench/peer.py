#!/usr/bin/env python3
"""A plain Python DynamoDB Streams -> Parquet / Kafka pipeline (benchmark baseline).

This is the pipeline a data engineer would typically write in a Lambda-style
function, using the usual libraries: `json.loads` for each GetRecords page,
boto3's `TypeDeserializer` for the images, pyarrow for Parquet, fastavro and
confluent-kafka for Kafka. It streams the capture page by page and does the same
work as `dynamo-cdc run` with the replay source, so the two can be timed side by
side and their outputs compared with `check.py`:

* Parquet: one row per change with exactly the columns and Arrow types of a
  target schema (read from a Parquet file dynamo-cdc wrote, as a production
  pipeline would have a fixed Glue table schema), zstd-compressed, partitioned
  by table and UTC day, row groups of 65,536 rows, files rolled at 1,000,000
  rows or 128 MiB, each written under a hidden temp name, fsynced and renamed.
* Kafka: the Debezium-style Avro envelope (or the flat row, whichever the value
  schema describes), keyed by the item's primary key, in the Confluent wire
  format, with the `dynamodb.*` headers and a tombstone after each delete,
  through an idempotent producer (`acks=all`, zstd).

Input: a capture file or a directory of them (`*.jsonl`, `*.json`, `*.ndjson`,
optionally `.gz`; names starting with `.` or `_` are skipped), JSON Lines, one
GetRecords response `{"Records": [...], "NextShardIterator": ...}` per line.
Each file is one shard, named after the file without its extensions.

Usage:

    python peer.py --input CAPTURE --mode parquet \\
        --parquet OUT_DIR --arrow-schema SCHEMA.parquet

    python peer.py --input CAPTURE --mode kafka \\
        --brokers 127.0.0.1:9092 --topic-template 'peer.{table}' \\
        --registry http://127.0.0.1:8081 \\
        --value-schema VALUE.avsc --key-schema KEY.avsc

    python peer.py --input CAPTURE --mode both ...   # all of the above, one pass

At the end it prints one line of JSON to stdout:
`{"records": N, "parquet_rows": N, "kafka_messages": N, ...}`.
Exit code 0 on success, 1 on any error (including a failed Kafka delivery).
"""

from __future__ import annotations

import argparse
import base64
import datetime
import decimal
import gzip
import io
import json
import os
import struct
import sys
import time
import urllib.request
from decimal import Decimal
from typing import Any, Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq
from boto3.dynamodb.types import Binary, TypeDeserializer

# dynamo-cdc's Parquet defaults (docs/configuration.md).
ROW_GROUP_ROWS = 65_536
MAX_ROWS_PER_FILE = 1_000_000
MAX_FILE_BYTES = 128 * 1024 * 1024
# Rows converted to Arrow at a time (bounds the Python objects held in memory).
BATCH_ROWS = 10_000
# Serve Kafka delivery callbacks every this many produced messages.
POLL_EVERY = 1_000

META_COLUMNS = (
    "__op", "__table", "__shard_id", "__sequence_number",
    "__event_id", "__source_ts_ms", "__deleted", "__ttl_delete",
)
OPS = {"INSERT": "c", "MODIFY": "u", "REMOVE": "d"}
MS_PER_DAY = 86_400_000
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


class PipelineError(Exception):
    """A record or configuration the pipeline cannot handle."""


# ---------------------------------------------------------------------------
# Reading the capture
# ---------------------------------------------------------------------------

class Deserializer(TypeDeserializer):
    """boto3's TypeDeserializer for stream JSON, with its two usual fixes.

    * Stream records (GetRecords JSON, Lambda events) carry binary values as
      base64 text, while TypeDeserializer expects the bytes boto3's client has
      already decoded (B and BS both go through `_deserialize_b`).
    * boto3 reads numbers in a 38-digit context that traps on rounding, so an
      exact number written out in plain notation with more than 38 digits
      (`99...990000...0`, up to 126 digits for 9.9E+125) is refused although
      only trailing zeros are dropped; such numbers are read exactly.
    """

    def _deserialize_b(self, value):
        return Binary(base64.b64decode(value))

    def _deserialize_n(self, value):
        try:
            return super()._deserialize_n(value)
        except decimal.Rounded:
            exact = Decimal(value)
            if len(exact.normalize(_CANONICAL).as_tuple().digits) > 38:
                raise  # really more than 38 significant digits
            return exact


DESERIALIZER = Deserializer()


def deserialize_image(image: dict) -> dict:
    """A DynamoDB-JSON image as Python values (str, Decimal, Binary, set, ...)."""
    deserialize = DESERIALIZER.deserialize
    return {name: deserialize(value) for name, value in image.items()}


class Change:
    """One stream record: its position, its images (raw and deserialized)."""

    __slots__ = (
        "op", "table", "stream_arn", "shard", "seq", "event_id", "ts_ms",
        "ttl_delete", "keys", "keys_raw", "old", "old_raw", "new", "new_raw",
    )

    def row_image(self) -> tuple[dict, dict]:
        """The state a flat row shows: the new image, the old one for deletes,
        the keys alone when the stream carries no image."""
        if self.op == "d":
            if self.old is not None:
                return self.old, self.old_raw
        elif self.new is not None:
            return self.new, self.new_raw
        return self.keys, self.keys_raw


def capture_files(path: str) -> list[str]:
    """The capture files under `path`, in name order (as dynamo-cdc reads them)."""
    if os.path.isfile(path):
        return [path]
    found = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = [d for d in dirnames if not d.startswith((".", "_"))]
        for name in filenames:
            if name.startswith((".", "_")):
                continue
            if name.removesuffix(".gz").endswith((".json", ".jsonl", ".ndjson")):
                found.append(os.path.join(dirpath, name))
    if not found:
        raise PipelineError(f"no capture files (*.json, *.jsonl, *.ndjson) under {path}")
    return sorted(found)


def shard_name(path: str) -> str:
    """The shard a capture file stands for: its name without extensions."""
    name = os.path.basename(path).removesuffix(".gz")
    for ext in (".jsonl", ".ndjson", ".json"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def table_from_arn(arn: str) -> str:
    """`arn:aws:dynamodb:REGION:ACCOUNT:table/NAME/stream/LABEL` -> `NAME`."""
    resource = arn.split(":", 5)[5] if arn.count(":") >= 5 else ""
    if not resource.startswith("table/"):
        raise PipelineError(f"eventSourceARN {arn!r} names no table")
    return resource[len("table/"):].split("/", 1)[0]


def creation_ms(value: Any) -> int:
    """`ApproximateCreationDateTime` (epoch seconds, epoch ms above 10^11, or
    an ISO-8601 string) in milliseconds, rounded half away from zero."""
    if isinstance(value, str):
        parsed = datetime.datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            raise PipelineError(f"ApproximateCreationDateTime {value!r} has no time zone")
        return (parsed - EPOCH) // datetime.timedelta(milliseconds=1)
    ms = float(value)
    if ms <= 1e11:
        ms *= 1000.0
    whole = int(ms)  # ms is never negative
    return whole + 1 if ms - whole >= 0.5 else whole


class CaptureReader:
    """Reads a capture page by page, in stream order.

    A record whose sequence number does not advance in its shard (a capture
    tool that re-read a page) is skipped and counted, as dynamo-cdc skips
    repeats. (dynamo-cdc dead-letters a record that is merely out of order;
    captures of the benchmark have neither.)
    """

    def __init__(self, path: str):
        self.files = capture_files(path)
        self.duplicates = 0

    def change(self, record: dict, shard: str) -> Any:
        """One stream record as a change (peer_lean.py decodes images lazily)."""
        return to_change(record, shard)

    def pages(self) -> Iterator[list[Change]]:
        """Yields the changes of each page of each file."""
        for file_path in self.files:
            shard = shard_name(file_path)
            last_seq: dict[str, int] = {}  # table -> last sequence number read
            opener = gzip.open if _is_gzip(file_path) else open
            with opener(file_path, "rt", encoding="utf-8") as lines:
                for line in lines:  # one page per line, never the whole file
                    if not line.strip():
                        continue
                    page = json.loads(line)
                    records = page["Records"] if "Records" in page else [page]
                    changes = []
                    for record in records:
                        change = self.change(record, shard)
                        seq = int(change.seq)
                        if seq <= last_seq.get(change.table, -1):
                            self.duplicates += 1
                            continue
                        last_seq[change.table] = seq
                        changes.append(change)
                    yield changes


def _is_gzip(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def to_change(record: dict, shard: str) -> Change:
    """A stream record as a Change, its images run through TypeDeserializer."""
    c = read_record(record, shard, Change())
    c.keys = deserialize_image(c.keys_raw)
    c.new = None if c.new_raw is None else deserialize_image(c.new_raw)
    c.old = None if c.old_raw is None else deserialize_image(c.old_raw)
    return c


def read_record(record: dict, shard: str, c: Any) -> Any:
    """Sets a change's position, kind and raw (DynamoDB-JSON) images from a
    stream record, and returns it; the images are not decoded here."""
    body = record["dynamodb"]
    c.op = OPS[record["eventName"]]
    c.stream_arn = record.get("eventSourceARN")
    if c.stream_arn is None:
        raise PipelineError("record without eventSourceARN")
    c.table = table_from_arn(c.stream_arn)
    c.shard = shard
    seq = body["SequenceNumber"]
    if not (seq.isdigit() and len(seq) <= 40):
        raise PipelineError(f"bad SequenceNumber {seq!r}")
    c.seq = seq.lstrip("0") or "0"
    c.event_id = record.get("eventID") or ""
    created = body.get("ApproximateCreationDateTime")
    c.ts_ms = None if created is None else creation_ms(created)
    identity = record.get("userIdentity") or {}
    c.ttl_delete = (
        (identity.get("type") or identity.get("Type")) == "Service"
        and (identity.get("principalId") or identity.get("PrincipalId")) == "dynamodb.amazonaws.com"
    )
    c.keys_raw = body.get("Keys") or {}
    if not c.keys_raw:
        raise PipelineError(f"record {c.seq} has no Keys")
    c.new_raw = body.get("NewImage")
    c.old_raw = body.get("OldImage")
    return c


# ---------------------------------------------------------------------------
# Value conversions shared by Parquet and Avro
# ---------------------------------------------------------------------------

# Wide enough that normalize() never rounds a DynamoDB number (38 digits).
_CANONICAL = decimal.Context(prec=40, Emin=-999_999, Emax=999_999)


def canonical_number(value: Decimal) -> str:
    """The exact canonical decimal text dynamo-cdc writes: plain notation, no
    exponent, no trailing fractional zeros, no `-0`."""
    text = format(value.normalize(_CANONICAL), "f")
    return "0" if text == "-0" else text


def to_int64(value: Decimal, where: str) -> int:
    whole = int(value)
    if whole != value or not -(2**63) <= whole < 2**63:
        raise PipelineError(f"{where}: {value} does not fit an int64 column")
    return whole


def ddb_json(raw: dict) -> str:
    """A DynamoDB-JSON value as compact text, e.g. `{"L":[{"N":"1.5"}]}`."""
    return json.dumps(raw, separators=(",", ":"), ensure_ascii=False)


def _expect(kind: type, where: str) -> Callable[[Any], Any]:
    def check(value):
        if value.__class__ is not kind:
            raise PipelineError(f"{where}: expected {kind.__name__}, got {value!r}")
        return value
    return check


def _set_elements(value: Any, where: str) -> list:
    """A deserialized set's elements in dynamo-cdc's order: strings and bytes
    bytewise (code-point order is UTF-8 byte order), numbers numerically."""
    if not isinstance(value, set):
        raise PipelineError(f"{where}: expected a set, got {value!r}")
    if all(isinstance(e, Binary) for e in value):
        return sorted(e.value for e in value)
    return sorted(value)


# A converter takes (deserialized value, raw DynamoDB-JSON value) of a present,
# non-NULL attribute and returns the column's value.
Converter = Callable[[Any, Any], Any]


def _nullable(convert: Converter) -> Converter:
    return lambda value, raw: None if value is None else convert(value, raw)


def arrow_converter(field: pa.Field, where: str) -> Converter:
    """The converter into an Arrow field written by dynamo-cdc, from its type
    and its `dynamodb.type` metadata."""
    meta = field.metadata or {}
    tag = meta.get(b"dynamodb.type", b"").decode()
    t = field.type
    if tag == "json":
        return lambda value, raw: ddb_json(raw)
    if pa.types.is_null(t):
        def null_only(value, raw):
            raise PipelineError(f"{where}: value {value!r} in a column of nulls")
        return null_only
    if tag == "S":
        check = _expect(str, where)
        return lambda value, raw: check(value)
    if tag == "N":
        return _number_converter(t, where)
    if tag == "B":
        return _binary_converter(where)
    if tag == "BOOL":
        check = _expect(bool, where)
        return lambda value, raw: check(value)
    if tag in ("SS", "NS", "BS"):
        item = arrow_converter(t.value_field, where + "[]")
        return lambda value, raw: [item(e, None) for e in _set_elements(value, where)]
    if tag == "L":
        item = _nullable(arrow_converter(t.value_field, where + "[]"))

        def list_(value, raw):
            if not isinstance(value, list):
                raise PipelineError(f"{where}: expected a list, got {value!r}")
            return [item(v, r) for v, r in zip(value, raw["L"])]
        return list_
    if tag == "M":
        children = [
            (attribute_name(f), f.name, _nullable(arrow_converter(f, f"{where}.{f.name}")))
            for f in t
        ]
        known = {a for a, _, _ in children}

        def struct(value, raw):
            if not isinstance(value, dict) or not value.keys() <= known:
                raise PipelineError(f"{where}: {value!r} does not fit the declared record")
            members = raw["M"]
            return {name: conv(value.get(attr), members.get(attr)) for attr, name, conv in children}
        return struct
    raise PipelineError(f"{where}: unsupported column type {t} / dynamodb.type {tag!r}")


def _binary_converter(where: str) -> Converter:
    def binary(value, raw):
        if value.__class__ is Binary:
            return value.value
        if value.__class__ is bytes:  # a set element, already unwrapped
            return value
        raise PipelineError(f"{where}: expected binary, got {value!r}")
    return binary


def _number_converter(t: pa.DataType, where: str) -> Converter:
    def number(value):
        if value.__class__ is not Decimal:
            raise PipelineError(f"{where}: expected a number, got {value!r}")
        return value
    if pa.types.is_int64(t):
        return lambda value, raw: to_int64(number(value), where)
    if pa.types.is_string(t):
        return lambda value, raw: canonical_number(number(value))
    if pa.types.is_decimal(t):
        return lambda value, raw: number(value)  # pyarrow refuses to round
    if pa.types.is_float64(t):
        return lambda value, raw: float(number(value))
    raise PipelineError(f"{where}: unsupported number column type {t}")


def attribute_name(field: pa.Field) -> str:
    """The attribute a column stands for (`dynamodb.name`, else the column name)."""
    meta = field.metadata or {}
    name = meta.get(b"dynamodb.name")
    return name.decode() if name is not None else field.name


# ---------------------------------------------------------------------------
# Parquet
# ---------------------------------------------------------------------------

class TableLayout:
    """The fixed target schema of one table and a converter per column."""

    def __init__(self, schema: pa.Schema):
        table = (schema.metadata or {}).get(b"dynamodb.table")
        if table is None:
            raise PipelineError("the --arrow-schema file has no dynamodb.table metadata")
        self.table = table.decode()
        self.schema = schema
        names = list(schema.names)
        if names[-len(META_COLUMNS):] != list(META_COLUMNS):
            raise PipelineError("the --arrow-schema file does not end in the __ columns")
        self.columns = [
            (attribute_name(f), arrow_converter(f, attribute_name(f)))
            for f in schema
            if f.name not in META_COLUMNS
        ]
        self.attributes = frozenset(a for a, _ in self.columns)


class PartitionWriter:
    """Rows of one table and day: buffered, converted to Arrow in batches,
    written in row groups, committed file by file (temp name, fsync, rename)."""

    def __init__(self, directory: str, layout: TableLayout):
        self.directory = directory
        self.layout = layout
        self.width = len(layout.schema)
        self.rows: list[list] = [[] for _ in range(self.width)]
        self.batches: list[pa.RecordBatch] = []
        self.batched_rows = 0
        self.file = None
        self.writer: pq.ParquetWriter | None = None
        self.file_rows = 0
        self.files = 0
        self.part = 0

    def add(self, change: Change) -> None:
        image, raw = change.row_image()
        layout = self.layout
        if not image.keys() <= layout.attributes:
            missing = sorted(image.keys() - layout.attributes)
            raise PipelineError(
                f"{layout.table}: attributes {missing} are not in the target schema "
                "(pass the newest, widest file dynamo-cdc wrote)")
        rows = self.rows
        for i, (attribute, convert) in enumerate(layout.columns):
            value = image.get(attribute)
            rows[i].append(None if value is None else convert(value, raw[attribute]))
        i = len(layout.columns)
        for value in (change.op, change.table, change.shard, change.seq, change.event_id,
                      change.ts_ms, change.op == "d", change.ttl_delete):
            rows[i].append(value)
            i += 1
        if len(rows[0]) >= BATCH_ROWS:
            self._to_arrow()

    def _to_arrow(self) -> None:
        """Converts the buffered Python rows into one Arrow record batch."""
        if not self.rows[0]:
            return
        arrays = [pa.array(values, type=f.type) for values, f in zip(self.rows, self.layout.schema)]
        batch = pa.RecordBatch.from_arrays(arrays, schema=self.layout.schema)
        self.rows = [[] for _ in range(self.width)]
        self.batches.append(batch)
        self.batched_rows += batch.num_rows
        if self.batched_rows >= ROW_GROUP_ROWS:
            self._write(ROW_GROUP_ROWS)

    def _write(self, at_least: int) -> None:
        """Writes whole row groups while `at_least` rows are batched."""
        while self.batched_rows >= at_least and self.batched_rows > 0:
            room = MAX_ROWS_PER_FILE - self.file_rows
            table = pa.Table.from_batches(self.batches, schema=self.layout.schema)
            take = min(ROW_GROUP_ROWS, room, table.num_rows)
            if self.writer is None:
                self._open()
            self.writer.write_table(table.slice(0, take), row_group_size=ROW_GROUP_ROWS)
            self.file_rows += take
            rest = table.slice(take)
            self.batches = rest.to_batches() if rest.num_rows else []
            self.batched_rows = rest.num_rows
            if self.file_rows >= MAX_ROWS_PER_FILE or self.file.tell() >= MAX_FILE_BYTES:
                self._commit()

    def _open(self) -> None:
        os.makedirs(self.directory, exist_ok=True)
        self.part += 1
        self.final = os.path.join(self.directory, f"part-{self.part:05d}.parquet")
        self.temp = os.path.join(self.directory, f".part-{self.part:05d}.parquet.inprogress")
        self.file = open(self.temp, "wb")
        self.writer = pq.ParquetWriter(self.file, self.layout.schema, compression="zstd")
        self.file_rows = 0

    def _commit(self) -> None:
        """Closes the open file and moves it into view, durably."""
        self.writer.close()
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.rename(self.temp, self.final)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self.writer = None
        self.file = None
        self.files += 1

    def close(self) -> None:
        self._to_arrow()
        self._write(1)
        if self.writer is not None:
            self._commit()


class ParquetOutput:
    """Writes the rows of one table under `root/<table>/date=YYYY-MM-DD/`."""

    # How rows are converted and buffered (peer_lean.py swaps both).
    layout_class = TableLayout
    partition_class = PartitionWriter

    def __init__(self, root: str, schema_file: str):
        self.root = root
        self.layout = self.layout_class(pq.read_schema(schema_file))
        self.partitions: dict[int, PartitionWriter] = {}
        self.rows = 0

    def add(self, change: Change) -> None:
        if change.table != self.layout.table:
            raise PipelineError(
                f"record of table {change.table!r}, but the target schema is {self.layout.table!r}")
        day = 0 if change.ts_ms is None else change.ts_ms // MS_PER_DAY
        partition = self.partitions.get(day)
        if partition is None:
            date = datetime.date(1970, 1, 1) + datetime.timedelta(days=day)
            directory = os.path.join(self.root, self.layout.table, f"date={date.isoformat()}")
            partition = self.partitions[day] = self.partition_class(directory, self.layout)
        partition.add(change)
        self.rows += 1

    def close(self) -> int:
        for partition in self.partitions.values():
            partition.close()
        return sum(p.files for p in self.partitions.values())


# ---------------------------------------------------------------------------
# Kafka (Avro, Confluent wire format)
# ---------------------------------------------------------------------------

def avro_converter(avro_type: Any, dynamodb_type: str | None, named: dict, where: str) -> Converter:
    """The converter into an Avro type of dynamo-cdc's generated schemas
    (nullable unions are handled by the caller)."""
    if isinstance(avro_type, list):  # ["null", X], or a widened column's
        # ["null", former..., X]: values are written as X, the last branch.
        branches = [b for b in avro_type if b != "null"]
        return avro_converter(branches[-1], dynamodb_type, named, where)
    if isinstance(avro_type, str) and avro_type in named:
        return avro_converter(named[avro_type], dynamodb_type, named, where)
    if dynamodb_type == "json":
        return lambda value, raw: ddb_json(raw)
    if avro_type == "null":
        return lambda value, raw: None
    if avro_type == "string":
        if dynamodb_type == "number":
            return _number_converter(pa.string(), where)
        check = _expect(str, where)
        return lambda value, raw: check(value)
    if avro_type == "long":
        return _number_converter(pa.int64(), where)
    if avro_type == "double":
        return _number_converter(pa.float64(), where)
    if avro_type == "boolean":
        check = _expect(bool, where)
        return lambda value, raw: check(value)
    if avro_type == "bytes":
        return _binary_converter(where)
    if not isinstance(avro_type, dict):
        raise PipelineError(f"{where}: unsupported Avro type {avro_type!r}")
    kind = avro_type["type"]
    if kind == "bytes" and avro_type.get("logicalType") == "decimal":
        return _number_converter(pa.decimal128(38, 0), where)
    if kind == "array":
        items = avro_type["items"]
        if isinstance(items, list):  # nullable items: a declared list (L)
            item = _nullable(avro_converter(items, None, named, where + "[]"))

            def list_(value, raw):
                if not isinstance(value, list):
                    raise PipelineError(f"{where}: expected a list, got {value!r}")
                return [item(v, r) for v, r in zip(value, raw["L"])]
            return list_
        # A set (SS, NS, BS): sorted elements; a number set of `string` items
        # holds exact decimal strings.
        as_text = _number_converter(pa.string(), where)
        item = avro_converter(items, None, named, where + "[]")

        def set_(value, raw):
            elements = _set_elements(value, where)
            if elements and elements[0].__class__ is Decimal and items == "string":
                return [as_text(e, None) for e in elements]
            return [item(e, None) for e in elements]
        return set_
    if kind == "record":
        named[avro_type["name"]] = avro_type
        fields = [
            (f.get("dynamodb_name", f["name"]), f["name"],
             _nullable(avro_converter(f["type"], f.get("dynamodb_type"), named, f"{where}.{f['name']}")))
            for f in avro_type["fields"]
        ]
        known = {a for a, _, _ in fields}

        def record(value, raw):
            if not isinstance(value, dict) or not value.keys() <= known:
                raise PipelineError(f"{where}: {value!r} does not fit the record")
            members = raw["M"]
            return {name: conv(value.get(attr), members.get(attr)) for attr, name, conv in fields}
        return record
    raise PipelineError(f"{where}: unsupported Avro type {avro_type!r}")


class ImageEncoder:
    """Turns an image (deserialized and raw) into the datum of an Avro record
    of attribute fields, every field present (null when absent)."""

    def __init__(self, record: dict, skip: tuple = ()):
        named: dict = {}
        self.fields = [
            (f.get("dynamodb_name", f["name"]), f["name"],
             avro_converter(f["type"], f.get("dynamodb_type"), named, f.get("dynamodb_name", f["name"])))
            for f in record["fields"]
            if f["name"] not in skip
        ]
        self.attributes = frozenset(a for a, _, _ in self.fields)

    def datum(self, image: dict, raw: dict) -> dict:
        if not image.keys() <= self.attributes:
            missing = sorted(image.keys() - self.attributes)
            raise PipelineError(f"attributes {missing} are not in the value schema "
                                "(pass the newest schema dynamo-cdc registered)")
        out = {}
        for attribute, name, convert in self.fields:
            value = image.get(attribute)
            out[name] = None if value is None else convert(value, raw[attribute])
        return out


def register(registry: str, subject: str, schema_text: str) -> int:
    """Registers a schema under `subject` and returns its id."""
    request = urllib.request.Request(
        f"{registry.rstrip('/')}/subjects/{subject}/versions",
        data=json.dumps({"schema": schema_text}).encode(),
        headers={"Content-Type": "application/vnd.schemaregistry.v1+json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return int(json.load(response)["id"])


class KafkaOutput:
    """Encodes each change as dynamo-cdc does and produces it."""

    # How an image becomes an Avro datum (peer_lean.py swaps it).
    encoder_class = ImageEncoder

    def __init__(self, brokers: str, topic_template: str, registry: str,
                 value_schema_file: str, key_schema_file: str, tombstones: bool):
        import fastavro
        from confluent_kafka import Producer

        self.topic_template = topic_template
        self.registry = registry
        self.tombstones = tombstones
        with open(value_schema_file, encoding="utf-8") as f:
            self.value_text = f.read().strip()
        with open(key_schema_file, encoding="utf-8") as f:
            self.key_text = f.read().strip()
        value_json = json.loads(self.value_text)
        key_json = json.loads(self.key_text)
        self.value_schema = fastavro.parse_schema(value_json)
        self.key_schema = fastavro.parse_schema(key_json)
        self.write = fastavro.schemaless_writer

        fields = {f["name"]: f for f in value_json["fields"]}
        self.envelope = "before" in fields and "source" in fields
        if self.envelope:
            value_record = next(b for b in fields["before"]["type"] if b != "null")
            # The union branch, named, so fastavro need not validate the
            # record to pick it (Avro "tuple notation").
            namespace = value_record.get("namespace", value_json.get("namespace"))
            self.value_name = f"{namespace}.{value_record['name']}" if namespace else value_record["name"]
            self.image = self.encoder_class(value_record)
        else:
            self.image = self.encoder_class(value_json, skip=META_COLUMNS)
        self.key = self.encoder_class(key_json)

        self.producer = Producer({
            "bootstrap.servers": brokers,
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": "zstd",
        })
        self.ids: dict[str, tuple[bytes, bytes]] = {}  # topic -> framing prefixes
        self.sent = 0
        self.delivered = 0
        self.failed = 0
        self.first_error: str | None = None
        self.tombstones_sent = 0

    def _prefixes(self, topic: str) -> tuple[bytes, bytes]:
        """The wire-format prefixes (magic byte 0, schema id) of a topic's
        key and value, registering both schemas the first time."""
        prefixes = self.ids.get(topic)
        if prefixes is None:
            key_id = register(self.registry, f"{topic}-key", self.key_text)
            value_id = register(self.registry, f"{topic}-value", self.value_text)
            prefixes = self.ids[topic] = (struct.pack(">bI", 0, key_id), struct.pack(">bI", 0, value_id))
        return prefixes

    def _encode(self, prefix: bytes, schema: Any, datum: dict) -> bytes:
        out = io.BytesIO()
        out.write(prefix)
        self.write(out, schema, datum)
        return out.getvalue()

    def _value(self, c: Change) -> dict:
        if not self.envelope:
            image, raw = c.row_image()
            datum = self.image.datum(image, raw)
            datum.update({
                "__op": c.op, "__table": c.table, "__shard_id": c.shard,
                "__sequence_number": c.seq, "__event_id": c.event_id,
                "__source_ts_ms": c.ts_ms, "__deleted": c.op == "d",
                "__ttl_delete": c.ttl_delete,
            })
            return datum
        # Deletes: the old image (or the keys) before, nothing after. Others:
        # the old image if any before, the new image (or the keys) after.
        if c.op == "d":
            before = (c.old, c.old_raw) if c.old is not None else (c.keys, c.keys_raw)
            after = None
        else:
            before = (c.old, c.old_raw) if c.old is not None else None
            after = (c.new, c.new_raw) if c.new is not None else (c.keys, c.keys_raw)
        image = self.image.datum
        return {
            "before": None if before is None else (self.value_name, image(*before)),
            "after": None if after is None else (self.value_name, image(*after)),
            "op": c.op,
            "ts_ms": c.ts_ms,
            "source": {
                "connector": "dynamodb",
                "table": c.table,
                "stream_arn": c.stream_arn,
                "shard_id": c.shard,
                "sequence_number": c.seq,
                "event_id": c.event_id,
                "approx_creation_ms": c.ts_ms,
                "ttl_delete": c.ttl_delete,
            },
        }

    def _delivered(self, err, msg) -> None:
        if err is None:
            self.delivered += 1
        else:
            self.failed += 1
            if self.first_error is None:
                self.first_error = str(err)

    def _produce(self, topic: str, key: bytes, value: bytes | None, headers: list) -> None:
        while True:
            try:
                self.producer.produce(topic, value=value, key=key, headers=headers,
                                      on_delivery=self._delivered)
                break
            except BufferError:  # the local queue is full: let it drain
                self.producer.poll(0.1)
        self.sent += 1
        if self.sent % POLL_EVERY == 0:
            self.producer.poll(0)

    def add(self, c: Change) -> None:
        topic = self.topic_template.replace("{table}", c.table)
        key_prefix, value_prefix = self._prefixes(topic)
        key = self._encode(key_prefix, self.key_schema, self.key.datum(c.keys, c.keys_raw))
        value = self._encode(value_prefix, self.value_schema, self._value(c))
        headers = [
            ("dynamodb.table", c.table.encode()),
            ("dynamodb.shard_id", c.shard.encode()),
            ("dynamodb.sequence_number", c.seq.encode()),
            ("dynamodb.event_id", c.event_id.encode()),
        ]
        self._produce(topic, key, value, headers)
        if self.tombstones and c.op == "d":
            # A compacted topic forgets the item after this null value.
            self._produce(topic, key, None, headers)
            self.tombstones_sent += 1

    def close(self) -> None:
        remaining = self.producer.flush(300)
        if remaining:
            self.failed += remaining
            self.first_error = self.first_error or f"{remaining} messages not delivered in time"


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--input", required=True, help="capture file or directory")
    p.add_argument("--mode", choices=("parquet", "kafka", "both"), required=True)
    p.add_argument("--parquet", metavar="DIR", help="Parquet dataset root")
    p.add_argument("--arrow-schema", metavar="FILE.parquet",
                   help="a Parquet file dynamo-cdc wrote for the table: its schema is the target")
    p.add_argument("--brokers", metavar="HOST:PORT")
    p.add_argument("--topic-template", default="peer.{table}")
    p.add_argument("--registry", metavar="URL", help="schema registry URL")
    p.add_argument("--value-schema", metavar="FILE.avsc")
    p.add_argument("--key-schema", metavar="FILE.avsc")
    p.add_argument("--no-tombstones", action="store_true",
                   help="no null-value message after a delete (dynamo-cdc's tombstones = false)")
    args = p.parse_args(argv)
    if args.mode in ("parquet", "both") and not (args.parquet and args.arrow_schema):
        p.error("--mode parquet needs --parquet and --arrow-schema")
    if args.mode in ("kafka", "both") and not (
            args.brokers and args.registry and args.value_schema and args.key_schema):
        p.error("--mode kafka needs --brokers, --registry, --value-schema and --key-schema")
    return args


def run(args: argparse.Namespace, reader_class: type = CaptureReader,
        parquet_class: type = ParquetOutput, kafka_class: type = KafkaOutput) -> int:
    """One pass over the capture into the outputs of `args.mode`, with the
    given reader and outputs (peer_lean.py passes its own)."""
    started = time.monotonic()
    parquet = parquet_class(args.parquet, args.arrow_schema) if args.mode != "kafka" else None
    kafka = None
    if args.mode != "parquet":
        kafka = kafka_class(args.brokers, args.topic_template, args.registry,
                            args.value_schema, args.key_schema, not args.no_tombstones)
    reader = reader_class(args.input)
    records = 0
    for changes in reader.pages():  # one page at a time
        for change in changes:
            if parquet is not None:
                parquet.add(change)
            if kafka is not None:
                kafka.add(change)
        records += len(changes)
    summary: dict[str, Any] = {"records": records}
    if parquet is not None:
        summary["parquet_files"] = parquet.close()
        summary["parquet_rows"] = parquet.rows
    if kafka is not None:
        kafka.close()
        summary["kafka_messages"] = kafka.delivered
        summary["kafka_tombstones"] = kafka.tombstones_sent
        summary["kafka_failed"] = kafka.failed
    summary["duplicates_skipped"] = reader.duplicates
    summary["elapsed_s"] = round(time.monotonic() - started, 3)
    print(json.dumps(summary), flush=True)
    if kafka is not None and kafka.failed:
        print(f"peer: {kafka.failed} Kafka deliveries failed: {kafka.first_error}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None, **classes: type) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return run(args, **classes)
    except (PipelineError, OSError, ValueError, KeyError, TypeError, decimal.DecimalException) as e:
        print(f"peer: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
