#!/usr/bin/env python3
"""Checks that two CDC outputs hold the same changes, value for value.

Used by the side-by-side benchmark so that neither side can win by doing less:
after both pipelines ran on the same capture, their outputs are read back and
compared change by change (keyed by shard and sequence number).

    python check.py parquet DIR_A DIR_B
    python check.py kafka --brokers HOST:PORT --registry URL TOPIC_A TOPIC_B

parquet: reads every committed `*.parquet` file under each root, recursively
(directories and files whose names start with `_` or `.` are skipped: dead
letters, gap records, temp files), keys rows by (`__shard_id`,
`__sequence_number`) and compares every column.

kafka: consumes both topics from the beginning of every partition to its end,
decodes keys and values with the writer schema fetched from the registry by
the id in each message (Confluent wire format), keys messages by the
`dynamodb.shard_id` and `dynamodb.sequence_number` headers (a change and its
tombstone share them; they are compared in order) and compares keys, values and
headers.

Values are normalised first, so that the same DynamoDB value compares equal in
the physical forms it may legitimately take (a schema widened between files or
schema versions; DynamoDB-JSON text with keys in another order):

* numbers: an int64/long, a Decimal128/Avro decimal or a double becomes its
  exact canonical decimal text; a decimal-string column is taken as written
  (it must already be canonical); numbers inside DynamoDB JSON are compared by
  value;
* DynamoDB-JSON text is parsed: map keys in any order, sets in any order;
* typed set and list columns keep their order (both sides must sort sets);
* an absent column or field and a null one are the same.

Prints a summary line, e.g.
`check parquet: rows=N equal=N missing_in_b=0 extra_in_b=0 different=0`,
and up to 5 example differences; exits 1 on any difference or if either side
is empty.
"""

from __future__ import annotations

import argparse
import base64
import decimal
import io
import json
import os
import struct
import sys
import time
import urllib.request
import uuid
from decimal import Decimal
from typing import Any, Callable, Iterable, Iterator

EXAMPLES = 5
META_COLUMNS = (
    "__op", "__table", "__shard_id", "__sequence_number",
    "__event_id", "__source_ts_ms", "__deleted", "__ttl_delete",
)

# ---------------------------------------------------------------------------
# Normal forms
#
#   None                        null or absent
#   ("S", str) ("N", text) ("B", bytes) ("BOOL", bool) ("NULL",)
#   ("SET", (element, ...))     SS/NS/BS; elements str, canonical number text, bytes
#   ("L", (value, ...))         a list
#   ("M", ((name, value), ...)) a map or record, sorted by name, nulls dropped
#   other values (metadata columns) as they are
# ---------------------------------------------------------------------------

_CANONICAL = decimal.Context(prec=200, Emin=-999_999, Emax=999_999)


def canonical_number(value: Decimal) -> str:
    """Plain notation, no exponent, no trailing fractional zeros, no `-0`."""
    text = format(value.normalize(_CANONICAL), "f")
    return "0" if text == "-0" else text


def number_text(value: Any) -> str:
    """A number of any physical type as canonical text. Strings are taken as
    written: a decimal-string column must already hold the canonical text."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        raise TypeError(f"boolean {value!r} where a number was expected")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return canonical_number(Decimal(repr(value)))
    if isinstance(value, Decimal):
        return canonical_number(value)
    raise TypeError(f"{value!r} is not a number")


def set_element(value: Any) -> Any:
    if isinstance(value, (str, bytes)):
        return value
    return number_text(value)


def ddb(value: dict) -> Any:
    """Normal form of one parsed DynamoDB-JSON value."""
    (tag, payload), = value.items()
    if tag == "S":
        return ("S", payload)
    if tag == "N":
        return ("N", canonical_number(Decimal(payload)))
    if tag == "B":
        return ("B", base64.b64decode(payload))
    if tag == "BOOL":
        return ("BOOL", payload)
    if tag == "NULL":
        return ("NULL",)
    if tag == "SS":
        return ("SET", tuple(sorted(payload)))
    if tag == "NS":
        return ("SET", tuple(canonical_number(d) for d in sorted(Decimal(n) for n in payload)))
    if tag == "BS":
        return ("SET", tuple(sorted(base64.b64decode(b) for b in payload)))
    if tag == "L":
        return ("L", tuple(ddb(v) for v in payload))
    if tag == "M":
        return ("M", tuple(sorted((k, ddb(v)) for k, v in payload.items())))
    raise ValueError(f"unknown DynamoDB type tag {tag!r}")


def ddb_text(text: str) -> Any:
    return ddb(json.loads(text))


def record_form(pairs: Iterable[tuple[str, Any]]) -> tuple:
    return ("M", tuple(sorted((k, v) for k, v in pairs if v is not None)))


def in_list(value: Any) -> Any:
    """A null inside a list is DynamoDB's NULL (as in DynamoDB JSON)."""
    return ("NULL",) if value is None else value


