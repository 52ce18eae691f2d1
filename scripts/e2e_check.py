#!/usr/bin/env python3
"""End-to-end check of dynamo-cdc's replay source and Parquet sink.

The check builds its own capture of DynamoDB Streams records full of awkward
values (with boto3's TypeSerializer, not with the project's generator), runs
`dynamo-cdc run --config <toml>` over it in each `numbers` mode, reads every
Parquet file back with pyarrow.dataset and with DuckDB, and compares every
value of every row with what boto3's TypeDeserializer makes of the record the
row came from. It also checks the file layout, the dead letters written for a
file of broken input, and that a second run over the same capture writes
nothing new.

Usage:
    pip install -r scripts/requirements.txt
    python3 scripts/e2e_check.py [--bin target/debug/dynamo-cdc] [--workdir DIR] [--keep]
    python3 scripts/e2e_check.py --self-test    # checks the checker, no binary needed

The last line printed is `e2e: N passed, M failed`; the exit status is 0 only
when nothing failed.
"""

from __future__ import annotations

import argparse
import base64
import collections
import dataclasses
import datetime as dt
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable, Optional

try:
    import duckdb
    import pyarrow as pa
    import pyarrow.dataset as pads
    import pyarrow.parquet as pq
    from boto3.dynamodb.types import Binary, TypeDeserializer, TypeSerializer
except ImportError as missing:  # pragma: no cover - environment problem
    sys.stderr.write(
        f"e2e_check: missing dependency ({missing}); "
        "install them with `pip install -r scripts/requirements.txt`\n"
    )
    sys.exit(2)


# ---------------------------------------------------------------------------
# Constants of the capture and of the output conventions
# ---------------------------------------------------------------------------

REGION = "us-east-1"
ACCOUNT = "123456789012"
STREAM_LABEL = "2024-01-01T00:00:00.000"
TTL_IDENTITY = {"type": "Service", "principalId": "dynamodb.amazonaws.com"}
OPS = {"INSERT": "c", "MODIFY": "u", "REMOVE": "d"}

#: Metadata columns every row carries, with the Arrow kind each must have.
META_COLUMNS = {
    "__op": "string",
    "__table": "string",
    "__shard_id": "string",
    "__sequence_number": "string",
    "__event_id": "string",
    "__source_ts_ms": "int64",
    "__deleted": "bool",
    "__ttl_delete": "bool",
}
#: Values `dynamodb.type` may take on an attribute column.
DYNAMODB_TYPES = {"S", "N", "B", "BOOL", "NULL", "SS", "NS", "BS", "json"}
#: Top-level keys of a typed DynamoDB JSON value.
TYPE_TAGS = {"S", "N", "B", "BOOL", "NULL", "SS", "NS", "BS", "L", "M"}

#: DuckDB adds these columns itself: the hive partition and the source file.
DUCKDB_FILE_COLUMN = "__e2e_file"
DUCKDB_PARTITION_COLUMN = "date"

#: Canonical plain decimal text: no exponent, no leading zeros, no trailing
#: fractional zeros (so no bare trailing point); "-0" is excluded separately.
CANONICAL_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]*[1-9])?")

#: Environment variable through which --self-test tells its fake binary
#: which fault to plant.
FAULT_ENV = "E2E_CHECK_FAULT"

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


# ---------------------------------------------------------------------------
# DynamoDB values: wire form, typed normal form, rendering
# ---------------------------------------------------------------------------

SERIALIZER = TypeSerializer()
EXPECT_DESERIALIZER = TypeDeserializer()


class ExactDeserializer(TypeDeserializer):
    """boto3's TypeDeserializer with numbers parsed exactly.

    boto3 parses numbers in a 38-digit context that traps on rounding. The
    canonical plain form of 9.99…E+125 has 126 digits (88 of them trailing
    zeros); boto3 would trap on it although the value is exact, so numbers read
    back from the output are parsed with plain `Decimal(text)`.
    """

    def _deserialize_n(self, value):
        return Decimal(value)

    def _deserialize_ns(self, value):
        return set(map(self._deserialize_n, value))


GOT_DESERIALIZER = ExactDeserializer()


def _map_binary(av: dict, convert) -> dict:
    """Applies `convert` to every B and BS payload of a typed value, recursively."""
    (kind, payload), = av.items()
    if kind == "B":
        return {"B": convert(payload)}
    if kind == "BS":
        return {"BS": [convert(b) for b in payload]}
    if kind == "L":
        return {"L": [_map_binary(v, convert) for v in payload]}
    if kind == "M":
        return {"M": {k: _map_binary(v, convert) for k, v in payload.items()}}
    return {kind: payload}


def to_wire(value: Any) -> dict:
    """A Python value as DynamoDB JSON on the wire (binary as base64 text)."""
    typed = SERIALIZER.serialize(value)
    return _map_binary(typed, lambda b: base64.b64encode(bytes(b)).decode("ascii"))


def wire_item(item: dict) -> dict:
    """A whole item (attribute name to Python value) in wire form."""
    return {name: to_wire(value) for name, value in item.items()}


def from_wire(av: dict) -> dict:
    """Wire DynamoDB JSON to the form TypeDeserializer takes (binary as bytes)."""
    return _map_binary(av, lambda text: base64.b64decode(text, validate=True))


def tag(value: Any) -> tuple:
    """Normalizes a deserialized value into a tagged, comparable form.

    Python's `True == 1 == Decimal(1)` would let a BOOL pass for a number, so
    every value carries its DynamoDB type: ("N", Decimal), ("S", str),
    ("B", bytes), ("BOOL", bool), ("NULL",), ("SS"|"NS"|"BS", frozenset),
    ("L", tuple), ("M", tuple of (name, value) sorted by name). Numbers compare
    by value, so 1.50 equals 1.5 and -0 equals 0.
    """
    if value is None:
        return ("NULL",)
    if isinstance(value, bool):
        return ("BOOL", value)
    if isinstance(value, Decimal):
        return ("N", value)
    if isinstance(value, int):
        return ("N", Decimal(value))
    if isinstance(value, str):
        return ("S", value)
    if isinstance(value, Binary):
        return ("B", bytes(value.value))
    if isinstance(value, (bytes, bytearray)):
        return ("B", bytes(value))
    if isinstance(value, (set, frozenset)):
        members = [tag(v) for v in value]
        kinds = {m[0] for m in members}
        kind = {"N": "NS", "S": "SS", "B": "BS"}.get(kinds.pop(), "?") if len(kinds) == 1 else "?"
        return (kind, frozenset(m[1] for m in members))
    if isinstance(value, list):
        return ("L", tuple(tag(v) for v in value))
    if isinstance(value, dict):
        return ("M", tuple(sorted(((k, tag(v)) for k, v in value.items()), key=lambda kv: kv[0])))
    return ("?", repr(value))


def top_level(tagged: Optional[tuple]) -> Optional[tuple]:
    """At the top level a NULL attribute and an absent one both read as null."""
    return None if tagged is None or tagged == ("NULL",) else tagged


def _plain(tagged: tuple) -> Any:
    """A JSON-friendly picture of a tagged value, for reports."""
    kind = tagged[0]
    if kind == "NULL":
        return {"NULL": True}
    if kind == "N":
        return {"N": str(tagged[1])}
    if kind == "B":
        return {"B": "0x" + tagged[1].hex()}
    if kind == "NS":
        return {"NS": [str(d) for d in sorted(tagged[1])]}
    if kind == "SS":
        return {"SS": sorted(tagged[1])}
    if kind == "BS":
        return {"BS": ["0x" + b.hex() for b in sorted(tagged[1])]}
    if kind == "L":
        return {"L": [_plain(v) for v in tagged[1]]}
    if kind == "M":
        return {"M": {k: _plain(v) for k, v in tagged[1]}}
    return {kind: tagged[1] if len(tagged) > 1 else None}


