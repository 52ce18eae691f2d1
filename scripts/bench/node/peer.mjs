#!/usr/bin/env node
// A Node.js DynamoDB Streams -> Parquet / Kafka pipeline (benchmark baseline).
//
// What a Node.js Lambda function does with a stream batch, with the usual
// libraries, written for throughput: `JSON.parse` for each GetRecords page,
// `unmarshall` from @aws-sdk/util-dynamodb for the images (numbers kept exact
// as NumberValue), the rows built column by column (typed arrays for numbers
// and offsets, one byte buffer per string or binary column) into Arrow data
// with apache-arrow's `makeData`, handed to parquet-wasm (arrow-rs in
// WebAssembly) in batches of up to a row group (zstd); avsc for Avro in the
// Confluent wire format (schemas registered with the registry over HTTP), a
// page's messages encoded into one buffer, and kafkajs to produce, one send
// per topic per page, awaited as a Lambda awaits its batch. Only the
// libraries of the outputs asked for are loaded.
//
// It writes what scripts/bench/peer.py writes, so `check.py` compares its
// output with dynamo-cdc's row for row and message for message:
//
// * Parquet: one row per change with exactly the columns and Arrow types of a
//   target schema (read from a Parquet file dynamo-cdc wrote), zstd, under
//   `<root>/<table>/date=YYYY-MM-DD/part-NNNNN.parquet`, row groups of 65,536
//   rows, files rolled at 1,000,000 rows or 128 MiB, each written under a
//   hidden temp name, fsynced and renamed.
// * Kafka: the Debezium-style envelope (or the flat row, whichever the value
//   schema describes), keyed by the item's primary key, with the `dynamodb.*`
//   headers and a tombstone after each delete, acks from all replicas, zstd.
//   Not idempotent: kafkajs marks its idempotent producer experimental, and it
//   asks the cluster's controller for a producer id, which librdkafka's mock
//   cluster (the benchmark's broker) does not name (it reports controller 0,
//   a broker that does not exist). One request in flight keeps the order.
//
// Usage (the options of peer.py):
//
//     node peer.mjs --input CAPTURE --mode parquet|kafka|both \
//         [--parquet OUT_DIR --arrow-schema SCHEMA.parquet] \
//         [--brokers HOST:PORT --topic-template 'peer.{table}' \
//          --registry URL --value-schema VALUE.avsc --key-schema KEY.avsc] \
//         [--no-tombstones]
//
// At the end it prints one line of JSON to stdout:
// `{"records": N, "parquet_rows": N, "kafka_messages": N, ...}`.
// Exit code 0 on success, 1 on any error.

import { createReadStream, openSync, readSync, closeSync, readdirSync, statSync, readFileSync } from "node:fs";
import { open, mkdir, rename } from "node:fs/promises";
import { createRequire } from "node:module";
import path from "node:path";
import { parseArgs } from "node:util";
import zlib from "node:zlib";

import { unmarshall } from "@aws-sdk/util-dynamodb";

// Loaded by `run` for the outputs asked for (a function writing only
// Parquet does not bundle a Kafka client, and the other way round).
let arrow; // apache-arrow
let parquet; // parquet-wasm
let avro; // avsc
let kafkajs;
let zstd; // @mongodb-js/zstd

// dynamo-cdc's Parquet defaults (docs/configuration.md), as in peer.py.
const ROW_GROUP_ROWS = 65_536;
const MAX_ROWS_PER_FILE = 1_000_000;
const MAX_FILE_BYTES = 128 * 1024 * 1024;
// Rows are handed to the Parquet writer a row group at a time, or sooner
// when the columns built hold this many bytes (items near 400 KB).
const BATCH_BYTES = 16 * 1024 * 1024;
// librdkafka's default zstd level, as the other contenders compress.
const ZSTD_LEVEL = 3;

const META_COLUMNS = [
  "__op", "__table", "__shard_id", "__sequence_number",
  "__event_id", "__source_ts_ms", "__deleted", "__ttl_delete",
];
const OPS = { INSERT: "c", MODIFY: "u", REMOVE: "d" };
const MS_PER_DAY = 86_400_000;
const UNMARSHALL = { wrapNumbers: true }; // exact numbers, as NumberValue

class PipelineError extends Error {
  name = "PipelineError";
}

// ---------------------------------------------------------------------------
// Reading the capture
// ---------------------------------------------------------------------------

/** The capture files under `p`, in name order (as dynamo-cdc reads them). */
function captureFiles(p) {
  if (statSync(p).isFile()) return [p];
  const found = [];
  const walk = (dir) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      if (entry.name.startsWith(".") || entry.name.startsWith("_")) continue;
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) walk(full);
      else if (/\.(json|jsonl|ndjson)(\.gz)?$/.test(entry.name)) found.push(full);
    }
  };
  walk(p);
  if (found.length === 0) {
    throw new PipelineError(`no capture files (*.json, *.jsonl, *.ndjson) under ${p}`);
  }
  return found.sort();
}

/** The shard a capture file stands for: its name without extensions. */
function shardName(file) {
  return path.basename(file).replace(/\.gz$/, "").replace(/\.(jsonl|ndjson|json)$/, "");
}

function isGzip(file) {
  const fd = openSync(file, "r");
  try {
    const head = Buffer.alloc(2);
    return readSync(fd, head, 0, 2, 0) === 2 && head[0] === 0x1f && head[1] === 0x8b;
  } finally {
    closeSync(fd);
  }
}

/** The lines of a capture file, one GetRecords page each, streamed, as
 * bytes (a line is decoded once, whole, when it is parsed). */
async function* lines(file) {
  let input = createReadStream(file, { highWaterMark: 1 << 20 });
  if (isGzip(file)) input = input.pipe(zlib.createGunzip({ chunkSize: 1 << 20 }));
  let partial = []; // the pieces of a line that began in earlier chunks
  for await (const chunk of input) {
    let start = 0;
    for (let end = chunk.indexOf(10); end !== -1; end = chunk.indexOf(10, start)) {
      if (partial.length === 0) {
        yield chunk.subarray(start, end);
      } else {
        partial.push(chunk.subarray(start, end));
        yield Buffer.concat(partial);
        partial = [];
      }
      start = end + 1;
    }
    if (start < chunk.length) partial.push(chunk.subarray(start));
  }
  if (partial.length > 0) yield Buffer.concat(partial);
}

