#!/usr/bin/env python3
"""An Iceberg REST catalog for tests that answers as Amazon S3 Tables does.

The Iceberg sink can reach its catalog over the Iceberg REST protocol, with
every request signed with SigV4, which is how S3 Tables and the Glue Iceberg
endpoint are used. This server stands in for S3 Tables' endpoint so that the
end-to-end checks can run that path without AWS:

- `GET /iceberg/v1/config?warehouse=<table bucket ARN>` answers with the ARN,
  URL-encoded, as the path prefix of every other request; any other
  warehouse is refused;
- a table is created without a location, and the catalog puts it in a
  bucket of its own, `s3://<random id>--table-s3`, made on moto's S3
  first: the sink must write its data files where the catalog says, in a
  bucket it was never configured with. A create request that names a
  location is refused with 400, and namespaces have one level, as there;
- with `verify_signatures`, every request's SigV4 signature is computed
  again with botocore (service `s3tables`, credentials test/test) and a
  request that is unsigned or signed otherwise gets 403.

Behind it is pyiceberg's `SqlCatalog` on a sqlite file, with its files on
moto's S3. Requests are parsed and answers written with pyiceberg's REST
models, and commits go through `SqlCatalog.commit_table`, so a failed
requirement (two writers committing on top of the same snapshot) is
pyiceberg's CommitFailedException, answered with 409.

In a test: `RestCatalog(workdir, moto, warehouse_arn, region)` serves on
`.url` from a thread until `.stop()`; `.catalog` (the SqlCatalog) reads the
tables back; `.requests`, `.verified` and `.rejected` count the requests and
their signature checks, and `.log` lists (method, target, status).
Alone, `python scripts/rest_catalog.py --self-test` drives it with
pyiceberg's own REST client; its last line is
`rest catalog self-test: N passed, M failed` (exit code 1 on any failure).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import secrets
import shutil
import string
import sys
import tempfile
import threading
import traceback
import urllib.error
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import pyarrow as pa
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from pyiceberg.catalog.rest import (
    ConfigResponse, CreateTableRequest, ListNamespaceResponse, ListTableResponseEntry,
    ListTablesResponse, NamespaceResponse, TableResponse,
)
from pyiceberg.catalog.rest import RestCatalog as RestClient
from pyiceberg.catalog.rest.response import ErrorResponse, ErrorResponseMessage
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import (
    BadRequestError, CommitFailedException, NamespaceAlreadyExistsError, NamespaceNotEmptyError,
    NoSuchNamespaceError, NoSuchTableError, TableAlreadyExistsError,
)
from pyiceberg.partitioning import UNPARTITIONED_PARTITION_SPEC
from pyiceberg.table import CommitTableRequest
from pyiceberg.table.update import AddSchemaUpdate
from pyiceberg.table.sorting import UNSORTED_SORT_ORDER

sys.path.insert(0, str(Path(__file__).resolve().parent))
import moto_e2e as me  # noqa: E402  (the moto server of the end-to-end checks)

BASE = "/iceberg"
CREDENTIALS = Credentials("test", "test")
# AWS refuses signatures made more than this far from its clock.
MAX_SKEW = datetime.timedelta(minutes=15)
# What pyiceberg's exceptions are in the REST protocol; first match wins.
ERRORS = {
    NoSuchNamespaceError: (404, "NoSuchNamespaceException"),
    NoSuchTableError: (404, "NoSuchTableException"),
    NamespaceAlreadyExistsError: (409, "AlreadyExistsException"),
    TableAlreadyExistsError: (409, "AlreadyExistsException"),
    NamespaceNotEmptyError: (409, "NamespaceNotEmptyException"),
    CommitFailedException: (409, "CommitFailedException"),
    ValueError: (400, "BadRequestException"),  # bad JSON, pydantic, bad updates
}


class CatalogError(Exception):
    """An answer other than success, with the spec's error type."""

    def __init__(self, status: int, kind: str, message: str):
        super().__init__(message)
        self.status, self.kind = status, kind


def error_response(error: Exception) -> tuple[int, str]:
    """(status, ErrorModel JSON) for an exception."""
    if isinstance(error, CatalogError):
        status, kind, message = error.status, error.kind, str(error)
    else:
        status, kind = next((answer for cls, answer in ERRORS.items() if isinstance(error, cls)),
                            (500, "InternalServerError"))
        message = f"{type(error).__name__}: {error}"
    body = ErrorResponse(error=ErrorResponseMessage(message=message, type=kind, code=status))
    return status, body.model_dump_json()