def render(tagged: Optional[tuple], limit: int = 160) -> str:
    """Short text of a tagged value (or null) for the mismatch report."""
    if tagged is None:
        return "null"
    text = json.dumps(_plain(tagged), ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def canonical_number(text: str) -> str:
    """The canonical plain decimal text of a DynamoDB number.

    No exponent, no leading zeros, no trailing fractional zeros, no "-0":
    "1.50" -> "1.5", "1.2E+3" -> "1200", "1E-3" -> "0.001".
    """
    number = Decimal(text)
    if number.is_zero():
        return "0"
    sign, digits, exponent = number.as_tuple()
    digits = list(digits)
    while digits[-1] == 0:
        digits.pop()
        exponent += 1
    body = "".join(map(str, digits))
    if exponent >= 0:
        body += "0" * exponent
    else:
        point = len(body) + exponent
        body = body[:point] + "." + body[point:] if point > 0 else "0." + "0" * -point + body
    return ("-" if sign else "") + body


def is_canonical_number(text: str) -> bool:
    """Whether `text` is already in canonical plain decimal form."""
    return bool(CANONICAL_NUMBER.fullmatch(text)) and text != "-0"


def date_of_ms(ms: int) -> str:
    """The UTC calendar date (YYYY-MM-DD) of an epoch time in milliseconds."""
    moment = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(milliseconds=ms)
    return moment.date().isoformat()


# ---------------------------------------------------------------------------
# The capture
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class ExpectedChange:
    """One good stream record and the row it must become."""

    table: str
    shard: str
    seq: str
    event_id: str
    op: str
    ttl: bool
    ts_ms: int
    image_wire: dict  # the image a row shows (new; old for deletes), wire form
    image: dict  # attribute name -> tagged value, from TypeDeserializer

    @property
    def row_id(self) -> str:
        return f"{self.shard}/{self.seq}"


@dataclasses.dataclass
class BadInput:
    """One piece of broken input that must be dead-lettered, never written."""

    marker: str  # text unique to this input, found in the dead letter's `raw`
    what: str
    file: str
    line: int  # 1-based physical line of the capture file
    record_index: Optional[int]  # index in the page's Records, None for whole lines
    seq: Optional[str]
    raw: str  # the text a dead letter would carry


@dataclasses.dataclass
class Capture:
    """Everything written to the capture directory and what it must produce."""

    files: dict  # file name -> bytes
    changes: list  # ExpectedChange, in capture order
    bad: list  # BadInput
    clean_records: dict  # file name -> list of record dicts (for the read-back test)


def nested_value(levels: int) -> Any:
    """A value `levels` lists and maps deep (the top-level container is level 1)."""
    value: Any = "leaf"
    for level in range(levels):
        value = {"k": value} if level % 2 == 0 else [value]
    return value


def expected_from_record(record: dict, shard: str) -> ExpectedChange:
    """What a good stream record must become, decoded with boto3's deserializer."""
    body = record["dynamodb"]
    op = OPS[record["eventName"]]
    image_wire = body.get("OldImage" if op == "d" else "NewImage") or body["Keys"]
    image = {name: tag(EXPECT_DESERIALIZER.deserialize(from_wire(av))) for name, av in image_wire.items()}
    arn = record["eventSourceARN"]
    table = arn.split(":table/", 1)[1].split("/stream/", 1)[0]
    ts_ms = Decimal(repr(body["ApproximateCreationDateTime"])) * 1000
    assert ts_ms == ts_ms.to_integral_value(), "capture times are whole milliseconds"
    return ExpectedChange(
        table=table,
        shard=shard,
        seq=body["SequenceNumber"],
        event_id=record["eventID"],
        op=op,
        ttl=record.get("userIdentity") == TTL_IDENTITY,
        ts_ms=int(ts_ms),
        image_wire=image_wire,
        image=image,
    )


class ShardBuilder:
    """Builds the records of one capture file (one shard) in stream order."""

    def __init__(self, shard: str, table: str, first_seq: int, seq_step: int, first_ts: float, ts_step: float):
        self.shard, self.table = shard, table
        self.next_seq, self.seq_step = first_seq, seq_step
        self.next_ts, self.ts_step = first_ts, ts_step
        self.count = 0
        self.changes: list[ExpectedChange] = []
        self.records: list[dict] = []

    def record(self, event: str, keys: Optional[dict], new: Optional[dict] = None, old: Optional[dict] = None,
               *, ttl: bool = False, event_id: Optional[str] = None, good: bool = True) -> dict:
        """A stream record; images are wire dicts. Good records become expected rows."""
        self.count += 1
        seq = f"{self.next_seq:021d}"
        self.next_seq += self.seq_step
        ts = self.next_ts
        self.next_ts += self.ts_step
        body: dict = {"ApproximateCreationDateTime": ts}
        if keys is not None:
            body["Keys"] = keys
        if new is not None:
            body["NewImage"] = new
        if old is not None:
            body["OldImage"] = old
        body.update({"SequenceNumber": seq, "SizeBytes": 1, "StreamViewType": "NEW_AND_OLD_IMAGES"})
        record = {
            # AWS event ids are 32 hex digits; these are derived so runs repeat.
            "eventID": event_id or hashlib.md5(f"{self.shard}:{self.count}".encode()).hexdigest(),
            "eventName": event,
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": REGION,
            "dynamodb": body,
            "eventSourceARN": f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{self.table}/stream/{STREAM_LABEL}",
        }
        if ttl:
            record["userIdentity"] = dict(TTL_IDENTITY)
        if good:
            self.records.append(record)
            self.changes.append(expected_from_record(record, self.shard))
        return record

    def insert(self, item: dict, keys: tuple = ("pk", "sk"), **kw) -> dict:
        new = wire_item(item)
        return self.record("INSERT", {k: new[k] for k in keys}, new=new, **kw)

    def modify(self, old_item: dict, new_item: dict, keys: tuple = ("pk", "sk"), **kw) -> dict:
        new, old = wire_item(new_item), wire_item(old_item)
        return self.record("MODIFY", {k: new[k] for k in keys}, new=new, old=old, **kw)

    def remove(self, old_item: dict, keys: tuple = ("pk", "sk"), **kw) -> dict:
        old = wire_item(old_item)
        return self.record("REMOVE", {k: old[k] for k in keys}, old=old, **kw)

    def page(self, records: list, last: bool = False) -> dict:
        """A GetRecords response; the last page of a closed shard has no iterator."""
        iterator = None if last else f"iter-{self.shard}-{self.next_seq}"
        return {"Records": records, "NextShardIterator": iterator}


def awkward_item() -> dict:
    """An item whose values each exercise an edge of the type mapping."""
    return {
        "pk": "item#1 ☃",
        "sk": 1,
        # strings
        "s_emoji": "snow ☃ rocket 🚀 clef 𝄞 family 👩‍👩‍👧 flag 🇺🇦",
        "s_lines": "first\nsecond\r\nthird\ttabbed\u2028after a line separator",
        "s_quotes": 'double " single \' backslash \\ slash / fake json {"S":"x"}',
        "s_empty": "",
        "s_control": "nul\u0000 bell\u0007 esc\u001b del\u007f",
        "s_rtl": "e\u0301 עברית العربية",
        # numbers across DynamoDB's range
        "n_zero": Decimal("0"),
        "n_neg_zero": Decimal("-0"),
        "n_1_50": Decimal("1.50"),
        "n_one_point_zero": Decimal("1.0"),
        "n_exp_int": Decimal("1.2E+3"),
        "n_38_digits": 10**38 - 1,
        "n_neg_38_digits": -(10**38 - 1),
        "n_min": Decimal("1E-130"),
        "n_neg_min": Decimal("-1E-130"),
        "n_max": Decimal("9.9999999999999999999999999999999999999E+125"),
        "n_neg_big": Decimal("-1E+125"),
        "n_i64_max": INT64_MAX,
        "n_i64_min": INT64_MIN,
        "n_above_i64": INT64_MAX + 1,
        "n_below_i64": INT64_MIN - 1,
        "n_tiny": Decimal("0.000000000000000000000000000000000000001"),
        "n_38_fraction": Decimal("0.12345678901234567890123456789012345678"),
        # binary, bool, null
        "b_empty": b"",
        "b_ff": b"\xff\xfe\x00\x80",
        "b_all": bytes(range(256)),
        "bool_t": True,
        "bool_f": False,
        "null": None,
        # sets
        "ss": {"b", "a", "Z", "é", "😀", "aa", "a b"},
        "ns_ints": {3, -5, 0, INT64_MAX},
        "ns_mixed": {Decimal("-1"), Decimal("10"), Decimal("2"), Decimal("1.5"), Decimal("1E-130"),
                     10**38 - 1, Decimal("-9.9E+125")},
        "bs": {b"\xff", b"\x00", b"a", b"ab"},
        # lists and maps
        "l_mixed": [1, "two", b"\x03", True, None, {"k": [Decimal("1.50")]}, {"x", "y"}, [], {},
                    Decimal("-0"), {Decimal("1"), Decimal("2")}, {b"\x01"}],
        "m_nested": {"level1": {"level2": {"level3": [1, {"d": "e"}, [[["deep"]]]]}},
                     "with space": "x", "ключ": "значение", "dot.key": Decimal("1E+2"), "n": None},
        "l_empty": [],
        "m_empty": {},
        "deep_32": nested_value(32),
        # attribute names a column name may not hold as they are
        "with space": "space",
        "dot.ted": "dot",
        "dash-ed": "dash",
        "ünï©ødé": "unicode",
        "日本語": "cjk",
        "9lives": "leading digit",
        "123": "digits only",
        "a.b": "dotted twin of a_b",
        "a_b": "underscored twin of a.b",
    }


def build_capture() -> Capture:
    """The whole capture, deterministic: four shard files, one of them broken.

    - awkward-shard-1.jsonl: table `awkward`, raw UTF-8 JSON Lines; crosses
      midnight UTC so its rows fall into two date partitions; an empty page.
    - awkward-shard-2.jsonl.gz: gzip, ASCII-escaped JSON (emoji as surrogate
      pairs); sequence numbers grow from 21 to 22 digits, so comparing them as
      strings would put the last records first; ends closed (null iterator).
    - orders-shard-3.json: table `orders`, one pretty-printed multi-line page.
    - bad-shard-4.jsonl: broken lines and records between good ones.
    """
    files: dict[str, bytes] = {}
    clean: dict[str, list] = {}
    changes: list[ExpectedChange] = []
    bad: list[BadInput] = []

    # --- shard 1: the awkward item, type changes, deletes, a TTL delete ---
    s1 = ShardBuilder("awkward-shard-1", "awkward", 400000000000000000100, 7, 1704067197.5, 0.75)
    item_a = awkward_item()
    item_b = {"pk": "item#shape", "sk": 2, "shape": 5, "price": 7}
    item_c = {"pk": "item#price", "sk": 3, "price": Decimal("7.25"), "note": "integer elsewhere, decimal here"}
    item_a2 = dict(item_a)
    item_a2.update({"s_emoji": "changed 🚀", "n_1_50": Decimal("2.500"), "added_later": "a new attribute"})
    del item_a2["null"], item_a2["b_empty"]
    item_b2 = {"pk": "item#shape", "sk": 2, "shape": "abc", "price": 8}  # shape: N then S
    item_d = {"pk": "item#ttl", "sk": 4, "expires_at": 1704067000, "payload": {"a": ["b", Decimal("0.5")]}}
    pages1 = [
        s1.page([s1.insert(item_a), s1.insert(item_b), s1.insert(item_c)]),
        s1.page([s1.modify(item_a, item_a2), s1.modify(item_b, item_b2)]),  # crosses midnight UTC
        s1.page([]),
        s1.page([s1.insert(item_d), s1.remove(item_c), s1.remove(item_d, ttl=True)]),
    ]
    files["awkward-shard-1.jsonl"] = "".join(
        json.dumps(p, ensure_ascii=False) + "\n" for p in pages1).encode("utf-8")
    clean["awkward-shard-1.jsonl"] = s1.records
    changes += s1.changes

    # --- shard 2: gzip, escaped JSON, sequence numbers 21 -> 22 digits ---
    s2 = ShardBuilder("awkward-shard-2", "awkward", 10**21 - 3, 1, 1704070800.125, 0.125)
    # `flip` changes type (N, then S) within one file; `price` goes from an
    # integer to a decimal.
    item_e = {"pk": "item#gz 🙂", "sk": 10, "price": 12, "flip": 5, "ss": {"z", "y"}, "blob": b"\x00\xff"}
    item_e2 = dict(item_e, price=Decimal("0.1"), flip="five", extra={"nested": [None, True]})
    item_f = {"pk": "item#gz-2", "sk": 11, "price": -3, "ns_ints": {1, 2, 3}}
    pages2 = [
        s2.page([s2.insert(item_e), s2.insert(item_f)]),
        s2.page([s2.modify(item_e, item_e2), s2.remove(item_f)]),
        s2.page([], last=True),
    ]
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0) as gz:
        gz.write("".join(json.dumps(p, ensure_ascii=True) + "\n" for p in pages2).encode("ascii"))
    files["awkward-shard-2.jsonl.gz"] = buffer.getvalue()
    clean["awkward-shard-2.jsonl.gz"] = s2.records
    changes += s2.changes

    # --- shard 3: another table, one pretty-printed response ---
    s3 = ShardBuilder("orders-shard-3", "orders", 500000000000000000000, 1000, 1704153600.0, 60.0)
    order = {"pk": "order#1", "sk": 1, "customer": "Zoë O'Brien", "total": Decimal("19.99"),
             "lines": [{"sku": "A-1", "qty": 2}, {"sku": "B-2", "qty": 1, "gift": True}],
             "tags": {"new", "priority"}, "status": "placed"}
    order2 = dict(order, total=Decimal("25"), status="shipped")
    page3 = s3.page([s3.insert(order), s3.modify(order, order2), s3.remove(order2)])
    files["orders-shard-3.json"] = (json.dumps(page3, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    clean["orders-shard-3.json"] = s3.records
    changes += s3.changes

    # --- shard 4: broken input between good records ---
    s4 = ShardBuilder("bad-shard-4", "awkward", 600000000000000000000, 10, 1704240000.0, 1.0)
    bad_file = "bad-shard-4.jsonl"
    good = lambda n: s4.insert({"pk": f"bad-file-good-{n}", "sk": 100 + n, "ok": True})  # noqa: E731
    lines: list[str] = [json.dumps(s4.page([good(1)]), ensure_ascii=False)]

    truncated = s4.record("INSERT", wire_item({"pk": "t", "sk": 1}), new=wire_item({"pk": "t", "sk": 1, "x": "y"}),
                          event_id="bad-truncated", good=False)
    whole = json.dumps(s4.page([truncated]))
    cut = whole[: (len(whole) * 2) // 3]
    assert "bad-truncated" in cut
    lines.append(cut)
    bad.append(BadInput("bad-truncated", "truncated JSON line", bad_file, 2, None, None, cut))

    not_json = "this line is not JSON: bad-not-json"
    lines.append(not_json)
    bad.append(BadInput("bad-not-json", "a line that is not JSON", bad_file, 3, None, None, not_json))

    keys = lambda n: {"pk": {"S": f"bad-{n}"}, "sk": {"N": str(200 + n)}}  # noqa: E731
    broken = [
        ("bad-unknown-tag", "unknown type tag {\"X\":\"1\"}", dict(keys(1), weird={"X": "1"})),
        (None, None, None),  # a good record in the middle of the page
        ("bad-39-digits", "number with 39 significant digits",
         dict(keys(2), n={"N": "123456789012345678901234567890123456789"})),
        ("bad-exp-126", "number 1E+126 (out of range)", dict(keys(3), n={"N": "1E+126"})),
        ("bad-deep-33", "nesting 33 levels deep", dict(keys(4), deep=to_wire(nested_value(33)))),
        ("bad-no-keys", "record without Keys", dict(keys(5), v={"S": "no keys"})),
    ]
    mixed_records = []
    for index, (marker, what, image) in enumerate(broken):
        if marker is None:
            mixed_records.append(good(2))
            continue
        record = s4.record("INSERT", None if marker == "bad-no-keys" else {k: image[k] for k in ("pk", "sk")},
                           new=image, event_id=marker, good=False)
        mixed_records.append(record)
        bad.append(BadInput(marker, what, bad_file, 4, index, record["dynamodb"]["SequenceNumber"],
                            json.dumps(record, ensure_ascii=False)))
    lines.append(json.dumps(s4.page(mixed_records), ensure_ascii=False))
    lines.append(json.dumps(s4.page([good(3)]), ensure_ascii=False))
    files[bad_file] = "".join(line + "\n" for line in lines).encode("utf-8")
    changes += s4.changes

    return Capture(files=files, changes=changes, bad=bad, clean_records=clean)


def write_capture(capture: Capture, directory: Path) -> None:
    """Writes the capture files into an empty directory."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in capture.files.items():
        (directory / name).write_bytes(content)


def read_capture_documents(path: Path) -> list:
    """Reads a capture file back: gzip by magic bytes, one document or JSON Lines."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    text = data.decode("utf-8")
    try:
        return [json.loads(text)]
    except json.JSONDecodeError:
        # split("\n"), not splitlines(): JSON text may hold a raw U+2028.
        return [json.loads(line) for line in text.split("\n") if line.strip()]


def verify_capture(capture: Capture, directory: Path) -> list:
    """Problems found reading the clean capture files back (expected: none)."""
    problems = []
    for name, records in capture.clean_records.items():
        read = [r for doc in read_capture_documents(directory / name) for r in doc["Records"]]
        if read != records:
            problems.append(f"{name}: reads back differently from what was written")
    return problems


# ---------------------------------------------------------------------------
# Running the binary
# ---------------------------------------------------------------------------


def toml_string(text: str) -> str:
    """A TOML basic string (JSON's escapes are a subset TOML accepts)."""
    return json.dumps(text, ensure_ascii=False)


def write_config(directory: Path, capture_dir: Path, mode: str) -> Path:
    """Writes the run configuration for one numbers mode and returns its path."""
    config = directory / "config.toml"
    config.write_text(
        "[source]\n"
        'kind = "replay"\n'
        f"path = {toml_string(str(capture_dir))}\n"
        "[transform]\n"
        f"numbers = {toml_string(mode)}\n"
        "[sinks.parquet]\n"
        f"path = {toml_string(str(directory / 'parquet'))}\n"
        "[checkpoint]\n"
        f"path = {toml_string(str(directory / 'checkpoint.json'))}\n",
        encoding="utf-8",
    )
    return config


@dataclasses.dataclass
class RunResult:
    code: Optional[int]  # None when it could not start or timed out
    detail: str  # why it did not run, or the tail of its stderr


def run_binary(binary: Path, config: Path, log_prefix: Path, timeout: float) -> RunResult:
    """Runs `<binary> run --config <config>`, keeping its output beside the config."""
    out_path, err_path = log_prefix.with_suffix(".stdout"), log_prefix.with_suffix(".stderr")
    try:
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.run([str(binary), "run", "--config", str(config)], stdout=out, stderr=err,
                                  cwd=config.parent, timeout=timeout, check=False)
    except FileNotFoundError:
        return RunResult(None, f"binary not found: {binary}")
    except PermissionError:
        return RunResult(None, f"binary not executable: {binary}")
    except subprocess.TimeoutExpired:
        return RunResult(None, f"timed out after {timeout:g}s (stderr in {err_path})")
    tail = err_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-15:]
    return RunResult(proc.returncode, "\n".join(tail))


# ---------------------------------------------------------------------------
# Checks and the report
# ---------------------------------------------------------------------------


class Check:
    """A named group of assertions; it passes when it collected no problem."""

    def __init__(self, name: str):
        self.name = name
        self.problems: list[str] = []
        self.notes: list[str] = []

    def problem(self, text: str) -> None:
        self.problems.append(text)

    def mismatch(self, row: str, column: str, expected: str, got: str) -> None:
        self.problems.append(f"{row} | {column} | expected {expected} | got {got}")

    @property
    def ok(self) -> bool:
        return not self.problems


def print_report(checks: list, max_lines: int, stream=sys.stdout) -> tuple:
    """Prints every check with its problems; returns (passed, failed)."""
    passed = failed = 0
    for check in checks:
        if check.ok:
            passed += 1
            stream.write(f"[PASS] {check.name}\n")
        else:
            failed += 1
            stream.write(f"[FAIL] {check.name}: {len(check.problems)} problem(s)\n")
            for line in check.problems[:max_lines]:
                stream.write(f"    {line}\n")
            if len(check.problems) > max_lines:
                stream.write(f"    … and {len(check.problems) - max_lines} more\n")
        for note in check.notes:
            stream.write(f"    note: {note}\n")
    return passed, failed


# ---------------------------------------------------------------------------
# Reading the output
# ---------------------------------------------------------------------------

FILE_PATH = re.compile(r"(?P<table>[^/]+)/date=(?P<date>\d{4}-\d{2}-\d{2})/(?P<stem>[^/]+)\.parquet")
#: `<shard>_<firstSeq>`: the last sequence number is in the footer.
FILE_STEM = re.compile(r"(?P<shard>.+)_(?P<first>[0-9]{1,40})")
#: `<shard>-<firstSeq>-<lastSeq>`, as earlier versions named files.
OLD_FILE_STEM = re.compile(r"(?P<shard>.+)-(?P<first>[0-9]+)-(?P<last>[0-9]+)")
#: Footer key-value metadata of `<shard>_<firstSeq>` files.
FIRST_SEQ_KEY = b"dynamo_cdc.first_sequence_number"
LAST_SEQ_KEY = b"dynamo_cdc.last_sequence_number"


def parse_stem(stem: str) -> Optional[tuple]:
    """(shard, first, last or None) of a file name's stem, None if it is neither form.

    Shard ids hold `-` and may end in groups of digits, so a number after the
    last `_` means the new form; anything else must be the old one.
    """
    new = FILE_STEM.fullmatch(stem)
    if new:
        return new["shard"], new["first"], None
    old = OLD_FILE_STEM.fullmatch(stem)
    return (old["shard"], old["first"], old["last"]) if old else None


def footer_sequence_numbers(path: Path) -> tuple:
    """(first, last) from a file's footer key-value metadata, None where absent."""
    kv = pq.read_metadata(path).metadata or {}
    first, last = kv.get(FIRST_SEQ_KEY), kv.get(LAST_SEQ_KEY)
    return (first.decode() if first is not None else None, last.decode() if last is not None else None)


def _unwrap(t: pa.DataType) -> pa.DataType:
    """Dictionary-encoded columns are judged by their value type."""
    return t.value_type if pa.types.is_dictionary(t) else t


def is_string_type(t: pa.DataType) -> bool:
    t = _unwrap(t)
    return pa.types.is_string(t) or pa.types.is_large_string(t) or (
        hasattr(pa.types, "is_string_view") and pa.types.is_string_view(t))


def is_binary_type(t: pa.DataType) -> bool:
    t = _unwrap(t)
    return pa.types.is_binary(t) or pa.types.is_large_binary(t) or (
        hasattr(pa.types, "is_binary_view") and pa.types.is_binary_view(t))


def is_list_type(t: pa.DataType) -> bool:
    t = _unwrap(t)
    return pa.types.is_list(t) or pa.types.is_large_list(t) or (
        hasattr(pa.types, "is_list_view") and pa.types.is_list_view(t))


def number_type_problem(t: pa.DataType, mode: str) -> Optional[str]:
    """Why an Arrow type cannot hold N values in this numbers mode (None if it can)."""
    t = _unwrap(t)
    if mode == "string":
        return None if is_string_type(t) else f"{t} (numbers = \"string\" needs utf8 decimal strings)"
    if pa.types.is_int64(t) or is_string_type(t) or pa.types.is_decimal(t):
        return None
    if pa.types.is_floating(t):
        return None if mode == "double" else f"{t} (a float, but numbers = \"{mode}\")"
    return f"{t} (not int64, utf8 or decimal)"


@dataclasses.dataclass
class ColumnSpec:
    """How to decode one attribute column of one file."""

    column: str
    attr: str
    dtype: str
    arrow: pa.DataType


@dataclasses.dataclass
class OutputFile:
    """One Parquet file of the output, with what pyarrow.dataset reads from it."""

    path: Path
    rel: str
    table: Optional[str]
    date: Optional[str]
    shard: Optional[str]
    first: Optional[str]
    #: From the name (old form) or the footer (new form, `<shard>_<firstSeq>`).
    last: Optional[str]
    schema: Optional[pa.Schema]
    specs: dict  # column name -> ColumnSpec
    rows: list
    read_error: Optional[str] = None
    #: The name has only the first sequence number; the footer both.
    new_form: bool = False
    footer_first: Optional[str] = None


def column_specs(schema: pa.Schema, mode: str, where: str, check: Check) -> dict:
    """Reads each column's `dynamodb.type`/`dynamodb.name` and checks the Arrow type fits."""
    specs: dict[str, ColumnSpec] = {}
    attrs_seen: dict[str, str] = {}
    for field in schema:
        metadata = {k.decode("utf-8"): v.decode("utf-8") for k, v in (field.metadata or {}).items()}
        dtype = metadata.get("dynamodb.type")
        if field.name in META_COLUMNS and dtype is None:
            want = META_COLUMNS[field.name]
            fits = {"string": is_string_type, "int64": lambda t: pa.types.is_int64(_unwrap(t)),
                    "bool": lambda t: pa.types.is_boolean(_unwrap(t))}[want](field.type)
            if not fits:
                check.problem(f"{where}: column {field.name} is {field.type}, expected {want}")
            continue
        if dtype is None:
            check.problem(f"{where}: column {field.name!r} has no dynamodb.type metadata")
            continue
        if dtype not in DYNAMODB_TYPES:
            check.problem(f"{where}: column {field.name!r} has unknown dynamodb.type {dtype!r}")
            continue
        attr = metadata.get("dynamodb.name", field.name)
        if attr in attrs_seen:
            check.problem(f"{where}: columns {attrs_seen[attr]!r} and {field.name!r} both hold attribute {attr!r}")
        attrs_seen[attr] = field.name
        t = field.type
        problem = None
        if dtype == "S" and not is_string_type(t):
            problem = f"{t}, expected utf8"
        elif dtype == "B" and not is_binary_type(t):
            problem = f"{t}, expected binary"
        elif dtype == "BOOL" and not pa.types.is_boolean(_unwrap(t)):
            problem = f"{t}, expected bool"
        elif dtype == "json" and not is_string_type(t):
            problem = f"{t}, expected utf8 holding DynamoDB JSON"
        elif dtype == "N":
            problem = number_type_problem(t, mode)
        elif dtype in ("SS", "NS", "BS"):
            if not is_list_type(t):
                problem = f"{t}, expected a list"
            else:
                element = _unwrap(t).value_type
                if dtype == "SS" and not is_string_type(element):
                    problem = f"{t}, expected list<utf8>"
                elif dtype == "BS" and not is_binary_type(element):
                    problem = f"{t}, expected list<binary>"
                elif dtype == "NS":
                    problem = number_type_problem(element, mode)
        if problem:
            check.problem(f"{where}: column {field.name!r} (dynamodb.type {dtype}) is {problem}")
        specs[field.name] = ColumnSpec(field.name, attr, dtype, t)
    for name in META_COLUMNS:
        if schema.get_field_index(name) < 0:
            check.problem(f"{where}: metadata column {name} is missing")
    return specs


def read_output_files(root: Path, mode: str, schema_check: Check) -> list:
    """Lists and reads every *.parquet under the root with pyarrow.dataset."""
    files = []
    for path in sorted(root.rglob("*.parquet")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith("_dead_letter/"):
            continue
        match = FILE_PATH.fullmatch(rel)
        stem = parse_stem(match["stem"]) if match else None
        shard, first, last = stem if stem else (None, None, None)
        entry = OutputFile(path=path, rel=rel, table=match["table"] if match else None,
                           date=match["date"] if match else None, shard=shard, first=first, last=last,
                           schema=None, specs={}, rows=[], new_form=stem is not None and last is None)
        try:
            if entry.new_form:
                entry.footer_first, entry.last = footer_sequence_numbers(path)
            # The file's own schema keeps the Arrow field metadata verbatim.
            entry.schema = pq.read_schema(path)
            entry.specs = column_specs(entry.schema, mode, rel, schema_check)
            entry.rows = pads.dataset(str(path), format="parquet").to_table().to_pylist()
        except Exception as error:  # noqa: BLE001 - any reader error is a finding
            entry.read_error = f"{type(error).__name__}: {error}"
            schema_check.problem(f"{rel}: pyarrow cannot read it: {entry.read_error}")
        files.append(entry)
    return files


def decode_number(value: Any, notes: list) -> Optional[Decimal]:
    """An N cell (int64, decimal string, decimal128 or float) as a Decimal."""
    if isinstance(value, bool):
        notes.append(f"N value is a bool ({value})")
        return None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        notes.append(f"N value is a float ({value!r})")
        return Decimal(repr(value))
    if isinstance(value, str):
        if not is_canonical_number(value):
            notes.append(f"N text {value[:60]!r} is not canonical plain decimal")
        try:
            return Decimal(value)
        except ArithmeticError:
            notes.append(f"N text {value[:60]!r} is not a number")
            return None
    notes.append(f"N value of Python type {type(value).__name__}")
    return None


def decode_json_cell(text: str, notes: list) -> Optional[tuple]:
    """A json cell: one typed DynamoDB JSON value, decoded with TypeDeserializer."""
    try:
        loaded = json.loads(text)
    except json.JSONDecodeError as error:
        notes.append(f"json column holds invalid JSON ({error})")
        return ("?", text)
    if not (isinstance(loaded, dict) and len(loaded) == 1 and next(iter(loaded)) in TYPE_TAGS):
        notes.append(f"json cell is not one typed DynamoDB value: {text[:80]!r}")
        return ("?", text)
    try:
        return tag(GOT_DESERIALIZER.deserialize(from_wire(loaded)))
    except Exception as error:  # noqa: BLE001 - malformed JSON values are findings
        notes.append(f"json cell does not decode as DynamoDB JSON ({type(error).__name__}: {error})")
        return ("?", text)


def duckdb_blob_text(text: str) -> Optional[bytes]:
    """Bytes back from DuckDB's BLOB-as-VARCHAR text (printable ASCII, else \\xHH)."""
    out, i = bytearray(), 0
    while i < len(text):
        if text.startswith("\\x", i) and re.fullmatch(r"[0-9A-Fa-f]{2}", text[i + 2:i + 4]):
            out.append(int(text[i + 2:i + 4], 16))
            i += 4
        elif " " <= text[i] <= "~" and text[i] != "\\":
            out.append(ord(text[i]))
            i += 1
        else:
            return None
    return bytes(out)


def decode_cell(spec: ColumnSpec, value: Any, notes: list, unioned: bool = False) -> Optional[tuple]:
    """One cell decoded per its column's dynamodb.type into the tagged form.

    Anything that does not fit the declared type is added to `notes` and comes
    back as ("?", repr), which never equals an expected value. With `unioned`
    (rows read through DuckDB's union_by_name), a column whose type differs
    between files arrives cast to a common type: to VARCHAR (BOOL as
    'true'/'false', B as DuckDB's escaped text, N as decimal text), or to BLOB
    when the other file has binary (text as its UTF-8 bytes); those casts are
    undone.
    """
    if value is None:
        return None
    dtype = spec.dtype
    if unioned and isinstance(value, bytes) and dtype in ("S", "N", "json"):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            pass
    if unioned and isinstance(value, str):
        if dtype == "BOOL" and value in ("true", "false"):
            value = value == "true"
        elif dtype == "B" and duckdb_blob_text(value) is not None:
            value = duckdb_blob_text(value)

    def wrong(kind: str) -> tuple:
        notes.append(f"{dtype} column holds {type(value).__name__}, not {kind}")
        return ("?", repr(value))

    if dtype == "S":
        return ("S", value) if isinstance(value, str) else wrong("str")
    if dtype == "B":
        return ("B", bytes(value)) if isinstance(value, (bytes, bytearray)) else wrong("bytes")
    if dtype == "BOOL":
        return ("BOOL", value) if isinstance(value, bool) else wrong("bool")
    if dtype == "NULL":
        notes.append("a NULL column holds a value")
        return ("?", repr(value))
    if dtype == "N":
        number = decode_number(value, notes)
        return ("N", number) if number is not None else ("?", repr(value))
    if dtype == "json":
        return decode_json_cell(value, notes) if isinstance(value, str) else wrong("str")
    if dtype in ("SS", "NS", "BS"):
        if not isinstance(value, list):
            return wrong("list")
        if dtype == "NS":
            elements = [decode_number(v, notes) for v in value]
        else:
            want = str if dtype == "SS" else (bytes, bytearray)
            if not all(isinstance(v, want) for v in value):
                return wrong(f"a list of {'str' if dtype == 'SS' else 'bytes'}")
            elements = [v if dtype == "SS" else bytes(v) for v in value]
        if any(e is None for e in elements):
            return ("?", repr(value))
        # Sets are written sorted: numbers numerically, strings by code point
        # (the same as UTF-8 byte order), binaries bytewise; no duplicates.
        if any(not a < b for a, b in zip(elements, elements[1:])):
            notes.append(f"{dtype} elements are not strictly ascending: {value!r}"[:200])
        return (dtype, frozenset(elements))
    notes.append(f"unknown dynamodb.type {dtype!r}")
    return ("?", repr(value))


def expected_meta(change: ExpectedChange) -> dict:
    """The metadata column values the row of a change must carry."""
    return {
        "__op": change.op,
        "__table": change.table,
        "__shard_id": change.shard,
        "__sequence_number": change.seq,
        "__event_id": change.event_id,
        "__source_ts_ms": change.ts_ms,
        "__deleted": change.op == "d",
        "__ttl_delete": change.ttl,
    }


def same_scalar(expected: Any, got: Any) -> bool:
    """Equality that also demands the same Python type (True is not 1)."""
    return type(expected) is type(got) and expected == got


def row_label(row: dict, fallback: str) -> str:
    """The row id used in reports: shard/sequence number, else where it was found."""
    shard, seq = row.get("__shard_id"), row.get("__sequence_number")
    return f"{shard}/{seq}" if shard is not None and seq is not None else fallback


def compare_row(row: dict, specs: dict, change: ExpectedChange, check: Check, label: str,
                extra_columns: Iterable = (), unioned: bool = False) -> None:
    """Compares one output row with its change: metadata, then every attribute.

    `extra_columns` are columns present in the row but not in its file (DuckDB
    unions all files' columns); they must read as null.
    """
    for column, want in expected_meta(change).items():
        if column not in row:
            check.mismatch(label, column, repr(want), "no such column")
        elif not same_scalar(want, row[column]):
            check.mismatch(label, column, repr(want), repr(row[column]))
    covered = set()
    for spec in specs.values():
        notes: list[str] = []
        got = top_level(decode_cell(spec, row.get(spec.column), notes, unioned))
        want = top_level(change.image.get(spec.attr))
        covered.add(spec.attr)
        if want != got:
            check.mismatch(label, spec.column, render(want), render(got))
        for note in notes:
            check.mismatch(label, spec.column, "a well-formed value", note)
    for attr, value in change.image.items():
        if attr not in covered and top_level(value) is not None:
            check.mismatch(label, attr, render(value), "no column for this attribute")
    for column in extra_columns:
        if row.get(column) is not None:
            check.mismatch(label, column, "null (its file has no such column)", repr(row[column])[:120])


# ---------------------------------------------------------------------------
# The check groups
# ---------------------------------------------------------------------------


def note_unneeded_strings(files: list, check: Check) -> None:
    """Notes N columns kept as strings in a file where every value fits int64.

    Under numbers = "auto" a column is int64 while every value fits, but once a
    table's schema widened to strings it may stay so in later files; from the
    output alone this cannot be told apart from a missed int64, so it is only
    noted.
    """
    for f in files:
        for spec in f.specs.values():
            if spec.dtype != "N" or not is_string_type(spec.arrow):
                continue
            values = [row.get(spec.column) for row in f.rows if row.get(spec.column) is not None]
            if values and all(isinstance(v, str) and re.fullmatch(r"-?[0-9]+", v)
                              and INT64_MIN <= int(v) <= INT64_MAX for v in values):
                check.notes.append(f"{f.rel}: N column {spec.column!r} is utf8 though all its values fit int64")


def check_layout(root: Path, files: list, date_partition: str, check: Check) -> None:
    """File paths, zstd compression, names agreeing with rows, no stray files."""
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel.startswith("_dead_letter/") and rel.count("/") == 1 and rel.endswith(".jsonl"):
            continue
        if not FILE_PATH.fullmatch(rel) or not parse_stem(FILE_PATH.fullmatch(rel)["stem"]):
            check.problem(f"stray or misnamed file: {rel} (expected <table>/date=YYYY-MM-DD/"
                          "<shard>_<firstSeq>.parquet, <shard>-<firstSeq>-<lastSeq>.parquet "
                          "or _dead_letter/*.jsonl)")
    ranges = collections.defaultdict(list)
    for f in files:
        if f.read_error or f.shard is None:
            continue
        try:
            metadata = pq.ParquetFile(f.path).metadata
            codecs = {metadata.row_group(g).column(c).compression
                      for g in range(metadata.num_row_groups) for c in range(metadata.num_columns)}
            if codecs - {"ZSTD"}:
                check.problem(f"{f.rel}: compression {sorted(codecs)}, expected ZSTD only")
        except Exception as error:  # noqa: BLE001
            check.problem(f"{f.rel}: cannot read Parquet metadata: {error}")
        if not f.rows:
            check.notes.append(f"{f.rel}: holds no rows")
            continue
        seqs = []
        for index, row in enumerate(f.rows):
            label = row_label(row, f"{f.rel}#{index}")
            if row.get("__table") != f.table:
                check.mismatch(label, "__table", f"{f.table!r} (its directory)", repr(row.get("__table")))
            if row.get("__shard_id") != f.shard:
                check.mismatch(label, "__shard_id", f"{f.shard!r} (its file name)", repr(row.get("__shard_id")))
            seq = row.get("__sequence_number")
            if isinstance(seq, str) and seq.isdigit():
                seqs.append(int(seq))
            if date_partition == "event" and isinstance(row.get("__source_ts_ms"), int):
                day = date_of_ms(row["__source_ts_ms"])
                if day != f.date:
                    check.mismatch(label, "date partition", f"date={day} (UTC day of __source_ts_ms)",
                                   f"date={f.date} ({f.rel})")
        span = check_name_range(f, seqs, check)
        if span:
            ranges[(f.table, f.shard)].append((*span, f.rel))
    for (table, shard), spans in ranges.items():
        spans.sort()
        for (a_first, a_last, a_rel), (b_first, b_last, b_rel) in zip(spans, spans[1:]):
            if b_first <= a_last:
                check.problem(f"{a_rel} and {b_rel} overlap in sequence numbers")


def check_name_range(f: OutputFile, seqs: list, check: Check) -> Optional[tuple]:
    """The (first, last) a file's name and footer claim, checked against its rows.

    New form: the name's first is the lowest sequence number, the footer's
    last the highest (the name, derived from the previous position only,
    is what makes a late commit collide, so it must be exact). Old form:
    the rows fall within the name's range.
    """
    first = int(f.first)
    if f.new_form:
        if f.last is None or not f.last.isdigit():
            check.problem(f"{f.rel}: footer metadata {LAST_SEQ_KEY.decode()} is {f.last!r}, "
                          "expected the last sequence number")
            return None
        last = int(f.last)
        if f.footer_first is not None and f.footer_first != f.first:
            check.problem(f"{f.rel}: footer metadata {FIRST_SEQ_KEY.decode()} is {f.footer_first!r}, "
                          f"the name says {f.first}")
        if seqs and (min(seqs) != first or max(seqs) != last):
            check.problem(f"{f.rel}: rows' sequence numbers {min(seqs)}..{max(seqs)} are not "
                          f"{first} (its name) .. {last} (its footer)")
        return first, last
    last = int(f.last)
    if first > last:
        check.problem(f"{f.rel}: first sequence number is greater than the last")
    if seqs and (min(seqs) < first or max(seqs) > last):
        check.problem(f"{f.rel}: rows' sequence numbers {min(seqs)}..{max(seqs)} "
                      f"fall outside the file name's {first}..{last}")
    elif seqs and (min(seqs) != first or max(seqs) != last):
        check.notes.append(f"{f.rel}: name range {first}..{last} is wider than its rows' "
                           f"{min(seqs)}..{max(seqs)}")
    return first, last


def check_values_pyarrow(files: list, expected: dict, check: Check) -> None:
    """Every row read with pyarrow.dataset against its change, value by value."""
    for f in files:
        for index, row in enumerate(f.rows):
            label = row_label(row, f"{f.rel}#{index}")
            change = expected.get((row.get("__shard_id"), row.get("__sequence_number")))
            if change is not None:
                compare_row(row, f.specs, change, check, label)


def check_rows_once(files: list, expected: dict, check: Check) -> None:
    """Each change exactly once across all files, and no row for anything else."""
    seen = collections.Counter()
    where = collections.defaultdict(list)
    for f in files:
        for index, row in enumerate(f.rows):
            key = (row.get("__shard_id"), row.get("__sequence_number"))
            seen[key] += 1
            where[key].append(f.rel)
            if key not in expected:
                check.mismatch(row_label(row, f"{f.rel}#{index}"), "(row)", "no such row (not a good change "
                               "of the capture)", f"a row in {f.rel} (__event_id {row.get('__event_id')!r})")
    for key, change in expected.items():
        if seen[key] == 0:
            check.mismatch(change.row_id, "(row)", f"one row ({change.op}, event {change.event_id})", "missing")
        elif seen[key] > 1:
            check.mismatch(change.row_id, "(row)", "one row", f"{seen[key]} rows in {sorted(set(where[key]))}")


def duckdb_rows(root: Path) -> list:
    """All rows of all files through DuckDB's union-by-name hive dataset read."""
    pattern = str(root / "*" / "*" / "*.parquet").replace("'", "''")
    query = (f"SELECT * FROM read_parquet('{pattern}', hive_partitioning=true, union_by_name=true, "
             f"filename='{DUCKDB_FILE_COLUMN}')")
    with duckdb.connect() as connection:
        relation = connection.sql(query)
        # The name of "give me a pyarrow Table" moved between DuckDB releases.
        if hasattr(relation, "to_arrow_table"):
            table = relation.to_arrow_table()
        else:
            table = relation.fetch_arrow_table()
    return table.to_pylist()


def check_values_duckdb(root: Path, files: list, expected: dict, check: Check) -> None:
    """Every row read with DuckDB against its change, decoded per its own file's metadata.

    DuckDB drops Arrow field metadata and unions column types across files
    (an int64 column and a utf8 one become VARCHAR), so each row is decoded
    with the column specs of the file it came from.
    """
    try:
        rows = duckdb_rows(root)
    except Exception as error:  # noqa: BLE001 - a failing read is the finding
        check.problem(f"DuckDB cannot read the dataset: {type(error).__name__}: {error}")
        return
    by_path = {os.path.realpath(f.path): f for f in files}
    total = sum(len(f.rows) for f in files)
    if len(rows) != total:
        check.problem(f"DuckDB reads {len(rows)} rows, pyarrow {total}")
    seen = collections.Counter()
    for index, row in enumerate(rows):
        source = by_path.get(os.path.realpath(str(row.pop(DUCKDB_FILE_COLUMN, ""))))
        day = row.pop(DUCKDB_PARTITION_COLUMN, None)
        label = row_label(row, f"duckdb row {index}")
        if source is None:
            check.mismatch(label, DUCKDB_FILE_COLUMN, "a file pyarrow read", "an unknown file")
            continue
        if day is not None and str(day) != source.date:
            check.mismatch(label, "date (hive partition)", source.date, str(day))
        key = (row.get("__shard_id"), row.get("__sequence_number"))
        seen[key] += 1
        change = expected.get(key)
        if change is None:
            continue  # reported by the rows-exactly-once check
        extra = [c for c in row if c not in source.specs and c not in META_COLUMNS]
        compare_row(row, source.specs, change, check, label + " [duckdb]", extra, unioned=True)
    missing = [c.row_id for key, c in expected.items() if seen[key] == 0]
    if missing:
        check.problem(f"DuckDB does not return {len(missing)} expected row(s): {missing[:5]}")


def note_whole_dataset(root: Path, files: list, check: Check) -> None:
    """Notes whether pyarrow can read the whole output as a single dataset.

    Schema widening legitimately gives one column different types in different
    files (int64 first, utf8 after a decimal arrives), which pyarrow cannot
    unify; so this is reported as a note, not a failure.
    """
    schemas = [f.schema for f in files if f.schema is not None]
    if not schemas:
        return
    try:
        unified = pa.unify_schemas(schemas, promote_options="permissive")
        dataset = pads.dataset(str(root), format="parquet", partitioning="hive", schema=unified)
        rows = dataset.count_rows()
        check.notes.append(f"pyarrow reads the whole output as one dataset: {rows} rows")
    except Exception as error:  # noqa: BLE001
        check.notes.append(f"pyarrow cannot read the whole output as one dataset "
                           f"({type(error).__name__}: {str(error)[:160]}); files were read one by one")


def find_dead_letter_dir(root: Path, out: Path, check: Check) -> Optional[Path]:
    """`<parquet root>/_dead_letter`, or `<out>/_dead_letter` with a note."""
    if (root / "_dead_letter").is_dir():
        return root / "_dead_letter"
    if (out / "_dead_letter").is_dir():
        check.notes.append(f"dead letters found in {out / '_dead_letter'}, not under the Parquet root")
        return out / "_dead_letter"
    return None


def read_dead_letters(directory: Optional[Path], check: Check) -> list:
    """All dead-letter objects, each with where it was read from."""
    letters = []
    if directory is None:
        return letters
    for path in sorted(directory.glob("*.jsonl")):
        text = path.read_text(encoding="utf-8", errors="replace")
        # split("\n"), not splitlines(): a dead letter's raw text may hold U+2028.
        for number, line in enumerate(text.split("\n"), 1):
            if not line.strip():
                continue
            try:
                letter = json.loads(line)
            except json.JSONDecodeError as error:
                check.problem(f"{path.name}:{number}: dead letter is not JSON ({error})")
                continue
            if not isinstance(letter, dict):
                check.problem(f"{path.name}:{number}: dead letter is not a JSON object")
                continue
            letters.append((f"{path.name}:{number}", letter))
    return letters


def check_dead_letters(letters: list, capture: Capture, check: Check, directory_found: bool) -> None:
    """Each bad input dead-lettered exactly once, well-formed; nothing else dead-lettered."""
    if not directory_found:
        check.problem("no _dead_letter directory")
    hits = collections.defaultdict(list)
    for where, letter in letters:
        raw = letter.get("raw")
        matched = [b for b in capture.bad if isinstance(raw, str) and b.marker in raw]
        if not matched:
            check.problem(f"{where}: dead letter for no bad input (raw {str(raw)[:100]!r}, "
                          f"error {letter.get('error')!r})")
        if len(matched) > 1:
            check.problem(f"{where}: one dead letter swallows several inputs: {[b.marker for b in matched]}")
        for bad in matched:
            hits[bad.marker].append((where, letter))
    for bad in capture.bad:
        found = hits.get(bad.marker, [])
        label = f"{bad.file}:{bad.line}" + (f" record {bad.record_index}" if bad.record_index is not None else "")
        if len(found) != 1:
            check.mismatch(label, "(dead letter)", f"exactly one dead letter for {bad.what}", f"{len(found)}")
            continue
        where, letter = found[0]
        for key in ("origin", "line", "table", "shard", "error", "raw"):
            if key not in letter:
                check.mismatch(label, key, "present", f"missing in {where}")
        if not (isinstance(letter.get("error"), str) and letter["error"].strip()):
            check.mismatch(label, "error", "a non-empty message", repr(letter.get("error")))
        if letter.get("line") != bad.line:
            check.mismatch(label, "line", str(bad.line), repr(letter.get("line")))
        if bad.file.split(".")[0] not in str(letter.get("origin", "")):
            check.mismatch(label, "origin", f"naming {bad.file}", repr(letter.get("origin")))
        if letter.get("shard") not in (None, bad.file.split(".")[0]):
            check.mismatch(label, "shard", repr(bad.file.split(".")[0]), repr(letter.get("shard")))
        if letter.get("table") not in (None, "awkward"):
            check.mismatch(label, "table", "'awkward' or null", repr(letter.get("table")))
        if letter.get("record_index") is not None and letter["record_index"] != bad.record_index:
            check.mismatch(label, "record_index", repr(bad.record_index), repr(letter["record_index"]))
        if bad.seq and letter.get("sequence_number") not in (None, bad.seq):
            check.mismatch(label, "sequence_number", bad.seq, repr(letter.get("sequence_number")))


def snapshot_parquet(root: Path) -> dict:
    """Relative path -> sha256 of every *.parquet under the root."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.parquet"))}


# ---------------------------------------------------------------------------
# One numbers mode, end to end
# ---------------------------------------------------------------------------


def exit_problem(result: RunResult) -> str:
    """An unexpected exit code, with the end of stderr when there is one."""
    if not result.detail.strip():
        return f"exit code {result.code} (stderr empty)"
    return f"exit code {result.code}; stderr tail:\n      " + result.detail.replace("\n", "\n      ")


def check_mode(mode: str, binary: Path, capture: Capture, capture_dir: Path, workdir: Path,
               timeout: float, date_partition: str) -> list:
    """Runs the binary twice for one numbers mode and checks everything; returns the checks."""
    out = workdir / mode
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    root = out / "parquet"
    config = write_config(out, capture_dir, mode)
    checks: list[Check] = []
    first = Check(f"{mode}: run 1 exits 3 (done, some records dead-lettered)")
    checks.append(first)
    result = run_binary(binary, config, out / "run1", timeout)
    if result.code is None:
        first.problem(result.detail)
        return checks
    if result.code != 3:
        first.problem(exit_problem(result))
    if not root.is_dir():
        first.problem(f"no output directory {root}")
        return checks

    expected = {(c.shard, c.seq): c for c in capture.changes}
    schema = Check(f"{mode}: schema and field metadata")
    files = read_output_files(root, mode, schema)
    known_attrs = collections.defaultdict(set)
    for change in capture.changes:
        known_attrs[change.table].update(change.image)
    for f in files:
        for spec in f.specs.values():
            if f.table is not None and spec.attr not in known_attrs[f.table]:
                schema.problem(f"{f.rel}: column {spec.column!r} holds attribute {spec.attr!r}, "
                               f"which no item of table {f.table} has")
    if mode == "auto":
        note_unneeded_strings(files, schema)
    layout = Check(f"{mode}: layout, zstd, file names, date partitions")
    check_layout(root, files, date_partition, layout)
    once = Check(f"{mode}: each change exactly once, nothing else")
    check_rows_once(files, expected, once)
    values = Check(f"{mode}: values read with pyarrow.dataset")
    check_values_pyarrow(files, expected, values)
    note_whole_dataset(root, files, values)
    duck = Check(f"{mode}: values read with DuckDB")
    check_values_duckdb(root, files, expected, duck)
    dead = Check(f"{mode}: dead letters")
    dead_dir = find_dead_letter_dir(root, out, dead)
    check_dead_letters(read_dead_letters(dead_dir, dead), capture, dead, dead_dir is not None)
    checks += [schema, layout, once, values, duck, dead]

    before = snapshot_parquet(root)
    second = Check(f"{mode}: run 2 exits 0 or 3")
    unchanged = Check(f"{mode}: run 2 writes no Parquet file")
    checks += [second, unchanged]
    result = run_binary(binary, config, out / "run2", timeout)
    if result.code is None:
        second.problem(result.detail)
        unchanged.problem("run 2 did not complete")
        return checks
    if result.code not in (0, 3):
        second.problem(exit_problem(result))
    after = snapshot_parquet(root)
    for rel in sorted(after.keys() - before.keys()):
        unchanged.problem(f"new file {rel}")
    for rel in sorted(before.keys() - after.keys()):
        unchanged.problem(f"file removed: {rel}")
    for rel in sorted(before.keys() & after.keys()):
        if before[rel] != after[rel]:
            unchanged.problem(f"file rewritten: {rel}")
    # Re-reading the capture may dead-letter the bad inputs again, but must
    # never dead-letter a record that was already delivered.
    for where, letter in read_dead_letters(find_dead_letter_dir(root, out, Check("")), second):
        if not any(isinstance(letter.get("raw"), str) and b.marker in letter["raw"] for b in capture.bad):
            second.problem(f"{where}: dead letter for no bad input after run 2: {str(letter.get('raw'))[:100]!r}")
    return checks


def full_check(binary: Path, workdir: Path, modes: list, timeout: float, date_partition: str) -> list:
    """Writes the capture and checks every numbers mode."""
    capture = build_capture()
    capture_dir = workdir / "capture"
    if capture_dir.exists():
        shutil.rmtree(capture_dir)
    write_capture(capture, capture_dir)
    generated = Check("capture written and reads back")
    for problem in verify_capture(capture, capture_dir):
        generated.problem(problem)
    checks = [generated]
    for mode in modes:
        checks += check_mode(mode, binary, capture, capture_dir, workdir, timeout, date_partition)
    return checks


# ---------------------------------------------------------------------------
# Self-test: a reference writer acting as the binary, and planted faults
# ---------------------------------------------------------------------------

#: The change whose cells the value faults alter: the first insert of the awkward item.
FAULT_ROW_SHARD, FAULT_ROW_INDEX = "awkward-shard-1", 0


def sanitize_names(attrs: list) -> dict:
    """Attribute -> column name: [A-Za-z0-9_] only, no leading digit, unique."""
    names, taken = {}, set()
    for attr in attrs:
        name = re.sub(r"[^A-Za-z0-9_]", "_", attr)
        name = "_" + name if name[:1].isdigit() else name
        base, n = name, 2
        while name in taken or name in META_COLUMNS:
            name, n = f"{base}_{n}", n + 1
        taken.add(name)
        names[attr] = name
    return names


def reference_column(values: list, mode: str) -> tuple:
    """(arrow type, dynamodb.type, python values) for one attribute's wire values."""
    kinds = {next(iter(v)) for v in values if v is not None} - {"NULL"}
    if not kinds:
        return pa.null(), "NULL", [None] * len(values)
    if len(kinds) > 1 or kinds & {"L", "M"}:
        cells = [None if v is None or "NULL" in v else json.dumps(v, ensure_ascii=False, separators=(",", ":"))
                 for v in values]
        return pa.string(), "json", cells
    kind = kinds.pop()
    present = [v[kind] if v is not None and kind in v else None for v in values]

    def numbers(texts):
        canon = [canonical_number(t) for t in texts]
        if mode == "auto" and all("." not in c and INT64_MIN <= int(c) <= INT64_MAX for c in canon):
            return pa.int64(), [int(c) for c in canon]
        return pa.string(), canon

    if kind == "S":
        return pa.string(), "S", present
    if kind == "B":
        return pa.binary(), "B", [None if p is None else base64.b64decode(p) for p in present]
    if kind == "BOOL":
        return pa.bool_(), "BOOL", present
    if kind == "N":
        arrow, cells = numbers([p for p in present if p is not None])
        it = iter(cells)
        return arrow, "N", [None if p is None else next(it) for p in present]
    if kind == "SS":
        return pa.list_(pa.string()), "SS", [None if p is None else sorted(p) for p in present]
    if kind == "BS":
        return pa.list_(pa.binary()), "BS", [None if p is None else sorted(base64.b64decode(b) for b in p)
                                             for p in present]
    # NS: one element type for the whole column, elements sorted numerically
    arrow, cells = numbers([t for p in present if p is not None for t in p])
    it = iter(cells)
    lists = [None if p is None else sorted((next(it) for _ in p), key=Decimal) for p in present]
    return pa.list_(arrow), "NS", lists


def reference_table(changes: list, mode: str, fault: str, fault_event: str) -> pa.Table:
    """One file's rows, written the way the output conventions describe."""
    attrs = sorted(set().union(*(c.image_wire.keys() for c in changes)))
    names = sanitize_names(attrs)
    fields, arrays = [], []
    target = next((i for i, c in enumerate(changes) if c.event_id == fault_event), None)
    for attr in attrs:
        arrow, dtype, cells = reference_column([c.image_wire.get(attr) for c in changes], mode)
        if target is not None:
            if fault == "value" and attr == "n_1_50":
                cells[target] = "1.4"
            elif fault == "noncanonical" and attr == "n_1_50":
                cells[target] = "1.50"
            elif fault == "binary" and attr == "b_ff":
                cells[target] = b"\xff"
            elif fault == "set-order" and attr == "ss":
                cells[target] = list(reversed(cells[target]))
            elif fault == "json" and attr == "m_nested":
                loaded = json.loads(cells[target])
                loaded["M"]["dot.key"] = {"N": "101"}
                cells[target] = json.dumps(loaded)
            elif fault == "float" and attr == "n_1_50":
                arrow, cells = pa.float64(), [None if c is None else float(c) for c in cells]
        metadata = {"dynamodb.type": dtype}
        if names[attr] != attr:
            metadata["dynamodb.name"] = attr
        if fault == "no-metadata" and attr == "s_empty":
            metadata = {}
        fields.append(pa.field(names[attr], arrow, metadata=metadata))
        arrays.append(pa.array(cells, type=arrow))
    meta = [expected_meta(c) for c in changes]
    if fault == "op" and target is not None:
        meta[target]["__op"] = "u"
    for column, kind in META_COLUMNS.items():
        arrow = {"string": pa.string(), "int64": pa.int64(), "bool": pa.bool_()}[kind]
        fields.append(pa.field(column, arrow))
        arrays.append(pa.array([m[column] for m in meta], type=arrow))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def parse_simple_toml(text: str) -> dict:
    """The `[section]` / `key = "string"` subset of TOML the check writes."""
    sections: dict[str, dict] = {}
    current = sections.setdefault("", {})
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1].strip(), {})
        elif "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            current[key.strip()] = json.loads(value.strip())
    return sections


def fake_binary_main(argv: list) -> int:
    """Acts as `dynamo-cdc run --config X`, writing reference output (for --self-test).

    The output follows the conventions with one file per (table, UTC date,
    shard). It is built from the deterministic capture model rather than by
    parsing the capture files; the fault named in $E2E_CHECK_FAULT is planted.
    """
    if len(argv) != 3 or argv[0] != "run" or argv[1] != "--config":
        sys.stderr.write("usage: run --config PATH\n")
        return 2
    config = parse_simple_toml(Path(argv[2]).read_text(encoding="utf-8"))
    root = Path(config["sinks.parquet"]["path"])
    source = Path(config["source"]["path"])
    mode = config["transform"].get("numbers", "auto")
    fault = os.environ.get(FAULT_ENV, "")
    capture = build_capture()
    if list(root.rglob("*.parquet")):
        # Second run: everything is already delivered.
        if fault == "rewrite":
            victim = sorted(root.rglob("*.parquet"))[0]
            shutil.copy(victim, victim.with_name("copy-" + victim.name))
        return 0
    fault_event = [c for c in capture.changes if c.shard == FAULT_ROW_SHARD][FAULT_ROW_INDEX].event_id
    ttl_event = next(c.event_id for c in capture.changes if c.ttl)
    groups: dict[tuple, list] = {}
    for change in capture.changes:
        if fault == "drop-row" and change.event_id == ttl_event:
            continue
        day = date_of_ms(change.ts_ms)
        if fault == "date" and change.shard == FAULT_ROW_SHARD:
            day = "1999-12-31"
        group = groups.setdefault((change.table, day, change.shard), [])
        group.append(change)
        if fault == "dup-row" and change.event_id == ttl_event:
            group.append(change)
    for (table, day, shard), changes in groups.items():
        directory = root / table / f"date={day}"
        directory.mkdir(parents=True, exist_ok=True)
        name = f"{shard}_{changes[0].seq}.parquet"
        event = fault_event if fault != "op" else ttl_event
        codec = "snappy" if fault == "compression" else "zstd"
        last = changes[-2].seq if fault == "footer-last" and len(changes) > 1 else changes[-1].seq
        table = reference_table(changes, mode, fault, event)
        table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                               FIRST_SEQ_KEY: changes[0].seq.encode(),
                                               LAST_SEQ_KEY: last.encode()})
        pq.write_table(table, directory / name, compression=codec)
        if fault == "stray":
            (directory / (name + ".tmp")).write_bytes(b"partial")
    dead_dir = root / "_dead_letter"
    dead_dir.mkdir(parents=True, exist_ok=True)
    with open(dead_dir / "replay.jsonl", "w", encoding="utf-8") as out:
        for bad in capture.bad:
            if fault == "dead-letter-missing" and bad.marker == "bad-deep-33":
                continue
            letter = {"origin": str(source / bad.file), "line": bad.line, "record_index": bad.record_index,
                      "table": "awkward" if bad.record_index is not None else None,
                      "shard": bad.file.split(".")[0], "sequence_number": bad.seq,
                      "error": f"reference: {bad.what}", "raw": bad.raw}
            out.write(json.dumps(letter, ensure_ascii=False) + "\n")
        if fault == "dead-letter-extra":
            out.write(json.dumps({"origin": "x", "line": 1, "table": None, "shard": None,
                                  "error": "spurious", "raw": "not one of the bad inputs"}) + "\n")
    Path(config["checkpoint"]["path"]).write_text("{}\n", encoding="utf-8")
    return 1 if fault == "exit" else 3