const tables = new Map(); // stream ARN -> table name

/** `arn:aws:dynamodb:REGION:ACCOUNT:table/NAME/stream/LABEL` -> `NAME`. */
function tableFromArn(arn) {
  let table = tables.get(arn);
  if (table === undefined) tables.set(arn, (table = parseArn(arn)));
  return table;
}

function parseArn(arn) {
  const parts = arn.split(":");
  const resource = parts.length >= 6 ? parts.slice(5).join(":") : "";
  if (!resource.startsWith("table/")) {
    throw new PipelineError(`eventSourceARN ${JSON.stringify(arn)} names no table`);
  }
  return resource.slice("table/".length).split("/", 1)[0];
}

/** `ApproximateCreationDateTime` (epoch seconds, epoch ms above 10^11, or an
 * ISO-8601 string) in milliseconds, rounded half away from zero. */
function creationMs(value) {
  if (typeof value === "string") {
    if (!/(Z|[+-]\d\d:?\d\d)$/i.test(value)) {
      throw new PipelineError(`ApproximateCreationDateTime ${value} has no time zone`);
    }
    return Date.parse(value);
  }
  let ms = Number(value);
  if (ms <= 1e11) ms *= 1000;
  const whole = Math.trunc(ms); // never negative
  return ms - whole >= 0.5 ? whole + 1 : whole;
}

/** One stream record. Its images are unmarshalled on first use: a change
 * written to Parquet only needs the image its row shows. */
class Change {
  constructor(record, shard) {
    const body = record.dynamodb;
    this.op = OPS[record.eventName];
    if (this.op === undefined) throw new PipelineError(`unknown eventName ${record.eventName}`);
    this.streamArn = record.eventSourceARN;
    if (this.streamArn == null) throw new PipelineError("record without eventSourceARN");
    this.table = tableFromArn(this.streamArn);
    this.shard = shard;
    const seq = body.SequenceNumber;
    if (typeof seq !== "string" || !/^\d{1,40}$/.test(seq)) {
      throw new PipelineError(`bad SequenceNumber ${JSON.stringify(seq)}`);
    }
    this.seq = seq.replace(/^0+/, "") || "0";
    this.eventId = record.eventID || "";
    const created = body.ApproximateCreationDateTime;
    this.tsMs = created == null ? null : creationMs(created);
    const identity = record.userIdentity || {};
    this.ttlDelete =
      (identity.type || identity.Type) === "Service" &&
      (identity.principalId || identity.PrincipalId) === "dynamodb.amazonaws.com";
    this.keysRaw = body.Keys || {};
    if (Object.keys(this.keysRaw).length === 0) {
      throw new PipelineError(`record ${this.seq} has no Keys`);
    }
    this.newRaw = body.NewImage ?? null;
    this.oldRaw = body.OldImage ?? null;
    this._keys = this._new = this._old = null;
  }

  get keys() {
    return (this._keys ??= unmarshall(this.keysRaw, UNMARSHALL));
  }

  get new() {
    if (this._new === null && this.newRaw !== null) this._new = unmarshall(this.newRaw, UNMARSHALL);
    return this._new;
  }

  get old() {
    if (this._old === null && this.oldRaw !== null) this._old = unmarshall(this.oldRaw, UNMARSHALL);
    return this._old;
  }

  /** The state a flat row shows: the new image, the old one for deletes,
   * the keys alone when the stream carries no image. */
  rowImage() {
    if (this.op === "d") {
      if (this.oldRaw !== null) return [this.old, this.oldRaw];
    } else if (this.newRaw !== null) {
      return [this.new, this.newRaw];
    }
    return [this.keys, this.keysRaw];
  }
}

/** Whether sequence number `a` comes after `b` (both without leading zeros). */
function seqAfter(a, b) {
  return a.length !== b.length ? a.length > b.length : a > b;
}

/** Yields the changes of each page of each file, in stream order. A record
 * whose sequence number does not advance in its shard (a re-read page) is
 * skipped and counted, as dynamo-cdc skips repeats. */
async function* pages(files, stats) {
  for (const file of files) {
    const shard = shardName(file);
    const lastSeq = new Map(); // table -> last sequence number read
    for await (const line of lines(file)) {
      const text = line.toString("utf8");
      if (text.trim() === "") continue;
      const page = JSON.parse(text);
      const records = page.Records ?? [page];
      const changes = [];
      for (const record of records) {
        const change = new Change(record, shard);
        const last = lastSeq.get(change.table);
        if (last !== undefined && !seqAfter(change.seq, last)) {
          stats.duplicates += 1;
          continue;
        }
        lastSeq.set(change.table, change.seq);
        changes.push(change);
      }
      yield changes;
    }
  }
}

// ---------------------------------------------------------------------------
// Value conversions shared by Parquet and Avro
// ---------------------------------------------------------------------------

const CANONICAL = /^-?(0|[1-9]\d*)(\.\d*[1-9])?$/;

/** The exact canonical decimal text dynamo-cdc writes: plain notation, no
 * exponent, no leading or trailing zeros beyond what it needs, no `-0`. */
function canonicalNumber(text) {
  if (CANONICAL.test(text) && text !== "-0") return text;
  const m = /^([+-]?)(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d+))?$/.exec(text);
  if (m === null || (m[2] === "" && (m[3] ?? "") === "")) {
    throw new PipelineError(`${JSON.stringify(text)} is not a number`);
  }
  const frac = m[3] ?? "";
  let digits = m[2] + frac;
  let point = m[2].length + Number(m[4] ?? 0); // digits before the point
  const lead = digits.length - digits.replace(/^0+/, "").length;
  digits = digits.slice(lead).replace(/0+$/, "");
  point -= lead;
  if (digits === "") return "0";
  let plain;
  if (point <= 0) plain = "0." + "0".repeat(-point) + digits;
  else if (point >= digits.length) plain = digits + "0".repeat(point - digits.length);
  else plain = digits.slice(0, point) + "." + digits.slice(point);
  return m[1] === "-" ? "-" + plain : plain;
}