# ---------------------------------------------------------------------------
# Showing differences
# ---------------------------------------------------------------------------

def short(value: Any, limit: int = 160) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def diff(a: Any, b: Any, path: str, out: list) -> None:
    """Appends (path, a, b) for the innermost places where a and b differ."""
    if a == b:
        return
    if (isinstance(a, tuple) and isinstance(b, tuple) and a[:1] == b[:1] == ("M",)):
        da, db = dict(a[1]), dict(b[1])
        for k in sorted(da.keys() | db.keys()):
            diff(da.get(k), db.get(k), f"{path}.{k}" if path else k, out)
        return
    out.append((path or "(value)", a, b))


def seq_order(key: tuple[str, str]) -> tuple:
    shard, seq = key
    return (shard, len(seq), seq)


def report(kind: str, a: dict, b: dict, dup_a: list, dup_b: list,
           examples: Callable[[list], dict], extra: str = "") -> int:
    """Compares {key: digest} of both sides, prints the summary, returns the exit code."""
    missing = [k for k in a if k not in b]
    added = [k for k in b if k not in a]
    different = [k for k in a if k in b and a[k] != b[k]]
    equal = len(a) - len(missing) - len(different)
    print(f"check {kind}: rows={len(a)}{extra} equal={equal} missing_in_b={len(missing)} "
          f"extra_in_b={len(added)} different={len(different)}"
          + (f" duplicates_in_a={len(dup_a)}" if dup_a else "")
          + (f" duplicates_in_b={len(dup_b)}" if dup_b else ""))
    failed = bool(missing or added or different or dup_a or dup_b)
    if not a or not b:
        print(f"check {kind}: {'A' if not a else 'B'} is empty", file=sys.stderr)
        failed = True
    for label, keys in (("missing in B", missing), ("extra in B", added),
                        ("twice in A", dup_a), ("twice in B", dup_b)):
        for shard, seq in sorted(keys, key=seq_order)[:EXAMPLES]:
            print(f"  {label}: shard={shard} seq={seq}")
    if different:
        wanted = sorted(different, key=seq_order)[:EXAMPLES]
        full = examples(wanted)  # key -> (normal form A, normal form B)
        for key in wanted:
            places: list = []
            diff(*full[key], "", places)
            for path, va, vb in places[:EXAMPLES]:
                print(f"  different: shard={key[0]} seq={key[1]} {path}: A={short(va)} B={short(vb)}")
    return 1 if failed else 0


# ---------------------------------------------------------------------------
# Parquet
# ---------------------------------------------------------------------------

def parquet_files(root: str) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(("_", "."))]
        found += [os.path.join(dirpath, f) for f in filenames
                  if f.endswith(".parquet") and not f.startswith(("_", "."))]
    return sorted(found)