#: Planted fault -> words that must appear in the name of a failing check.
FAULTS = {
    "value": "pyarrow",
    "noncanonical": "pyarrow",
    "binary": "DuckDB",
    "set-order": "pyarrow",
    "json": "DuckDB",
    "float": "schema",
    "op": "pyarrow",
    "no-metadata": "schema",
    "drop-row": "exactly once",
    "dup-row": "exactly once",
    "date": "date partitions",
    "compression": "zstd",
    "stray": "layout",
    "footer-last": "file names",
    "dead-letter-missing": "dead letters",
    "dead-letter-extra": "dead letters",
    "rewrite": "writes no Parquet",
    "exit": "run 1",
}


def unit_checks() -> Check:
    """Direct checks of the pure helpers."""
    check = Check("self-test: helpers")
    cases = {"1.50": "1.5", "-0": "0", "1.2E+3": "1200", "1E-3": "0.001", "-1E+2": "-100", "0.0": "0",
             "1E-130": "0." + "0" * 129 + "1", "9.9999999999999999999999999999999999999E+125": "9" * 38 + "0" * 88,
             "0012.3400": "12.34"}
    for text, want in cases.items():
        got = canonical_number(text)
        if got != want or not is_canonical_number(got):
            check.problem(f"canonical_number({text!r}) = {got!r}, want {want!r}")
    for text in ("1.50", "-0", "01", "1E+2", "1.", ".5", "+1"):
        if is_canonical_number(text):
            check.problem(f"is_canonical_number accepts {text!r}")
    stems = {"shardId-00000001536019433815-12345678_99": ("shardId-00000001536019433815-12345678", "99", None),
             "a_1_7": ("a_1", "7", None), "x_1-2_3": ("x_1-2", "3", None),
             "shardId-00000001536019433815-12345678-5-9": ("shardId-00000001536019433815-12345678", "5", "9"),
             "a_b-5-9": ("a_b", "5", "9"), "x-1": None, "s_": None, "s_abc": None}
    for stem, want in stems.items():
        if parse_stem(stem) != want:
            check.problem(f"parse_stem({stem!r}) = {parse_stem(stem)!r}, want {want!r}")
    if duckdb_blob_text("\\x5CA\\xFF\\x00 ~\\x7F") != b"\\A\xff\x00 ~\x7f":
        check.problem("duckdb_blob_text does not undo DuckDB's escaping")
    if tag(True) == tag(Decimal(1)) or tag(None) == tag(""):
        check.problem("tagged values of different types compare equal")
    if tag(Decimal("1.50")) != tag(Decimal("1.5")) or tag({Decimal("-0")}) != tag({Decimal("0")}):
        check.problem("equal numbers compare unequal")
    capture = build_capture()
    if len(capture.bad) != 7:
        check.problem(f"capture has {len(capture.bad)} bad inputs, want 7")
    ops = collections.Counter(c.op for c in capture.changes)
    if not (ops["c"] and ops["u"] and ops["d"] and any(c.ttl for c in capture.changes)):
        check.problem(f"capture lacks inserts, modifies, deletes or a TTL delete: {ops}")
    deep = capture.changes[0].image["deep_32"]
    depth = 0
    while deep[0] in ("L", "M"):
        depth, deep = depth + 1, deep[1][0] if deep[0] == "L" else deep[1][0][1]
    if depth != 32:
        check.problem(f"deep_32 is {depth} levels deep")
    seqs = collections.defaultdict(list)
    for c in capture.changes:
        seqs[c.shard].append(int(c.seq))
    if any(s != sorted(s) for s in seqs.values()):
        check.problem("sequence numbers are not increasing per shard")
    return check