/** Orders canonical decimal texts by value. */
function compareNumbers(a, b) {
  const na = a.startsWith("-");
  const nb = b.startsWith("-");
  if (na !== nb) return na ? -1 : 1;
  // Same sign: the longer whole part is larger; then digit by digit (a
  // fraction's digits compare as text, canonical texts have no trailing 0).
  const sign = na ? -1 : 1;
  const wa = wholeDigits(a);
  const wb = wholeDigits(b);
  if (wa !== wb) return sign * (wa - wb);
  return a === b ? 0 : sign * (a < b ? -1 : 1);
}

function wholeDigits(text) {
  const point = text.indexOf(".");
  return (point < 0 ? text.length : point) - (text.startsWith("-") ? 1 : 0);
}

/** Orders strings by code point (UTF-8 byte order, as dynamo-cdc sorts
 * string sets), where JavaScript's `<` compares UTF-16 code units. */
function compareCodePoints(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x === y) continue;
    // Surrogates (D800-DFFF) stand for code points above every other unit.
    if (x >= 0xd800 && y >= 0xd800) {
      x = x >= 0xe000 ? x - 0x800 : x + 0x2000;
      y = y >= 0xe000 ? y - 0x800 : y + 0x2000;
    }
    return x - y;
  }
  return a.length - b.length;
}

/** A number set's elements as canonical texts, in numeric order. */
function sortedNumbers(set) {
  const out = [];
  for (const n of set) out.push(canonicalNumber(n.value));
  return out.sort(compareNumbers);
}

/** Binary values arrive as base64 text in stream JSON; unmarshall leaves them so. */
const bytes = (text) => Buffer.from(text, "base64");

function toBigInt(text) {
  try {
    return BigInt(text);
  } catch {
    const plain = canonicalNumber(text);
    if (plain.includes(".")) throw new PipelineError(`${text} does not fit an int64`);
    return BigInt(plain);
  }
}

/** The unscaled integer of a decimal of `scale` digits after the point. */
function unscaled(text, scale) {
  const plain = canonicalNumber(text);
  const negative = plain.startsWith("-");
  const [whole, frac = ""] = (negative ? plain.slice(1) : plain).split(".");
  if (frac.length > scale) throw new PipelineError(`${text} does not fit scale ${scale}`);
  const n = BigInt(whole + frac.padEnd(scale, "0"));
  return negative ? -n : n;
}

const same = (value) => value;
// A DynamoDB-JSON value as it came over the wire, as text.
const dumps = (value, raw) => JSON.stringify(raw);

/** An image as `{name: value}` through `columns` (attribute -> [name,
 * convert]); an attribute without a column is an error. */
function flatten(columns, image, raw, into = {}) {
  for (const attribute in image) {
    const column = columns.get(attribute);
    if (column === undefined) {
      throw new PipelineError(`attribute ${attribute} is not in the target schema ` +
        "(pass the newest schema dynamo-cdc wrote)");
    }
    const value = image[attribute];
    into[column[0]] = value === null ? null : column[1](value, raw[attribute]);
  }
  return into;
}

// ---------------------------------------------------------------------------
// Parquet: rows built column by column into Arrow data
// ---------------------------------------------------------------------------

/** A typed array that grows as values are pushed; `clear` keeps the memory
 * for the next batch. */
class Growable {
  constructor(Type, capacity = 1024) {
    this.Type = Type;
    this.array = new Type(capacity);
    this.length = 0;
  }

  reserve(more) {
    const need = this.length + more;
    if (need <= this.array.length) return;
    let capacity = this.array.length * 2;
    while (capacity < need) capacity *= 2;
    const array = new this.Type(capacity);
    array.set(this.array.subarray(0, this.length));
    this.array = array;
  }

  push(value) {
    if (this.length === this.array.length) this.reserve(1);
    this.array[this.length++] = value;
  }

  view() {
    return this.array.subarray(0, this.length);
  }

  clear() {
    this.length = 0;
  }
}

/** The validity bitmap of a column and its null count. */
class Validity {
  constructor() {
    this.bits = new Growable(Uint8Array, 128);
    this.nulls = 0;
  }

  /** Records slot `i` (the next one) as valid or null. */
  set(i, valid) {
    if ((i & 7) === 0) this.bits.push(0);
    if (valid) this.bits.array[i >> 3] |= 1 << (i & 7);
    else this.nulls += 1;
  }

  clear() {
    this.bits.clear();
    this.nulls = 0;
  }
}

/** The common part of the column builders: length and validity. Each
 * subclass appends its value with `add*`, its empty slot with `nullValue`,
 * and makes its Arrow data in `data`. */
class Column {
  constructor(type) {
    this.type = type;
    this.length = 0;
    this.validity = new Validity();
  }

  valid() {
    this.validity.set(this.length++, true);
  }

  addNull() {
    this.nullValue();
    this.validity.set(this.length++, false);
  }

  /** The column's values since the last call, as Arrow data; the builder
   * starts over, keeping its memory (the data is copied into IPC before
   * anything is added again). */
  finish() {
    const nullCount = this.validity.nulls;
    const data = this.data({
      type: this.type,
      length: this.length,
      nullCount,
      nullBitmap: nullCount === 0 ? undefined : this.validity.bits.view(),
    });
    this.length = 0;
    this.validity.clear();
    this.clear();
    return data;
  }
}

/** Utf8 and Binary: offsets and one byte buffer. */
class VarBinaryColumn extends Column {
  constructor(type) {
    super(type);
    this.offsets = new Growable(Int32Array);
    this.offsets.push(0);
    this.bytes = Buffer.allocUnsafe(1 << 16);
    this.size = 0;
  }

  room(more) {
    if (this.size + more <= this.bytes.length) return;
    let capacity = this.bytes.length * 2;
    while (capacity < this.size + more) capacity *= 2;
    const bytes = Buffer.allocUnsafe(capacity);
    this.bytes.copy(bytes, 0, 0, this.size);
    this.bytes = bytes;
  }

