"""An HTTPS server on a free loopback port for the TLS tests of the
object-store crate: a CA of its own signs the server's certificate (for
127.0.0.1), the CA's PEM is written to the directory given as the only
argument, and the port is printed on stdout once the server listens. Every
GET is answered 200 with `over tls`; given an upstream `http://host:port` as
a second argument, every request is forwarded there instead (HTTPS in front
of a plain HTTP double). Runs until killed."""

import datetime
import http.server
import ipaddress
import os
import ssl
import sys
import urllib.error
import urllib.request

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

out = sys.argv[1]
upstream = sys.argv[2].rstrip("/") if len(sys.argv) > 2 else None
now = datetime.datetime.now(datetime.timezone.utc)
valid = (now - datetime.timedelta(days=1), now + datetime.timedelta(days=1))


def certificate(subject, issuer, key, signer, ca):
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        ).add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    return builder.sign(signer, hashes.SHA256())


ca_key = ec.generate_private_key(ec.SECP256R1())
ca = certificate("dynamo-cdc test CA", "dynamo-cdc test CA", ca_key, ca_key, True)
key = ec.generate_private_key(ec.SECP256R1())
leaf = certificate("127.0.0.1", "dynamo-cdc test CA", key, ca_key, False)

pem = lambda c: c.public_bytes(serialization.Encoding.PEM)
with open(os.path.join(out, "ca.pem"), "wb") as f:
    f.write(pem(ca))
with open(os.path.join(out, "server.pem"), "wb") as f:
    f.write(pem(leaf))
    f.write(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


# Straight to the upstream, whatever proxy the environment names.
direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if upstream:
            return self.forward()
        body = b"over tls"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        self.forward()

    def forward(self):
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        request = urllib.request.Request(
            upstream + self.path, data=data, headers=headers, method=self.command
        )
        try:
            with direct.open(request) as answer:
                status, body, kind = answer.status, answer.read(), answer.headers.get("Content-Type")
        except urllib.error.HTTPError as e:
            status, body, kind = e.code, e.read(), e.headers.get("Content-Type")
        self.send_response(status)
        if kind:
            self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(os.path.join(out, "server.pem"))
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