def union_read_check(workdir: Path) -> Check:
    """Hand-made files whose columns change type between files, read back through DuckDB.

    DuckDB casts such columns to VARCHAR; the comparator must still decode each
    row by its own file's metadata, and still catch a wrong value.
    """
    check = Check("self-test: DuckDB union of differently typed files")
    root = workdir / "union" / "parquet"
    if root.exists():
        shutil.rmtree(root)
    (root / "t" / "date=2024-01-01").mkdir(parents=True)

    def change(seq: str, image: dict) -> ExpectedChange:
        wire = wire_item(image)
        return ExpectedChange(table="t", shard="s", seq=seq, event_id=f"e{seq}", op="c", ttl=False,
                              ts_ms=1704067200000, image_wire=wire,
                              image={k: tag(EXPECT_DESERIALIZER.deserialize(from_wire(v))) for k, v in wire.items()})

    first = change("1", {"flag": True, "blob": b"\xff\\", "n": 5})
    second = change("2", {"flag": "x", "blob": "y", "n": Decimal("1.5")})
    expected = {(c.shard, c.seq): c for c in (first, second)}

    def write(c: ExpectedChange, columns: list) -> None:
        fields = [pa.field(name, arrow, metadata={"dynamodb.type": dtype}) for name, arrow, dtype, _ in columns]
        arrays = [pa.array([value], type=arrow) for _, arrow, _, value in columns]
        for column, value in expected_meta(c).items():
            arrow = {"string": pa.string(), "int64": pa.int64(), "bool": pa.bool_()}[META_COLUMNS[column]]
            fields.append(pa.field(column, arrow))
            arrays.append(pa.array([value], type=arrow))
        pq.write_table(pa.Table.from_arrays(arrays, schema=pa.schema(fields)),
                       root / "t" / "date=2024-01-01" / f"s-{c.seq}-{c.seq}.parquet", compression="zstd")

    def run(blob: bytes) -> list:
        write(first, [("flag", pa.bool_(), "BOOL", True), ("blob", pa.binary(), "B", blob),
                      ("n", pa.int64(), "N", 5)])
        write(second, [("flag", pa.string(), "json", '{"S":"x"}'), ("blob", pa.string(), "json", '{"S":"y"}'),
                       ("n", pa.string(), "N", "1.5")])
        found = Check("")
        files = read_output_files(root, "auto", found)
        check_values_pyarrow(files, expected, found)
        check_values_duckdb(root, files, expected, found)
        return found.problems

    clean = run(b"\xff\\")
    if clean:
        check.problem(f"clean files fail: {clean[:3]}")
    planted = run(b"\xfe\\")
    if not any("[duckdb] | blob" in p for p in planted):
        check.problem(f"a wrong binary value read through DuckDB's union is not caught: {planted[:3]}")
    return check