def table_bucket_name() -> str:
    """A bucket name shaped as S3 Tables makes them: 63 characters, ending `--table-s3`."""
    alphabet = string.ascii_lowercase + string.digits
    return f"{str(uuid.uuid4())[:18]}-{''.join(secrets.choice(alphabet) for _ in range(34))}--table-s3"


def signed_headers(authorization: str) -> list[str]:
    """The header names an Authorization header's SignedHeaders lists."""
    return authorization.split("SignedHeaders=", 1)[-1].split(",", 1)[0].split(";")


def expected_authorization(method: str, target: str, headers, body: bytes, authorization: str,
                           service: str, region: str) -> tuple[str, str]:
    """botocore's Authorization header for the request, and its canonical request.

    Signed again at the request's X-Amz-Date over the headers its
    SignedHeaders names, as an AWS endpoint checks it; the query is
    canonicalized from its decoded pairs, as the clients sign it.
    """
    signed = signed_headers(authorization)
    parts = urlsplit(target)
    request = AWSRequest(method=method, url=f"http://{headers.get('Host', '')}{parts.path}",
                         params=parse_qsl(parts.query, keep_blank_values=True), data=body)
    for name, value in headers.items():
        if name.lower() in signed and name.lower() != "authorization":
            request.headers[name] = value
    # botocore signs at the time in the context; no clock is read here.
    request.context["timestamp"] = headers.get("X-Amz-Date", "")
    auth = SigV4Auth(CREDENTIALS, service, region)
    canonical = auth.canonical_request(request)
    signature = auth.signature(auth.string_to_sign(request, canonical), request)
    header = (f"AWS4-HMAC-SHA256 Credential={auth.scope(request)}, "
              f"SignedHeaders={auth.signed_headers(auth.headers_to_sign(request))}, Signature={signature}")
    return header, canonical


def check_signature(method: str, target: str, headers, body: bytes, service: str, region: str) -> None:
    """Raises a 403 CatalogError naming what is wrong with the request's signature."""
    authorization = headers.get("Authorization")
    if not authorization:
        raise CatalogError(403, "MissingAuthenticationTokenException",
                           "the request is not signed: it has no Authorization header")
    missing = {"host", "x-amz-date"} - set(signed_headers(authorization))
    if missing:
        raise CatalogError(403, "InvalidSignatureException", f"not signed: {sorted(missing)}")
    try:
        when = datetime.datetime.strptime(headers["X-Amz-Date"] + "+0000", "%Y%m%dT%H%M%SZ%z")
    except (TypeError, ValueError):
        raise CatalogError(403, "InvalidSignatureException", "no valid X-Amz-Date header") from None
    if abs(datetime.datetime.now(datetime.timezone.utc) - when) > MAX_SKEW:
        raise CatalogError(403, "InvalidSignatureException", f"signature expired: X-Amz-Date {when}")
    # A signed hash stands for the body in the signature: it must be the body's.
    claimed = headers.get("X-Amz-Content-SHA256")
    if claimed is not None and claimed != hashlib.sha256(body).hexdigest():
        raise CatalogError(403, "InvalidSignatureException", "x-amz-content-sha256 is not the body's SHA-256")
    expected, canonical = expected_authorization(method, target, headers, body, authorization,
                                                 service, region)
    if authorization != expected:
        raise CatalogError(403, "InvalidSignatureException",
                           f"signature mismatch: got {authorization!r}, botocore computes {expected!r}; "
                           f"canonical request:\n{canonical}")


class Handler(BaseHTTPRequestHandler):
    """Hands every request to the RestCatalog that owns the server."""

    protocol_version = "HTTP/1.1"  # keep-alive, as the clients expect

    def answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, payload = self.server.owner.handle(self.command, self.path, self.headers, body)
        self.send_response(status)
        data = payload.encode() if payload is not None and self.command != "HEAD" else b""
        if status != 204:
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_HEAD = do_POST = do_DELETE = do_PUT = do_PATCH = answer

    def log_message(self, format, *args) -> None:  # noqa: A002 - the base class's name
        pass  # `.log` holds every request


