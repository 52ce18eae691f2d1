#!/usr/bin/env python3
"""A lean Python DynamoDB Streams -> Parquet / Kafka pipeline (benchmark baseline).

What most Lambda functions actually do with a stream batch, and no more:
`json.loads` per page, boto3's `TypeDeserializer` for the images a change
needs (only when it needs them), the item's attributes flattened into columns
by a small conversion per column, `pyarrow.Table.from_pylist` with the target
Arrow schema and Parquet zstd; Avro with fastavro and confluent-kafka. There
are no type checks beyond what pyarrow and fastavro do themselves.

Where the target schema stores a value as DynamoDB-JSON text (maps, lists and
attributes whose type varies), the text is `json.dumps` of the value as it
came over the wire, never re-serialized from the deserialized Python objects.

Everything else is shared with `peer.py` (imported from it): reading the
capture and each record's position, the Parquet file layout and commits, the
schema registry and the Kafka producer, the command line and the summary. So
its output is the same, row for row and message for message, and `check.py`
compares it with dynamo-cdc's exactly as it does peer.py's. Usage, options and
the final JSON line are peer.py's:

    python peer_lean.py --input CAPTURE --mode parquet|kafka|both ...
"""

from __future__ import annotations

import json
import sys
from typing import Any, Callable

import pyarrow as pa

import peer
from peer import (
    BATCH_ROWS, META_COLUMNS, ROW_GROUP_ROWS, PipelineError, attribute_name,
    canonical_number, deserialize_image,
)

# (deserialized value, raw DynamoDB-JSON value) -> what the column holds;
# never called with None (a NULL or absent attribute is a null).
Converter = Callable[[Any, Any], Any]


def _same(value, raw):
    return value


def _dumps(value, raw):
    return json.dumps(raw)


class Change:
    """A stream record whose images are deserialized on first use: a change
    written to Parquet only needs the image its row shows."""

    __slots__ = (
        "op", "table", "stream_arn", "shard", "seq", "event_id", "ts_ms", "ttl_delete",
        "keys_raw", "old_raw", "new_raw", "_keys", "_old", "_new",
    )

    def __init__(self):
        self._keys = self._old = self._new = None

    @property
    def keys(self) -> dict:
        if self._keys is None:
            self._keys = deserialize_image(self.keys_raw)
        return self._keys

    @property
    def old(self) -> dict | None:
        if self._old is None and self.old_raw is not None:
            self._old = deserialize_image(self.old_raw)
        return self._old

    @property
    def new(self) -> dict | None:
        if self._new is None and self.new_raw is not None:
            self._new = deserialize_image(self.new_raw)
        return self._new

    def row_image(self) -> tuple[dict, dict]:
        """The state a flat row shows (as peer.Change.row_image)."""
        if self.op == "d":
            if self.old_raw is not None:
                return self.old, self.old_raw
        elif self.new_raw is not None:
            return self.new, self.new_raw
        return self.keys, self.keys_raw


class CaptureReader(peer.CaptureReader):
    def change(self, record: dict, shard: str) -> Change:
        return peer.read_record(record, shard, Change())


# ---------------------------------------------------------------------------
# Parquet: rows as dicts, pyarrow.Table.from_pylist
# ---------------------------------------------------------------------------

def arrow_value(field: pa.Field) -> Converter:
    """The conversion into an Arrow column dynamo-cdc wrote, from its type and
    `dynamodb.type` metadata."""
    tag = (field.metadata or {}).get(b"dynamodb.type", b"").decode()
    t = field.type
    if tag == "json":
        return _dumps
    if tag == "N":
        return _number(t)
    if tag == "B":
        return lambda value, raw: value.value
    if tag == "SS":
        return lambda value, raw: sorted(value)
    if tag == "NS":
        item = _number(t.value_type)
        return lambda value, raw: [item(n, None) for n in sorted(value)]
    if tag == "BS":
        return lambda value, raw: sorted(b.value for b in value)
    if tag == "L":
        item = arrow_value(t.value_field)
        return lambda value, raw: [
            None if v is None else item(v, r) for v, r in zip(value, raw["L"])]
    if tag == "M":
        members = {attribute_name(f): (f.name, arrow_value(f)) for f in t}
        return lambda value, raw: _flatten(members, value, raw["M"])
    return _same  # S, BOOL; pyarrow refuses what does not fit


def _number(t: pa.DataType) -> Converter:
    if pa.types.is_int64(t):
        return lambda value, raw: int(value)
    if pa.types.is_string(t):
        return lambda value, raw: canonical_number(value)
    if pa.types.is_float64(t):
        return lambda value, raw: float(value)
    return _same  # decimal128: pyarrow takes the Decimal


