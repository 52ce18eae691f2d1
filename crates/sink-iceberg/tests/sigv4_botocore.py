"""Checks SigV4 signatures with botocore, as an AWS endpoint would.

Reads JSON on stdin: the credentials, region and service, and the requests
an endpoint received (method, full URL, headers in order, body in hex).
Each request is signed again with botocore's SigV4Auth, at the time its
X-Amz-Date says, over the headers its Authorization names (an endpoint
checks those and ignores the rest), with the query canonicalized as the
Python Iceberg client does. The Authorization headers must be equal.
Prints one line per request; exits 1 on any mismatch.

Used by the ignored tests in crates/sink-iceberg/src/sigv4/end_to_end.rs.
"""

import datetime
import json
import sys
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import botocore.auth
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials


def header(request, name):
    values = [v for n, v in request["headers"] if n.lower() == name]
    if len(values) != 1:
        raise ValueError(f"{len(values)} {name} headers in {request['method']} {request['url']}")
    return values[0]


def resign(spec, request):
    """botocore's Authorization header for the request, and its canonical request."""
    authorization = header(request, "authorization")
    signed = authorization.split("SignedHeaders=", 1)[1].split(",", 1)[0].split(";")
    when = datetime.datetime.strptime(header(request, "x-amz-date"), "%Y%m%dT%H%M%SZ")
    # botocore reads the clock through this name; the endpoint's check uses
    # the request's own time.
    botocore.auth.get_current_datetime = lambda *args, **kwargs: when

    parts = urlsplit(request["url"])
    aws = AWSRequest(
        method=request["method"],
        url=urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")),
        params=parse_qsl(parts.query, keep_blank_values=True),
        data=bytes.fromhex(request["body_hex"]),
    )
    for name, value in request["headers"]:
        if name.lower() in signed and name.lower() != "authorization":
            aws.headers[name] = value
    credentials = Credentials(spec["access_key"], spec["secret_key"], spec.get("token"))
    auth = SigV4Auth(credentials, spec["service"], spec["region"])
    auth.add_auth(aws)
    authorization = aws.headers["Authorization"]
    del aws.headers["Authorization"]
    return authorization, auth.canonical_request(aws), signed


def main():
    spec = json.load(sys.stdin)
    failed = 0
    for request in spec["requests"]:
        expected, canonical, signed = resign(spec, request)
        got = header(request, "authorization")
        missing = {"host", "x-amz-date"} - set(signed)
        if spec.get("token"):
            missing |= {"x-amz-security-token"} - set(signed)
        what = f"{request['method']} {request['url']}"
        if got == expected and not missing:
            print(f"ok {what} ({';'.join(signed)})")
        else:
            failed += 1
            print(f"MISMATCH {what}\n  got      {got}\n  botocore {expected}")
            if missing:
                print(f"  not signed: {sorted(missing)}")
            print("  canonical request (botocore):\n    " + canonical.replace("\n", "\n    "))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