def arrow_normaliser(field) -> Callable[[Any], Any]:
    """Normal form of a non-null value of an Arrow column, from its type and
    `dynamodb.type` metadata."""
    meta = field.metadata or {}
    tag = meta.get(b"dynamodb.type", b"").decode()
    t = field.type
    if not tag:  # the __ columns: compared as they are
        return lambda v: v
    if tag == "json":
        return ddb_text
    if tag == "NULL":
        return lambda v: None
    if tag == "S":
        return lambda v: ("S", v)
    if tag == "N":
        return lambda v: ("N", number_text(v))
    if tag == "B":
        return lambda v: ("B", v)
    if tag == "BOOL":
        return lambda v: ("BOOL", v)
    if tag in ("SS", "NS", "BS"):
        return lambda v: ("SET", tuple(set_element(e) for e in v))
    if tag == "L":
        item = nullable(arrow_normaliser(t.value_field))
        return lambda v: ("L", tuple(in_list(item(e)) for e in v))
    if tag == "M":
        fields = [(attribute(f), f.name, nullable(arrow_normaliser(f))) for f in t]
        return lambda v: record_form((attr, norm(v.get(name))) for attr, name, norm in fields)
    raise ValueError(f"column {field.name}: unknown dynamodb.type {tag!r} for {t}")