  addString(text) {
    if (typeof text !== "string") throw new PipelineError(`not a string: ${typeof text}`);
    this.room(text.length * 3);
    this.size += this.bytes.write(text, this.size);
    this.offsets.push(this.size);
    this.valid();
  }

  /** Binary given as base64 text (as stream JSON carries it). */
  addBase64(text) {
    this.room(((text.length * 3) >> 2) + 3);
    this.size += this.bytes.write(text, this.size, "base64");
    this.offsets.push(this.size);
    this.valid();
  }

  addBytes(bytes) {
    this.room(bytes.length);
    this.bytes.set(bytes, this.size);
    this.size += bytes.length;
    this.offsets.push(this.size);
    this.valid();
  }

  nullValue() {
    this.offsets.push(this.size);
  }

  byteSize() {
    return this.size + 4 * this.length;
  }

  data(props) {
    props.valueOffsets = this.offsets.view();
    props.data = this.bytes.subarray(0, this.size);
    return arrow.makeData(props);
  }

  clear() {
    this.offsets.clear();
    this.offsets.push(0);
    this.size = 0;
  }
}

/** Int64, Float64 and Decimal: fixed-width values in a typed array. */
class FixedColumn extends Column {
  constructor(type) {
    super(type);
    this.stride = arrow.DataType.isDecimal(type) ? type.bitWidth / 32 : 1;
    this.values = new Growable(type.ArrayType);
    this.zero = type.ArrayType === BigInt64Array ? 0n : 0;
  }

  add(value) {
    this.values.push(value);
    this.valid();
  }

  /** A decimal's unscaled value, as little-endian 32-bit words. */
  addDecimal(unscaledValue) {
    let n = BigInt.asUintN(this.type.bitWidth, unscaledValue);
    for (let i = 0; i < this.stride; i++, n >>= 32n) this.values.push(Number(n & 0xffffffffn));
    this.valid();
  }

  nullValue() {
    for (let i = 0; i < this.stride; i++) this.values.push(this.zero);
  }

  byteSize() {
    return this.values.length * this.values.array.BYTES_PER_ELEMENT;
  }

  data(props) {
    props.data = this.values.view();
    return arrow.makeData(props);
  }

  clear() {
    this.values.clear();
  }
}

class BoolColumn extends Column {
  constructor(type) {
    super(type);
    this.values = new Validity(); // a bitmap of the values
  }

  add(value) {
    if (typeof value !== "boolean") throw new PipelineError(`not a boolean: ${typeof value}`);
    this.values.set(this.length, value);
    this.valid();
  }

  nullValue() {
    this.values.set(this.length, false);
  }

  byteSize() {
    return this.length >> 3;
  }

  data(props) {
    props.data = this.values.bits.view();
    return arrow.makeData(props);
  }

  clear() {
    this.values.clear();
  }
}

/** A list: offsets into its item column. A row is its items added to
 * `items`, then `endList`. */
class ListColumn extends Column {
  constructor(type) {
    super(type);
    this.offsets = new Growable(Int32Array);
    this.offsets.push(0);
    this.items = makeColumn(type.children[0].type);
  }

  endList() {
    this.offsets.push(this.items.length);
    this.valid();
  }

  nullValue() {
    this.offsets.push(this.items.length);
  }

  byteSize() {
    return 4 * this.length + this.items.byteSize();
  }

  data(props) {
    props.valueOffsets = this.offsets.view();
    props.child = this.items.finish();
    return arrow.makeData(props);
  }

  clear() {
    this.offsets.clear();
    this.offsets.push(0);
  }
}

/** A struct: one column per field. A row is a value (or null) added to each
 * field's column, then `endStruct`. */
class StructColumn extends Column {
  constructor(type) {
    super(type);
    this.fields = type.children.map((f) => makeColumn(f.type));
  }

  endStruct() {
    this.valid();
  }

  nullValue() {
    for (const field of this.fields) field.addNull();
  }

  byteSize() {
    let size = 0;
    for (const field of this.fields) size += field.byteSize();
    return size;
  }

  data(props) {
    props.children = this.fields.map((f) => f.finish());
    return arrow.makeData(props);
  }

  clear() {}
}

/** The builder of a column of Arrow type `t`. */
function makeColumn(t) {
  if (arrow.DataType.isUtf8(t) || arrow.DataType.isBinary(t)) return new VarBinaryColumn(t);
  if ((arrow.DataType.isInt(t) && t.bitWidth === 64) ||
      (arrow.DataType.isFloat(t) && t.ArrayType === Float64Array) ||
      arrow.DataType.isDecimal(t)) {
    return new FixedColumn(t);
  }
  if (arrow.DataType.isBool(t)) return new BoolColumn(t);
  if (arrow.DataType.isList(t)) return new ListColumn(t);
  if (arrow.DataType.isStruct(t)) return new StructColumn(t);
  throw new PipelineError(`unsupported column type ${t}`);
}

function attributeName(field) {
  return field.metadata.get("dynamodb.name") ?? field.name;
}

/** Adds a number's text to a number column of type `t`. */
function numberAdder(t) {
  if (arrow.DataType.isInt(t)) return (column, text) => column.add(toBigInt(text));
  if (arrow.DataType.isUtf8(t)) return (column, text) => column.addString(canonicalNumber(text));
  if (arrow.DataType.isFloat(t)) return (column, text) => column.add(Number(text));
  if (arrow.DataType.isDecimal(t)) {
    return (column, text) => column.addDecimal(unscaled(text, t.scale));
  }
  throw new PipelineError(`unsupported number column type ${t}`);
}

/** How an attribute goes into the column dynamo-cdc made of it, from the
 * column's type and `dynamodb.type` metadata: `add(column, value, raw)`
 * appends a non-null unmarshalled value (`raw`: as it came over the wire). */