class RestCatalog:
    """The catalog server on a free loopback port, served from a thread."""

    def __init__(self, workdir: Path, moto, warehouse_arn: str, region: str,
                 service: str = "s3tables", verify_signatures: bool = True):
        self.warehouse_arn, self.region, self.service = warehouse_arn, region, service
        self.verify_signatures = verify_signatures
        self.s3 = moto.client("s3")
        self.catalog = SqlCatalog(
            warehouse_arn.rsplit("/", 1)[-1], uri=f"sqlite:///{Path(workdir) / 'rest-catalog.db'}",
            **{"s3.endpoint": moto.url, "s3.access-key-id": "test", "s3.secret-access-key": "test",
               "s3.region": region},
        )
        # One request at a time on the catalog: commits are checked and
        # applied in order, and sqlite sees no concurrent writers.
        self.lock = threading.Lock()
        self.requests = self.verified = self.rejected = 0
        self.log: list[tuple[str, str, int]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.owner = self
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{BASE}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.catalog.close()

    def handle(self, method: str, target: str, headers, body: bytes) -> tuple[int, str | None]:
        """(status, JSON or None) for one request; counts it and its signature check."""
        signature = None
        try:
            if self.verify_signatures:
                signature = False
                check_signature(method, target, headers, body, self.service, self.region)
                signature = True
            with self.lock:
                status, payload = self.route(method, target, body)
        except Exception as error:  # noqa: BLE001 - every failure is an answer
            status, payload = error_response(error)
            if status == 500:
                traceback.print_exc()
        with self.lock:
            self.requests += 1
            self.verified += signature is True
            self.rejected += signature is False
            self.log.append((method, target, status))
        return status, payload

    def route(self, method: str, target: str, body: bytes) -> tuple[int, str | None]:
        parts = urlsplit(target)
        # Split before decoding: the prefix holds an encoded `/`.
        segments = [unquote(s) for s in parts.path.split("/")]
        if segments[:3] != ["", BASE.strip("/"), "v1"] or len(segments) < 4:
            raise CatalogError(404, "NotFoundException", f"no such path: {parts.path}")
        rest = segments[3:]
        if method == "GET" and rest == ["config"]:
            return 200, self.config(dict(parse_qsl(parts.query)))
        if rest[0] != self.warehouse_arn:
            raise CatalogError(404, "NotFoundException", f"no such table bucket: {rest[0]}")
        path = rest[1:]
        if len(path) > 1:  # namespaces/{ns}/...
            path[1] = namespace(path[1].split("\x1f"))
        match method, path:
            case "GET", ["namespaces"]:
                parent = dict(parse_qsl(parts.query)).get("parent")
                found = self.catalog.list_namespaces(namespace(parent.split("\x1f")) if parent else ())
                return 200, ListNamespaceResponse(namespaces=found).model_dump_json()
            case "POST", ["namespaces"]:
                return 200, self.create_namespace(body)
            case "GET", ["namespaces", ns]:
                return 200, self.load_namespace(ns)
            case "HEAD", ["namespaces", ns]:
                if not self.catalog.namespace_exists(ns):
                    raise NoSuchNamespaceError(".".join(ns))
                return 204, None
            case "DELETE", ["namespaces", ns]:
                self.catalog.drop_namespace(ns)
                return 204, None
            case "GET", ["namespaces", ns, "tables"]:
                entries = [ListTableResponseEntry(namespace=t[:-1], name=t[-1])
                           for t in self.catalog.list_tables(ns)]
                return 200, ListTablesResponse(identifiers=entries).model_dump_json()
            case "POST", ["namespaces", ns, "tables"]:
                return 200, self.create_table(ns, body)
            case "GET", ["namespaces", ns, "tables", name]:
                return 200, table_response(self.catalog.load_table(ns + (name,)))
            case "HEAD", ["namespaces", ns, "tables", name]:
                if not self.catalog.table_exists(ns + (name,)):
                    raise NoSuchTableError(".".join(ns + (name,)))
                return 204, None
            case "POST", ["namespaces", ns, "tables", name]:
                return 200, self.commit(ns, name, body)
            case "DELETE", ["namespaces", ns, "tables", name]:
                self.catalog.drop_table(ns + (name,))
                return 204, None
        raise CatalogError(404, "NotFoundException", f"no such route: {method} {parts.path}")

    def config(self, query: dict) -> str:
        warehouse = query.get("warehouse")
        if warehouse is None:
            raise CatalogError(400, "BadRequestException",
                               "the warehouse query parameter (a table bucket ARN) is required")
        if warehouse != self.warehouse_arn:
            raise CatalogError(404, "NotFoundException",
                               f"no such table bucket: {warehouse} (this catalog has {self.warehouse_arn})")
        prefix = quote(self.warehouse_arn, safe="")
        return ConfigResponse(defaults={}, overrides={"prefix": prefix}).model_dump_json()

    def create_namespace(self, body: bytes) -> str:
        # CreateNamespaceRequest has the same fields as its response.
        request = NamespaceResponse.model_validate_json(body)
        ns = namespace(request.namespace)
        self.catalog.create_namespace(ns, request.properties)
        return self.load_namespace(ns)

    def load_namespace(self, ns: tuple) -> str:
        properties = self.catalog.load_namespace_properties(ns)
        return NamespaceResponse(namespace=ns, properties=properties).model_dump_json()

    def create_table(self, ns: tuple, body: bytes) -> str:
        raw = json.loads(body)
        if raw.get("location"):
            raise CatalogError(400, "BadRequestException",
                               "S3 Tables chooses table locations: a create request must not name one")
        if raw.get("stage-create"):
            raise CatalogError(400, "BadRequestException", "staged creates are not supported")
        request = CreateTableRequest.model_validate(with_optional_fields(raw))
        identifier = ns + (request.name,)
        # Refused before a bucket is made for it.
        if not self.catalog.namespace_exists(ns):
            raise NoSuchNamespaceError(".".join(ns))
        if self.catalog.table_exists(identifier):
            raise TableAlreadyExistsError(".".join(identifier))
        bucket = table_bucket_name()
        self.s3.create_bucket(Bucket=bucket)
        table = self.catalog.create_table(
            identifier, request.table_schema, location=f"s3://{bucket}",
            partition_spec=request.partition_spec or UNPARTITIONED_PARTITION_SPEC,
            sort_order=request.write_order or UNSORTED_SORT_ORDER, properties=request.properties,
        )
        return table_response(table)

    def commit(self, ns: tuple, name: str, body: bytes) -> str:
        raw = json.loads(body)
        raw.setdefault("identifier", {"namespace": list(ns), "name": name})  # optional in the spec
        request = CommitTableRequest.model_validate(raw)
        if (tuple(request.identifier.namespace.root), request.identifier.name) != (ns, name):
            raise CatalogError(400, "BadRequestException", "the identifier is not the path's table")
        table = self.catalog.load_table(ns + (name,))
        updates = with_schema_ids(table.metadata.schemas, request.updates)
        return self.catalog.commit_table(table, request.requirements, updates).model_dump_json()


def with_schema_ids(schemas: list, updates: tuple) -> tuple:
    """The updates with each added schema numbered by the catalog, as the
    Java catalogs behind S3 Tables and Glue do: the id a client sends is
    ignored, and a new schema gets the highest id plus one. (iceberg-rust
    sends 0; pyiceberg's own update logic would keep it, and then
    `set-current-schema -1` would pick the first schema.)"""
    highest = max(schema.schema_id for schema in schemas)
    numbered = []
    for update in updates:
        if isinstance(update, AddSchemaUpdate):
            highest += 1
            update = update.model_copy(update={"schema_": update.schema_.model_copy(update={"schema_id": highest})})
        numbered.append(update)
    return tuple(numbered)


def namespace(levels) -> tuple:
    """A namespace from its levels; S3 Tables has only one (the protocol
    joins levels with 0x1F in paths)."""
    if len(levels) != 1 or not levels[0]:
        raise CatalogError(400, "BadRequestException", f"S3 Tables namespaces have one level: {list(levels)}")
    return tuple(levels)


def with_optional_fields(raw: dict) -> dict:
    """A CreateTableRequest with what pyiceberg's model requires and the spec
    leaves optional: `location`, `write-order`, partition field ids (all of
    which iceberg-rust omits). The ids are placeholders: the catalog assigns
    fresh ones to a new table."""
    raw = {"location": None, "partition-spec": None, "write-order": None, **raw}
    for index, field in enumerate((raw["partition-spec"] or {}).get("fields", [])):
        field.setdefault("field-id", 1000 + index)
    return raw


def table_response(table) -> str:
    """A LoadTableResult."""
    return TableResponse(metadata_location=table.metadata_location, metadata=table.metadata).model_dump_json()


# ---------------------------------------------------------------------------
# Self-test: pyiceberg's own REST client against the server
# ---------------------------------------------------------------------------

SELF_TEST_ARN = "arn:aws:s3tables:us-east-1:123456789012:bucket/analytics"
POSITIONS = "dynamo-cdc.positions"
TABLE = ("selftest", "events")
SCHEMA = pa.schema([pa.field("id", pa.int64()), pa.field("name", pa.string())])


class Report:
    """Prints each check as it is made and counts them."""

    def __init__(self):
        self.passed = self.failed = 0

    def check(self, name: str, ok: bool, detail: object = "") -> None:
        print(f"ok   {name}" if ok else f"FAIL {name}: {detail}")
        self.passed += bool(ok)
        self.failed += not ok


def send(url: str, method: str = "GET", body: bytes = b"", secret: str | None = None) -> tuple[int, dict]:
    """(status, JSON) of a request signed with `secret` (None: unsigned)."""
    request = AWSRequest(method=method, url=url, data=body, headers={"Content-Type": "application/json"})
    if secret is not None:
        SigV4Auth(Credentials("test", secret), "s3tables", me.REGION).add_auth(request)
    plain = urllib.request.Request(url, data=body or None, headers=dict(request.headers), method=method)
    try:
        with urllib.request.urlopen(plain, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def raises(kind: type, call) -> str | None:
    """The message of the `kind` exception `call` raises; None if it raises none."""
    try:
        call()
    except kind as error:
        return str(error)
    return None


def rows(ids: list) -> pa.Table:
    return pa.table({"id": ids, "name": [f"n{i}" for i in ids]}, schema=SCHEMA)


def check_config(props: dict, report: Report) -> RestClient:
    client = RestClient("selftest", **props)
    report.check("config: the prefix is the URL-encoded table bucket ARN",
                 client.properties.get("prefix") == quote(SELF_TEST_ARN, safe=""), client.properties)
    other = raises(Exception, lambda: RestClient("x", **dict(props, warehouse=SELF_TEST_ARN + "x")))
    report.check("config: another warehouse is refused", other and "no such table bucket" in other, other)
    client.create_namespace("selftest")
    report.check("namespace: created, exists, listed", client.namespace_exists("selftest")
                 and ("selftest",) in client.list_namespaces(), client.list_namespaces())
    return client


def check_create(server: RestCatalog, client: RestClient, moto: me.Moto, report: Report):
    """Creating tables; returns the one the later checks write to."""
    # No commit retries: pyiceberg would redo a conflicting append on top.
    table = client.create_table(TABLE, SCHEMA, properties={"commit.retry.num-retries": "0"})
    bucket = table.location().removeprefix("s3://")
    report.check("create: the location is a bucket of its own, named like S3 Tables'",
                 bucket.endswith("--table-s3") and len(bucket) <= 63 and "/" not in bucket
                 and moto.client("s3").head_bucket(Bucket=bucket) is not None
                 and table.metadata_location.startswith(f"s3://{bucket}/metadata/"), table.metadata_location)
    placed = raises(BadRequestError, lambda: client.create_table(("selftest", "placed"), SCHEMA, "s3://x"))
    report.check("create: a location in the request is refused with 400",
                 placed and "location" in placed, placed)
    again = raises(TableAlreadyExistsError, lambda: client.create_table(TABLE, SCHEMA))
    report.check("create: an existing table is refused with 409", again is not None)
    # As iceberg-rust sends it: no location, write order or partition field ids.
    body = json.dumps({
        "name": "rust_shaped", "stage-create": False, "properties": {"write.format.default": "parquet"},
        "schema": {"type": "struct", "schema-id": 0, "fields": [
            {"id": 1, "name": "__source_ts_ms", "required": False, "type": "long"}]},
        "partition-spec": {"fields": [{"source-id": 1, "name": "__day", "transform": "truncate[86400000]"}]},
    }).encode()
    url = f"{server.url}/v1/{quote(SELF_TEST_ARN, safe='')}/namespaces/selftest/tables"
    status, answer = send(url, "POST", body, secret="test")
    location = (answer or {}).get("metadata", {}).get("location", "")
    report.check("create: a request shaped like iceberg-rust's gets a --table-s3 location",
                 status == 200 and location.endswith("--table-s3"), (status, answer))
    return table


def check_writes(server: RestCatalog, client: RestClient, table, moto: me.Moto, report: Report) -> None:
    table.append(rows([1, 2]), snapshot_properties={POSITIONS: "one"})
    table.append(rows([3]), snapshot_properties={POSITIONS: "two"})
    bucket = table.location().removeprefix("s3://")
    keys = [o["Key"] for o in moto.client("s3").list_objects_v2(Bucket=bucket).get("Contents", [])]
    report.check("append: data files are written in the table's bucket",
                 sum(k.startswith("data/") and k.endswith(".parquet") for k in keys) == 2, keys)
    loaded = client.load_table(TABLE)
    report.check("read back: every row", sorted(loaded.scan().to_arrow()["id"].to_pylist()) == [1, 2, 3])
    current = loaded.current_snapshot().summary.get(POSITIONS)
    backing = [s.summary.get(POSITIONS) for s in server.catalog.load_table(TABLE).snapshots()]
    report.check(f"summaries: {POSITIONS} survives commits, in the client and the SqlCatalog",
                 current == "two" and backing == ["one", "two"], (current, backing))
    report.check("load: a missing table is NoSuchTableError, and does not exist",
                 raises(NoSuchTableError, lambda: client.load_table("selftest.nope")) is not None
                 and not client.table_exists("selftest.nope"))


def check_conflict(client: RestClient, report: Report) -> None:
    """Two writers on the same snapshot: the second commit fails."""
    first, second = client.load_table(TABLE), client.load_table(TABLE)
    first.append(rows([4]))
    stale = raises(CommitFailedException, lambda: second.append(rows([5])))
    report.check("commit: a stale writer gets CommitFailedException", stale and "main" in stale, stale)
    ids = sorted(client.load_table(TABLE).scan().to_arrow()["id"].to_pylist())
    report.check("commit: only the first writer's rows are in", ids == [1, 2, 3, 4], ids)


def check_signatures(server: RestCatalog, report: Report) -> None:
    config = f"{server.url}/v1/config?warehouse={quote(SELF_TEST_ARN, safe='')}"
    status, answer = send(config)
    report.check("sigv4: an unsigned request gets 403",
                 status == 403 and answer["error"]["type"] == "MissingAuthenticationTokenException", answer)
    status, answer = send(config, secret="wrong")
    report.check("sigv4: a request signed with another secret gets 403",
                 status == 403 and "signature mismatch" in answer["error"]["message"], answer)
    report.check("sigv4: every other request was verified",
                 server.rejected == 2 and server.verified == server.requests - 2 > 10,
                 (server.requests, server.verified, server.rejected))


def run_self_test(server: RestCatalog, moto: me.Moto, report: Report) -> None:
    props = {"uri": server.url, "warehouse": SELF_TEST_ARN, "rest.sigv4-enabled": "true",
             "rest.signing-name": "s3tables", "rest.signing-region": server.region,
             "s3.endpoint": moto.url, "s3.access-key-id": "test", "s3.secret-access-key": "test",
             "s3.region": server.region}
    client = check_config(props, report)
    table = check_create(server, client, moto, report)
    check_writes(server, client, table, moto, report)
    check_conflict(client, report)
    check_signatures(server, report)


def self_test() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="rest-catalog-"))
    os.environ.update({"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                       "AWS_REGION": me.REGION, "AWS_EC2_METADATA_DISABLED": "true"})
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE"):
        os.environ.pop(name, None)
    report = Report()
    moto = me.Moto(workdir)
    try:
        server = RestCatalog(workdir, moto, SELF_TEST_ARN, me.REGION)
        try:
            run_self_test(server, moto, report)
        finally:
            server.stop()
    except Exception:  # noqa: BLE001 - reported as a failure
        report.check("the self-test runs to its end", False, traceback.format_exc())
    finally:
        moto.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"rest catalog self-test: {report.passed} passed, {report.failed} failed")
    return 1 if report.failed else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--self-test", action="store_true", help="run the server against pyiceberg's client")
    args = parser.parse_args(argv)
    if not args.self_test:
        parser.error("the server runs inside a test (RestCatalog); alone, only --self-test")
    return self_test()


if __name__ == "__main__":
    sys.exit(main())