def self_test(workdir: Path, timeout: float, max_lines: int) -> int:
    """Checks the checker: a clean reference output passes, each planted fault fails."""
    fake = workdir / "fake-dynamo-cdc"
    fake.write_text(f"#!/bin/sh\nexec {json.dumps(sys.executable)} {json.dumps(os.path.abspath(__file__))} "
                    f"--fake-binary \"$@\"\n", encoding="utf-8")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    results = [unit_checks(), union_read_check(workdir)]
    scenarios = [("", ["auto", "string"])] + [(fault, ["auto"]) for fault in FAULTS]
    for fault, modes in scenarios:
        os.environ[FAULT_ENV] = fault
        checks = full_check(fake, workdir / "run", modes, timeout, "event")
        result = Check(f"self-test: {'clean reference output passes' if not fault else 'fault ' + fault + ' is caught'}")
        failing = [c for c in checks if not c.ok]
        if not fault and failing:
            buffer = io.StringIO()
            print_report(failing, max_lines, buffer)
            result.problem("the clean output fails:\n" + buffer.getvalue())
        elif fault and not any(FAULTS[fault].lower() in c.name.lower() for c in failing):
            result.problem(f"no failing check named like {FAULTS[fault]!r}; failing: {[c.name for c in failing]}")
        elif fault:
            first = next(c for c in failing if FAULTS[fault].lower() in c.name.lower())
            result.notes.append(f"{first.name}: {first.problems[0][:150]}")
        results.append(result)
    os.environ.pop(FAULT_ENV, None)
    passed, failed = print_report(results, max_lines)
    print(f"e2e: {passed} passed, {failed} failed")
    return 1 if failed else 0


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def resolve_binary(text: str) -> Path:
    """A relative --bin is tried from the current directory, then from the repository root."""
    path = Path(text)
    if path.is_absolute() or path.exists():
        return path.resolve()
    from_repo = Path(__file__).resolve().parent.parent / path
    return from_repo if from_repo.exists() else path.resolve()