function columnAdder(field) {
  const t = field.type;
  switch (field.metadata.get("dynamodb.type")) {
    case "json":
      return (column, value, raw) => column.addString(JSON.stringify(raw));
    case "N": {
      const add = numberAdder(t);
      return (column, value) => add(column, value.value);
    }
    case "B":
      return (column, value) => column.addBase64(value);
    case "SS":
      return (column, value) => {
        const items = column.items;
        for (const s of [...value].sort(compareCodePoints)) items.addString(s);
        column.endList();
      };
    case "NS": {
      const add = numberAdder(t.children[0].type);
      return (column, value) => {
        const items = column.items;
        for (const text of sortedNumbers(value)) add(items, text);
        column.endList();
      };
    }
    case "BS":
      return (column, value) => {
        const items = column.items;
        for (const b of [...value].map(bytes).sort(Buffer.compare)) items.addBytes(b);
        column.endList();
      };
    case "L": {
      const add = columnAdder(t.children[0]);
      return (column, value, raw) => {
        const items = column.items;
        const rawItems = raw.L;
        for (let i = 0; i < value.length; i++) {
          if (value[i] === null) items.addNull();
          else add(items, value[i], rawItems[i]);
        }
        column.endList();
      };
    }
    case "M": {
      const members = new Map(t.children.map((f, i) => [attributeName(f), [i, columnAdder(f)]]));
      return (column, value, raw) => {
        const row = column.length;
        addImage(members, column.fields, value, raw.M);
        for (const field of column.fields) if (field.length === row) field.addNull();
        column.endStruct();
      };
    }
    default: // S, BOOL
      if (arrow.DataType.isUtf8(t)) return (column, value) => column.addString(value);
      if (arrow.DataType.isBool(t)) return (column, value) => column.add(value);
      throw new PipelineError(`unsupported column type ${t} for ${field.name}`);
  }
}

/** Adds each attribute of an image to its column (`members`: attribute ->
 * [column index, adder]); an attribute without a column is an error. */
function addImage(members, columns, image, raw) {
  for (const attribute in image) {
    const member = members.get(attribute);
    if (member === undefined) {
      throw new PipelineError(`attribute ${attribute} is not in the target schema ` +
        "(pass the newest schema dynamo-cdc wrote)");
    }
    const value = image[attribute];
    if (value === null) columns[member[0]].addNull();
    else member[1](columns[member[0]], value, raw[attribute]);
  }
}

/** The target schema, read from a Parquet file dynamo-cdc wrote. */
function readArrowSchema(file) {
  const ipc = parquet.readSchema(readFileSync(file)).intoIPCStream();
  const schema = arrow.tableFromIPC(ipc).schema;
  if (!schema.metadata.has("dynamodb.table")) {
    throw new PipelineError("the --arrow-schema file has no dynamodb.table metadata");
  }
  const names = schema.fields.map((f) => f.name);
  if (names.slice(-META_COLUMNS.length).join() !== META_COLUMNS.join()) {
    throw new PipelineError("the --arrow-schema file does not end in the __ columns");
  }
  // Keep the table's metadata, not what described that one file.
  const metadata = new Map([...schema.metadata].filter(([k]) => !k.startsWith("dynamo_cdc.")));
  return new arrow.Schema(schema.fields, metadata);
}

/** One Parquet file being written: Arrow batches in, Parquet bytes out to a
 * hidden temp file, committed by fsync and rename. */
class ParquetFile {
  constructor(directory, part, properties) {
    this.directory = directory;
    this.final = path.join(directory, `part-${String(part).padStart(5, "0")}.parquet`);
    this.temp = path.join(directory, `.part-${String(part).padStart(5, "0")}.parquet.inprogress`);
    this.properties = properties;
    this.rows = 0;
    this.bytes = 0;
    this.wake = null; // resolves when the writer wants another batch
    this.failure = null;
  }

  async open() {
    await mkdir(this.directory, { recursive: true });
    this.handle = await open(this.temp, "w");
    this.input = new ReadableStream(
      { start: (c) => { this.controller = c; }, pull: () => this.resume() },
      { highWaterMark: 1 },
    );
    this.pump = this.drain().catch((e) => {
      this.failure = e;
      this.resume();
    });
  }

  resume() {
    const wake = this.wake;
    this.wake = null;
    if (wake) wake();
  }

  /** Copies the Parquet bytes out as the writer finishes row groups. */
  async drain() {
    const output = await parquet.transformParquetStream(this.input, this.properties);
    for await (const chunk of output) {
      await this.handle.write(chunk);
      this.bytes += chunk.length;
    }
  }

  /** Hands a record batch to the writer, waiting while it is behind. */
  async write(batch) {
    const ipc = arrow.tableToIPC(new arrow.Table([batch]), "stream");
    const table = parquet.Table.fromIPCStream(ipc);
    for (const rb of table.recordBatches()) this.controller.enqueue(rb);
    table.free();
    this.rows += batch.numRows;
    while (this.failure === null && this.controller.desiredSize <= 0) {
      await new Promise((resolve) => { this.wake = resolve; });
    }
    if (this.failure !== null) throw this.failure;
  }

  async commit() {
    this.controller.close();
    await this.pump;
    if (this.failure !== null) throw this.failure;
    await this.handle.sync();
    await this.handle.close();
    await rename(this.temp, this.final);
    const dir = await open(this.directory, "r");
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
  }
}

/** Rows of one table and day: built column by column, handed to the writer
 * a batch at a time, committed file by file. */
class PartitionWriter {
  constructor(directory, layout) {
    this.directory = directory;
    this.layout = layout;
    this.columns = layout.schema.fields.map((f) => makeColumn(f.type));
    this.attributes = this.columns.slice(0, -META_COLUMNS.length);
    const meta = this.columns.slice(-META_COLUMNS.length);
    [this.op, this.table, this.shard, this.seq, this.eventId, this.ts, this.deleted, this.ttlDelete] = meta;
    this.pending = 0; // rows built since the last batch
    this.file = null;
    this.part = 0;
    this.files = 0;
  }