def _flatten(columns: dict, image: dict, raw: dict) -> dict:
    """An image as {column: value}; an attribute without a column is an error."""
    row = {}
    try:
        for attribute, value in image.items():
            name, convert = columns[attribute]
            row[name] = None if value is None else convert(value, raw[attribute])
    except KeyError as e:
        raise PipelineError(f"attribute {e} is not in the target schema "
                            "(pass the newest schema dynamo-cdc wrote)") from None
    return row


class TableLayout(peer.TableLayout):
    def __init__(self, schema: pa.Schema):
        super().__init__(schema)  # checks the schema and names the table
        self.by_attribute = {
            attribute_name(f): (f.name, arrow_value(f))
            for f in schema if f.name not in META_COLUMNS
        }


class PartitionWriter(peer.PartitionWriter):
    """peer.PartitionWriter's files and row groups, filled from dict rows."""

    def __init__(self, directory: str, layout: TableLayout):
        super().__init__(directory, layout)
        self.pending: list[dict] = []

    def add(self, c: Change) -> None:
        image, raw = c.row_image()
        row = _flatten(self.layout.by_attribute, image, raw)
        row["__op"] = c.op
        row["__table"] = c.table
        row["__shard_id"] = c.shard
        row["__sequence_number"] = c.seq
        row["__event_id"] = c.event_id
        row["__source_ts_ms"] = c.ts_ms
        row["__deleted"] = c.op == "d"
        row["__ttl_delete"] = c.ttl_delete
        self.pending.append(row)
        if len(self.pending) >= BATCH_ROWS:
            self._to_arrow()

    def _to_arrow(self) -> None:
        if not self.pending:
            return
        table = pa.Table.from_pylist(self.pending, schema=self.layout.schema)
        self.pending = []
        self.batches += table.to_batches()
        self.batched_rows += table.num_rows
        if self.batched_rows >= ROW_GROUP_ROWS:
            self._write(ROW_GROUP_ROWS)


class ParquetOutput(peer.ParquetOutput):
    layout_class = TableLayout
    partition_class = PartitionWriter


# ---------------------------------------------------------------------------
# Kafka: Avro datums as dicts for fastavro
# ---------------------------------------------------------------------------

def avro_value(avro_type: Any, dynamodb_type: str | None, named: dict) -> Converter:
    """The conversion into an Avro type of dynamo-cdc's generated schemas."""
    if isinstance(avro_type, list):  # ["null", X], or a widened column's
        # ["null", former..., X]: values are written as X, the last branch.
        avro_type = [b for b in avro_type if b != "null"][-1]
    if isinstance(avro_type, str) and avro_type in named:
        avro_type = named[avro_type]
    if dynamodb_type == "json":
        return _dumps
    if avro_type == "string":
        return (lambda value, raw: canonical_number(value)) if dynamodb_type == "number" else _same
    if avro_type == "long":
        return lambda value, raw: int(value)
    if avro_type == "double":
        return lambda value, raw: float(value)
    if avro_type == "bytes":
        return lambda value, raw: value.value
    if not isinstance(avro_type, dict):
        return _same  # boolean, null
    kind = avro_type["type"]
    if kind == "array":
        items = avro_type["items"]
        if isinstance(items, list):  # nullable items: a declared list (L)
            item = avro_value(items, None, named)
            return lambda value, raw: [
                None if v is None else item(v, r) for v, r in zip(value, raw["L"])]
        if items == "bytes":
            return lambda value, raw: sorted(b.value for b in value)
        # A number set (strings: exact decimal text), or a string set.
        number = avro_value(items, "number", named)
        return lambda value, raw: (
            [number(n, None) for n in sorted(value)] if "NS" in raw else sorted(value))
    if kind == "record":
        named[avro_type["name"]] = avro_type
        encoder = ImageEncoder(avro_type, named=named)
        return lambda value, raw: encoder.datum(value, raw["M"])
    return _same  # the decimal logical type: fastavro takes the Decimal


class ImageEncoder:
    """An image as the datum of an Avro record of attribute fields, every
    field present (null when absent)."""

    def __init__(self, record: dict, skip: tuple = (), named: dict | None = None):
        named = {} if named is None else named
        fields = [f for f in record["fields"] if f["name"] not in skip]
        self.names = [f["name"] for f in fields]
        self.by_attribute = {
            f.get("dynamodb_name", f["name"]):
                (f["name"], avro_value(f["type"], f.get("dynamodb_type"), named))
            for f in fields
        }

    def datum(self, image: dict, raw: dict) -> dict:
        out = dict.fromkeys(self.names)
        out.update(_flatten(self.by_attribute, image, raw))
        return out


class KafkaOutput(peer.KafkaOutput):
    encoder_class = ImageEncoder


def main(argv: list[str] | None = None) -> int:
    return peer.main(argv, reader_class=CaptureReader,
                     parquet_class=ParquetOutput, kafka_class=KafkaOutput)


if __name__ == "__main__":
    sys.exit(main())