def main(argv: Optional[list] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--fake-binary"]:
        return fake_binary_main(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin", default="target/debug/dynamo-cdc", help="the dynamo-cdc binary")
    parser.add_argument("--workdir", help="where to write the capture and outputs (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (a --workdir is always kept)")
    parser.add_argument("--modes", default="auto,string", help="numbers modes to check, comma-separated")
    parser.add_argument("--timeout", type=float, default=600, help="seconds each run may take")
    parser.add_argument("--date-partition", choices=("event", "any"), default="event",
                        help="'event': date=… must be the UTC day of each row's __source_ts_ms")
    parser.add_argument("--max-report", type=int, default=40, help="problems printed per check")
    parser.add_argument("--self-test", action="store_true", help="check the checker against planted faults")
    args = parser.parse_args(argv)

    if args.workdir:
        workdir = Path(args.workdir).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        workdir = Path(tempfile.mkdtemp(prefix="dynamo-cdc-e2e-"))
    try:
        kept = "" if args.workdir or args.keep else " (removed at exit; --keep keeps it)"
        if args.self_test:
            print(f"workdir: {workdir}{kept}")
            return self_test(workdir, args.timeout, args.max_report)
        binary = resolve_binary(args.bin)
        modes = [m.strip() for m in args.modes.split(",") if m.strip()]
        if not modes or set(modes) - {"auto", "string"}:
            parser.error("--modes takes auto and/or string (values of \"double\" are lossy by design)")
        print(f"binary: {binary}\nworkdir: {workdir}{kept}")
        checks = full_check(binary, workdir, modes, args.timeout, args.date_partition)
        passed, failed = print_report(checks, args.max_report)
        print(f"e2e: {passed} passed, {failed} failed")
        return 1 if failed else 0
    finally:
        # The report's last line must stay last, so nothing is printed here.
        if not args.workdir and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