  add(c) {
    const [image, raw] = c.rowImage();
    addImage(this.layout.members, this.attributes, image, raw);
    const row = this.pending;
    for (const column of this.attributes) if (column.length === row) column.addNull();
    this.op.addString(c.op);
    this.table.addString(c.table);
    this.shard.addString(c.shard);
    this.seq.addString(c.seq);
    this.eventId.addString(c.eventId);
    if (c.tsMs === null) this.ts.addNull();
    else this.ts.add(BigInt(c.tsMs));
    this.deleted.add(c.op === "d");
    this.ttlDelete.add(c.ttlDelete);
    this.pending += 1;
  }

  /** Whether a batch's worth of rows is built. */
  get full() {
    if (this.pending >= ROW_GROUP_ROWS) return true;
    let size = 0;
    for (const column of this.columns) size += column.byteSize();
    return size >= BATCH_BYTES;
  }

  /** Writes the built rows out, rolling files at their row and byte limits. */
  async flush() {
    if (this.pending === 0) return;
    const data = arrow.makeData({
      type: this.layout.rowType,
      length: this.pending,
      nullCount: 0,
      children: this.columns.map((column) => column.finish()),
    });
    this.pending = 0;
    let batch = new arrow.RecordBatch(this.layout.schema, data);
    while (batch.numRows > 0) {
      if (this.file === null) {
        this.part += 1;
        this.file = new ParquetFile(this.directory, this.part, this.layout.properties);
        await this.file.open();
      }
      const take = Math.min(MAX_ROWS_PER_FILE - this.file.rows, batch.numRows);
      await this.file.write(take === batch.numRows ? batch : batch.slice(0, take));
      batch = batch.slice(take);
      if (this.file.rows >= MAX_ROWS_PER_FILE || this.file.bytes >= MAX_FILE_BYTES) {
        await this.commit();
      }
    }
  }

  async commit() {
    await this.file.commit();
    this.file = null;
    this.files += 1;
  }

  async close() {
    await this.flush();
    if (this.file !== null) await this.commit();
  }
}

/** Writes the rows of one table under `root/<table>/date=YYYY-MM-DD/`. */
class ParquetOutput {
  constructor(root, schemaFile) {
    this.root = root;
    const schema = readArrowSchema(schemaFile);
    const fields = schema.fields.slice(0, -META_COLUMNS.length);
    this.layout = {
      table: schema.metadata.get("dynamodb.table"),
      schema,
      rowType: new arrow.Struct(schema.fields),
      members: new Map(fields.map((f, i) => [attributeName(f), [i, columnAdder(f)]])),
      properties: new parquet.WriterPropertiesBuilder()
        .setCompression(parquet.Compression.ZSTD)
        .setMaxRowGroupSize(ROW_GROUP_ROWS)
        .build(),
    };
    this.partitions = new Map(); // day -> PartitionWriter
    this.rows = 0;
  }

  add(c) {
    if (c.table !== this.layout.table) {
      throw new PipelineError(
        `record of table ${c.table}, but the target schema is ${this.layout.table}`);
    }
    const day = c.tsMs === null ? 0 : Math.floor(c.tsMs / MS_PER_DAY);
    let partition = this.partitions.get(day);
    if (partition === undefined) {
      const date = new Date(day * MS_PER_DAY).toISOString().slice(0, 10);
      const directory = path.join(this.root, this.layout.table, `date=${date}`);
      partition = new PartitionWriter(directory, this.layout);
      this.partitions.set(day, partition);
    }
    partition.add(c);
    this.rows += 1;
  }

  /** Writes out every partition holding a batch's worth of rows. */
  async flushFull() {
    for (const partition of this.partitions.values()) {
      if (partition.full) await partition.flush();
    }
  }

  async close() {
    let files = 0;
    for (const partition of this.partitions.values()) {
      await partition.close();
      files += partition.files;
    }
    return files;
  }
}

// ---------------------------------------------------------------------------
// Kafka (Avro, Confluent wire format)
// ---------------------------------------------------------------------------

/** avsc's long as BigInt (an int64 attribute may exceed 2^53); its writer
 * reads the eight bytes `toBuffer` returns at once, so one buffer serves. */
function longType() {
  const scratch = Buffer.alloc(8);
  return avro.types.LongType.__with({
    fromBuffer: (buf) => buf.readBigInt64LE(),
    toBuffer: (n) => {
      scratch.writeBigInt64LE(BigInt(n));
      return scratch;
    },
    fromJSON: (x) => BigInt(x),
    toJSON: (n) => Number(n),
    isValid: (n) => typeof n === "bigint" || Number.isSafeInteger(n),
    compare: (a, b) => (a < b ? -1 : a > b ? 1 : 0),
  });
}

let LONG = null;

function avroType(schema) {
  LONG ??= longType();
  return avro.Type.forSchema(schema, { registry: { long: LONG }, wrapUnions: "auto" });
}

/** Two's complement, big-endian, as few bytes as hold it: Avro's decimal. */
function decimalBytes(n) {
  const width = 64; // bytes: wide enough for any 38-digit decimal
  const buf = Buffer.from(BigInt.asUintN(8 * width, n).toString(16).padStart(2 * width, "0"), "hex");
  const fill = n < 0n ? 0xff : 0x00;
  let start = 0;
  while (start < width - 1 && buf[start] === fill && (buf[start + 1] & 0x80) === (fill & 0x80)) start++;
  return buf.subarray(start);
}

/** Number text -> the datum of an Avro number type, or null for another type. */
function avroNumber(t) {
  if (t === "string") return canonicalNumber;
  if (t === "long") return toBigInt;
  if (t === "double") return Number;
  if (t?.type === "bytes" && t.logicalType === "decimal") {
    return (text) => decimalBytes(unscaled(text, t.scale ?? 0));
  }
  return null;
}

/** The conversion into an Avro type of dynamo-cdc's generated schemas:
 * (unmarshalled value, raw value) -> datum. */