def nullable(norm: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda v: None if v is None else norm(v)


def attribute(field) -> str:
    name = (field.metadata or {}).get(b"dynamodb.name")
    return name.decode() if name is not None else field.name


def parquet_rows(root: str) -> Iterator[tuple[tuple[str, str], tuple, str]]:
    """Yields (key, normal form of the row, file) of every row under root."""
    import pyarrow.parquet as pq

    for path in parquet_files(root):
        pf = pq.ParquetFile(path)  # the file alone: no hive partition columns
        schema = pf.schema_arrow
        names = schema.names
        if "__shard_id" not in names or "__sequence_number" not in names:
            raise ValueError(f"{path}: no __shard_id / __sequence_number columns")
        norms = [nullable(arrow_normaliser(f)) for f in schema]
        shard_i, seq_i = names.index("__shard_id"), names.index("__sequence_number")
        for batch in pf.iter_batches(batch_size=16_384):
            columns = [[norm(v) for v in column.to_pylist()]
                       for norm, column in zip(norms, batch.columns)]
            raw_shards = columns[shard_i]
            raw_seqs = columns[seq_i]
            for i in range(batch.num_rows):
                row = tuple(sorted((name, col[i]) for name, col in zip(names, columns)
                                   if col[i] is not None))
                yield (raw_shards[i], raw_seqs[i]), ("M", row), path


def digests(rows: Iterable) -> tuple[dict, list]:
    """{key: hash of the normal form}, and the keys that occurred twice.
    Hashes (not whole rows) keep memory small; both sides are hashed in this
    one process, so equal forms give equal hashes."""
    out: dict = {}
    dups = []
    for key, form, _ in rows:
        h = hash(form)
        if key in out:
            dups.append(key)
            out[key] = (out[key], h)  # never equal to the other side's
        else:
            out[key] = h
    return out, dups


def check_parquet(dir_a: str, dir_b: str) -> int:
    for d in (dir_a, dir_b):
        if not os.path.isdir(d):
            print(f"check parquet: {d} is not a directory", file=sys.stderr)
            return 1
    a, dup_a = digests(parquet_rows(dir_a))
    b, dup_b = digests(parquet_rows(dir_b))

    def examples(keys: list) -> dict:
        wanted = set(keys)
        found: dict = {k: [None, None] for k in keys}
        for side, root in ((0, dir_a), (1, dir_b)):
            for key, form, _ in parquet_rows(root):
                if key in wanted:
                    found[key][side] = form
        return {k: tuple(v) for k, v in found.items()}

    return report("parquet", a, b, dup_a, dup_b, examples)


# ---------------------------------------------------------------------------
# Kafka
# ---------------------------------------------------------------------------

AVRO_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


class AvroNormaliser:
    """Normal forms of decoded Avro datums, guided by the writer schema
    (compiled once per schema into one function per type)."""

    def __init__(self, schema: Any):
        self.named: dict[str, dict] = {}
        self._collect(schema, None)
        self.normalise = self._compile(schema, None)

    def __call__(self, datum: Any) -> Any:
        return self.normalise(datum)

    def _collect(self, t: Any, namespace: str | None) -> None:
        if isinstance(t, list):
            for branch in t:
                self._collect(branch, namespace)
        elif isinstance(t, dict):
            if t.get("type") == "record":
                ns = t.get("namespace", namespace)
                self.named[t["name"]] = t
                if ns:
                    self.named[f"{ns}.{t['name']}"] = t
                for f in t["fields"]:
                    self._collect(f["type"], ns)
            elif t.get("type") == "array":
                self._collect(t["items"], namespace)

    def _python_type(self, t: Any) -> type | tuple[type, ...]:
        """The Python type fastavro decodes a branch of type `t` to."""
        if isinstance(t, str) and t not in AVRO_PRIMITIVES:
            return dict
        kind = t["type"] if isinstance(t, dict) else t
        return {"string": str, "long": int, "int": int, "double": float, "float": float,
                "boolean": bool, "bytes": (bytes, Decimal), "array": list, "map": dict,
                "record": dict}[kind]

    def _compile(self, t: Any, dynamodb_type: str | None) -> Callable[[Any], Any]:
        """A function from a non-null datum of `t` to its normal form."""
        if isinstance(t, list):  # ["null", X]: fastavro gives X's value
            branches = [b for b in t if b != "null"]
            if len(branches) == 1:
                return self._compile(branches[0], dynamodb_type)
            # A widened column keeps its former layouts as branches; fastavro
            # gives the value of the branch it was written in, told apart by
            # its Python type. The field's dynamodb_type is its string's.
            compiled = [(self._python_type(b),
                         self._compile(b, dynamodb_type if b == "string" else None))
                        for b in branches]

            def pick(v: Any) -> Any:
                for python_type, norm in compiled:
                    if isinstance(v, python_type) and not (python_type is int and isinstance(v, bool)):
                        return norm(v)
                raise ValueError(f"{v!r} fits no branch of {t}")
            return pick
        if isinstance(t, str) and t not in AVRO_PRIMITIVES:
            return self._compile(self.named[t], dynamodb_type)
        if dynamodb_type == "json":
            return ddb_text
        if dynamodb_type == "number":
            return lambda v: ("N", number_text(v))
        kind = t["type"] if isinstance(t, dict) else t
        if kind == "string":
            return lambda v: ("S", v)
        if kind in ("long", "int", "double", "float"):
            return lambda v: ("N", number_text(v))
        if kind == "bytes":  # plain, or the decimal logical type (a Decimal)
            return lambda v: ("N", number_text(v)) if isinstance(v, Decimal) else ("B", v)
        if kind == "boolean":
            return lambda v: ("BOOL", v)
        if kind == "null":
            return lambda v: None
        if kind == "array":
            items = t["items"]
            if isinstance(items, list):  # nullable items: a list
                item = nullable(self._compile(items, None))
                return lambda v: ("L", tuple(in_list(item(e)) for e in v))
            return lambda v: ("SET", tuple(set_element(e) for e in v))
        if kind == "record":
            fields = [(f["name"], f.get("dynamodb_name", f["name"]),
                       nullable(self._compile(f["type"], f.get("dynamodb_type"))))
                      for f in t["fields"]]
            return lambda v: record_form((attr, norm(v.get(name))) for name, attr, norm in fields)
        raise ValueError(f"unsupported Avro type {t!r}")


class Registry:
    """Writer schemas by id, fetched once each."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.cache: dict[int, tuple[Any, AvroNormaliser]] = {}

    def get(self, schema_id: int):
        found = self.cache.get(schema_id)
        if found is None:
            import fastavro

            with urllib.request.urlopen(f"{self.url}/schemas/ids/{schema_id}", timeout=30) as r:
                schema_json = json.loads(json.load(r)["schema"])
            found = self.cache[schema_id] = (
                fastavro.parse_schema(schema_json), AvroNormaliser(schema_json))
        return found

    def decode(self, data: bytes) -> Any:
        """Normal form of a Confluent-framed Avro message."""
        import fastavro

        if len(data) < 5 or data[0] != 0:
            raise ValueError("not in the Confluent wire format (magic byte 0, schema id)")
        (schema_id,) = struct.unpack(">I", data[1:5])
        parsed, normalise = self.get(schema_id)
        datum = fastavro.schemaless_reader(io.BytesIO(data[5:]), parsed, None)
        return normalise(datum)


def consume(brokers: str, topic: str, registry: Registry,
            idle_timeout: float = 30.0) -> Iterator[tuple[tuple[str, str], tuple, str]]:
    """Yields (key, normal form of the message, where) for every message of
    every partition of `topic`, from the beginning to the end."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    consumer = Consumer({
        "bootstrap.servers": brokers,
        "group.id": f"check-{uuid.uuid4()}",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
    })
    try:
        meta = consumer.list_topics(topic, timeout=30)
        info = meta.topics.get(topic)
        if info is None or info.error is not None or not info.partitions:
            raise ValueError(f"topic {topic}: {info.error if info else 'not found'}")
        pending = set(info.partitions)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in pending])
        last_progress = time.monotonic()
        while pending:
            batch = consumer.consume(num_messages=1000, timeout=1.0)
            if not batch and time.monotonic() - last_progress > idle_timeout:
                raise TimeoutError(f"topic {topic}: partitions {sorted(pending)} never reached their end")
            for msg in batch:
                last_progress = time.monotonic()
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard(msg.partition())
                        continue
                    raise RuntimeError(f"topic {topic}: {err}")
                headers = [(k, v) for k, v in (msg.headers() or [])]
                found = dict(headers)
                shard = found.get("dynamodb.shard_id")
                seq = found.get("dynamodb.sequence_number")
                where = f"{topic}/{msg.partition()}@{msg.offset()}"
                if shard is None or seq is None:
                    raise ValueError(f"{where}: no dynamodb.shard_id / sequence_number header")
                key = registry.decode(msg.key()) if msg.key() is not None else None
                value = registry.decode(msg.value()) if msg.value() is not None else "TOMBSTONE"
                # Headers in the order sent (a tuple compares in order; a
                # difference is shown per header name).
                form = ("M", (("headers", ("M", tuple(headers))), ("key", key), ("value", value)))
                yield (shard.decode(), seq.decode()), form, where
    finally:
        consumer.close()