function avroValue(t, dynamodbType, named) {
  // ["null", X], or a widened column's ["null", former..., X]: values are
  // written as X, the last branch.
  if (Array.isArray(t)) t = t.filter((b) => b !== "null").at(-1);
  if (typeof t === "string" && named.has(t)) t = named.get(t);
  if (dynamodbType === "json") return dumps;
  if (t === "string" && dynamodbType !== "number") return same;
  const number = avroNumber(t);
  if (number !== null) return (value) => number(value.value);
  switch (t) {
    case "bytes":
      return bytes;
    case "boolean":
    case "null":
      return same;
  }
  if (t?.type === "array") {
    const items = t.items;
    if (Array.isArray(items)) { // nullable items: a declared list (L)
      const item = avroValue(items, null, named);
      return (value, raw) => value.map((v, i) => (v === null ? null : item(v, raw.L[i])));
    }
    if (items === "bytes") return (value) => [...value].map(bytes).sort(Buffer.compare);
    // A number set (strings: exact decimal text), or a string set.
    const element = avroNumber(items);
    return (value, raw) =>
      "NS" in raw ? sortedNumbers(value).map(element) : [...value].sort(compareCodePoints);
  }
  if (t?.type === "record") {
    named.set(t.name, t);
    const encoder = new ImageEncoder(t, [], named);
    return (value, raw) => encoder.datum(value, raw.M);
  }
  throw new PipelineError(`unsupported Avro type ${JSON.stringify(t)}`);
}

/** An image as the datum of an Avro record of attribute fields (an absent
 * attribute is left out: every such field defaults to null). */
class ImageEncoder {
  constructor(record, skip = [], named = new Map()) {
    this.fields = new Map(
      record.fields
        .filter((f) => !skip.includes(f.name))
        .map((f) => [f.dynamodb_name ?? f.name, [f.name, avroValue(f.type, f.dynamodb_type, named)]]),
    );
  }

  datum(image, raw) {
    return flatten(this.fields, image, raw);
  }
}

/** Registers a schema under `subject` and returns its id. */
async function register(registry, subject, schemaText) {
  const response = await fetch(`${registry.replace(/\/+$/, "")}/subjects/${subject}/versions`, {
    method: "POST",
    headers: { "Content-Type": "application/vnd.schemaregistry.v1+json" },
    body: JSON.stringify({ schema: schemaText }),
  });
  if (!response.ok) {
    throw new PipelineError(`registering ${subject}: HTTP ${response.status} ${await response.text()}`);
  }
  return (await response.json()).id;
}

function framing(schemaId) {
  const prefix = Buffer.alloc(5); // magic byte 0, then the schema id
  prefix.writeUInt32BE(schemaId, 1);
  return prefix;
}

/** A page's keys and values in the Confluent wire format, encoded one after
 * another into one buffer; each message is a view of it. When the buffer is
 * full a new one is begun (the messages before still view the old one); once
 * the page's sends are done, the buffer is written over again. */
class WireEncoder {
  constructor() {
    this.buf = Buffer.allocUnsafe(1 << 20);
    this.pos = 0;
  }

  encode(prefix, type, datum) {
    for (;;) {
      const start = this.pos;
      const body = start + prefix.length;
      let size = 2 * prefix.length;
      if (body <= this.buf.length) {
        const end = type.encode(datum, this.buf, body);
        if (end >= 0) {
          prefix.copy(this.buf, start);
          this.pos = end;
          return this.buf.subarray(start, end);
        }
        size = this.buf.length - end - start; // `encode` gave minus the bytes missing
      }
      this.buf = Buffer.allocUnsafe(Math.max(this.buf.length, 2 * size));
      this.pos = 0;
    }
  }

  /** After the page's sends: nothing views the buffer any more. */
  reuse() {
    this.pos = 0;
  }
}

/** Encodes each change as dynamo-cdc does and produces it, a page at a time. */
class KafkaOutput {
  constructor(args) {
    this.topicTemplate = args["topic-template"];
    this.registry = args.registry;
    this.tombstones = !args["no-tombstones"];
    this.valueText = readFileSync(args["value-schema"], "utf8").trim();
    this.keyText = readFileSync(args["key-schema"], "utf8").trim();
    const valueJson = JSON.parse(this.valueText);
    const keyJson = JSON.parse(this.keyText);
    this.valueType = avroType(valueJson);
    this.keyType = avroType(keyJson);
    const fields = new Map(valueJson.fields.map((f) => [f.name, f]));
    this.envelope = fields.has("before") && fields.has("source");
    this.image = this.envelope
      ? new ImageEncoder(fields.get("before").type.find((b) => b !== "null"))
      : new ImageEncoder(valueJson, META_COLUMNS);
    this.key = new ImageEncoder(keyJson);
    this.wire = new WireEncoder();

    const { Kafka, CompressionCodecs, CompressionTypes, logLevel } = kafkajs;
    CompressionCodecs[CompressionTypes.ZSTD] = () => ({
      compress: (encoder) => zstd.compress(encoder.buffer, ZSTD_LEVEL),
      decompress: (buffer) => zstd.decompress(buffer),
    });
    this.compression = CompressionTypes.ZSTD;
    const kafka = new Kafka({
      clientId: "dynamo-cdc-node-peer",
      brokers: args.brokers.split(","),
      logLevel: logLevel.ERROR,
    });
    this.producer = kafka.producer({ maxInFlightRequests: 1, allowAutoTopicCreation: false });
    this.targets = new Map(); // table -> its topic, wire prefixes and pending messages
    this.headerBytes = new Map(); // table or shard name -> its bytes, for the headers
    this.delivered = 0;
    this.tombstonesSent = 0;
  }

  async connect() {
    await this.producer.connect();
  }

  /** A table's topic and the wire-format prefixes of its keys and values,
   * both schemas registered the first time. */
  async target(table) {
    let target = this.targets.get(table);
    if (target === undefined) {
      const topic = this.topicTemplate.replaceAll("{table}", table);
      const keyId = await register(this.registry, `${topic}-key`, this.keyText);
      const valueId = await register(this.registry, `${topic}-value`, this.valueText);
      target = { topic, keyPrefix: framing(keyId), valuePrefix: framing(valueId), messages: [] };
      this.targets.set(table, target);
    }
    return target;
  }

  /** A header value that is the same for many messages, encoded once. */
  header(text) {
    let bytes = this.headerBytes.get(text);
    if (bytes === undefined) this.headerBytes.set(text, (bytes = Buffer.from(text)));
    return bytes;
  }

  value(c) {
    if (!this.envelope) {
      const [image, raw] = c.rowImage();
      const datum = this.image.datum(image, raw);
      datum.__op = c.op;
      datum.__table = c.table;
      datum.__shard_id = c.shard;
      datum.__sequence_number = c.seq;
      datum.__event_id = c.eventId;
      datum.__source_ts_ms = c.tsMs;
      datum.__deleted = c.op === "d";
      datum.__ttl_delete = c.ttlDelete;
      return datum;
    }
    // Deletes: the old image (or the keys) before, nothing after. Others:
    // the old image if any before, the new image (or the keys) after.
    let before = null;
    let after = null;
    if (c.op === "d") {
      before = c.oldRaw !== null ? this.image.datum(c.old, c.oldRaw) : this.image.datum(c.keys, c.keysRaw);
    } else {
      if (c.oldRaw !== null) before = this.image.datum(c.old, c.oldRaw);
      after = c.newRaw !== null ? this.image.datum(c.new, c.newRaw) : this.image.datum(c.keys, c.keysRaw);
    }
    return {
      before,
      after,
      op: c.op,
      ts_ms: c.tsMs,
      source: {
        connector: "dynamodb",
        table: c.table,
        stream_arn: c.streamArn,
        shard_id: c.shard,
        sequence_number: c.seq,
        event_id: c.eventId,
        approx_creation_ms: c.tsMs,
        ttl_delete: c.ttlDelete,
      },
    };
  }

  /** Produces a page's changes (and tombstones), one send per topic, and
   * waits for the acks. */
  async addPage(changes) {
    const wire = this.wire;
    const pending = [];
    for (const c of changes) {
      const target = this.targets.get(c.table) ?? await this.target(c.table);
      const key = wire.encode(target.keyPrefix, this.keyType, this.key.datum(c.keys, c.keysRaw));
      const value = wire.encode(target.valuePrefix, this.valueType, this.value(c));
      const headers = {
        "dynamodb.table": this.header(c.table),
        "dynamodb.shard_id": this.header(c.shard),
        "dynamodb.sequence_number": c.seq,
        "dynamodb.event_id": c.eventId,
      };
      if (target.messages.length === 0) pending.push(target);
      target.messages.push({ key, value, headers });
      if (this.tombstones && c.op === "d") {
        // A compacted topic forgets the item after this null value.
        target.messages.push({ key, value: null, headers });
        this.tombstonesSent += 1;
      }
    }
    for (const target of pending) {
      const messages = target.messages;
      target.messages = [];
      await this.producer.send({ topic: target.topic, messages, acks: -1, compression: this.compression });
      this.delivered += messages.length;
    }
    wire.reuse();
  }

  async close() {
    await this.producer.disconnect();
  }
}

// ---------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------

function parseCommandLine(argv) {
  const { values } = parseArgs({
    args: argv,
    options: {
      input: { type: "string" },
      mode: { type: "string" },
      parquet: { type: "string" },
      "arrow-schema": { type: "string" },
      brokers: { type: "string" },
      "topic-template": { type: "string", default: "peer.{table}" },
      registry: { type: "string" },
      "value-schema": { type: "string" },
      "key-schema": { type: "string" },
      "no-tombstones": { type: "boolean", default: false },
    },
  });
  const fail = (why) => {
    throw new PipelineError(`${why} (see the comment at the top of peer.mjs)`);
  };
  if (!values.input) fail("--input is required");
  if (!["parquet", "kafka", "both"].includes(values.mode)) fail("--mode must be parquet, kafka or both");
  if (values.mode !== "kafka" && !(values.parquet && values["arrow-schema"])) {
    fail("--mode parquet needs --parquet and --arrow-schema");
  }
  if (values.mode !== "parquet" &&
      !(values.brokers && values.registry && values["value-schema"] && values["key-schema"])) {
    fail("--mode kafka needs --brokers, --registry, --value-schema and --key-schema");
  }
  return values;
}

/** Loads the libraries of the outputs asked for. apache-arrow comes as the
 * single-file build it ships (what a bundled function loads) rather than its
 * hundreds of modules, which take longer to load than a small batch takes
 * to write. */
async function load(mode) {
  if (mode !== "kafka") {
    arrow = createRequire(import.meta.url)("apache-arrow/Arrow.esnext.min");
    parquet = await import("parquet-wasm");
  }
  if (mode !== "parquet") {
    let avsc;
    [avsc, kafkajs, zstd] = await Promise.all([
      import("avsc"), import("kafkajs"), import("@mongodb-js/zstd")]);
    avro = avsc.default;
    kafkajs = kafkajs.default;
    zstd = zstd.default;
  }
}

async function run(args) {
  const started = performance.now();
  await load(args.mode);
  const out = args.mode !== "kafka" ? new ParquetOutput(args.parquet, args["arrow-schema"]) : null;
  const kafka = args.mode !== "parquet" ? new KafkaOutput(args) : null;
  if (kafka !== null) await kafka.connect();
  const stats = { duplicates: 0 };
  let records = 0;
  try {
    for await (const changes of pages(captureFiles(args.input), stats)) {
      if (out !== null) {
        for (const c of changes) out.add(c);
        await out.flushFull();
      }
      if (kafka !== null) await kafka.addPage(changes);
      records += changes.length;
    }
    const summary = { records };
    if (out !== null) {
      summary.parquet_files = await out.close();
      summary.parquet_rows = out.rows;
    }
    if (kafka !== null) {
      summary.kafka_messages = kafka.delivered;
      summary.kafka_tombstones = kafka.tombstonesSent;
      summary.kafka_failed = 0; // a failed send throws
    }
    summary.duplicates_skipped = stats.duplicates;
    summary.elapsed_s = Math.round(performance.now() - started) / 1000;
    console.log(JSON.stringify(summary));
  } finally {
    if (kafka !== null) await kafka.close();
  }
}

try {
  await run(parseCommandLine(process.argv.slice(2)));
} catch (e) {
  console.error(`peer: error: ${e.name}: ${e.message}`);
  // Exit now: a half-written Parquet stream may still hold the event loop.
  process.exit(1);
}