def grouped(forms: list) -> tuple:
    """The messages of one change (the change, then its tombstone) as one
    form, numbered in the order read (both are on the key's partition)."""
    return ("M", tuple((str(i), f) for i, f in enumerate(forms)))


def check_kafka(brokers: str, registry_url: str, topic_a: str, topic_b: str) -> int:
    registry = Registry(registry_url)
    counts = {}

    def side(topic: str) -> dict:
        """{key: hashes of its messages in order}; only hashes are kept."""
        groups: dict = {}
        n = 0
        for key, form, _ in consume(brokers, topic, registry):
            groups.setdefault(key, []).append(hash(form))
            n += 1
        counts[topic] = n
        return {k: tuple(v) for k, v in groups.items()}

    a = side(topic_a)
    b = side(topic_b)

    def examples(keys: list) -> dict:
        found: dict = {k: ([], []) for k in keys}
        for i, topic in enumerate((topic_a, topic_b)):
            for key, form, _ in consume(brokers, topic, registry):
                if key in found:
                    found[key][i].append(form)
        return {k: tuple(grouped(f) if f else None for f in v) for k, v in found.items()}

    extra = f" messages={counts[topic_a]}"
    code = report("kafka", a, b, [], [], examples, extra=extra)
    if counts[topic_a] != counts[topic_b]:
        print(f"check kafka: {topic_a} holds {counts[topic_a]} messages, "
              f"{topic_b} {counts[topic_b]}")
        code = 1
    return code


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Checks that two CDC outputs hold the same changes.")
    sub = p.add_subparsers(dest="kind", required=True)
    pp = sub.add_parser("parquet", help="compare two Parquet dataset roots")
    pp.add_argument("dir_a")
    pp.add_argument("dir_b")
    pk = sub.add_parser("kafka", help="compare two Kafka topics of Confluent-framed Avro")
    pk.add_argument("--brokers", required=True)
    pk.add_argument("--registry", required=True, help="schema registry URL")
    pk.add_argument("topic_a")
    pk.add_argument("topic_b")
    args = p.parse_args(argv)
    try:
        if args.kind == "parquet":
            return check_parquet(args.dir_a, args.dir_b)
        return check_kafka(args.brokers, args.registry, args.topic_a, args.topic_b)
    except Exception as e:  # any failure to read counts as a failed check
        print(f"check {args.kind}: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
