"""A workload of the SPIFFE tests: fetches its SVIDs from the Workload API with the
official SPIFFE client for Python (py-spiffe), the socket taken from
SPIFFE_ENDPOINT_SOCKET as `zt-agent run` sets it. Prints one JSON object.

  x509                    the X.509-SVID (chain, key) and the X.509 bundles
  jwt AUDIENCE            a JWT-SVID for AUDIENCE, the JWT bundles, and the API's
                          own validation of the token
  tls HOST PORT           mutual TLS to HOST:PORT with the X.509-SVID; prints the
                          server's answer
  stream SECONDS          watch the X.509 stream for SECONDS; every SVID received
Exit 3 with {"error": ...} when the API refuses.
"""
import json
import os
import socket
import ssl
import sys
import tempfile
import threading
import time

from cryptography.hazmat.primitives import serialization
from spiffe import WorkloadApiClient


def pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def key_pem(key):
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def x509(client):
    ctx = client.fetch_x509_context()
    svid = ctx.default_svid
    bundles = {
        str(b.trust_domain): [pem(c) for c in b.x509_authorities]
        for b in ctx.x509_bundle_set.bundles
    }
    return {
        "spiffe_id": str(svid.spiffe_id),
        "chain": [pem(c) for c in svid.cert_chain],
        "key": key_pem(svid.private_key),
        "not_before": svid.leaf.not_valid_before_utc.timestamp(),
        "not_after": svid.leaf.not_valid_after_utc.timestamp(),
        "serial": format(svid.leaf.serial_number, "x"),
        "subject": svid.leaf.subject.rfc4514_string(),
        "bundles": bundles,
    }


def jwt(client, audience):
    svid = client.fetch_jwt_svid(audience={audience})
    bundles = client.fetch_jwt_bundles()
    jwks = {}
    for b in bundles.bundles:
        jwks[str(b.trust_domain)] = sorted(b.jwt_authorities.keys())
    validated = client.validate_jwt_svid(svid.token, audience)
    return {
        "spiffe_id": str(svid.spiffe_id),
        "token": svid.token,
        "audience": sorted(svid.audience),
        "expiry": svid.expiry,
        "bundle_kids": jwks,
        "validated_by_api": str(validated.spiffe_id),
    }


def tls(client, host, port):
    svid = client.fetch_x509_svid()
    d = tempfile.mkdtemp()
    cert_path, key_path = os.path.join(d, "svid.pem"), os.path.join(d, "key.pem")
    with open(cert_path, "w") as f:
        f.write("".join(pem(c) for c in svid.cert_chain))
    with open(key_path, "w") as f:
        f.write(key_pem(svid.private_key))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # The server's own certificate is not what this test checks.
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.load_cert_chain(cert_path, key_path)
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with ctx.wrap_socket(raw) as s:
            answer = s.recv(100).decode().strip()
    return {"spiffe_id": str(svid.spiffe_id), "answer": answer}


def stream(client, seconds):
    seen = []
    done = threading.Event()

    def on_success(ctx):
        leaf = ctx.default_svid.leaf
        seen.append(
            {
                "serial": format(leaf.serial_number, "x"),
                "not_after": leaf.not_valid_after_utc.timestamp(),
                "at": time.time(),
            }
        )

    def on_error(e):
        seen.append({"error": str(e), "at": time.time()})
        done.set()

    handler = client.stream_x509_contexts(
        on_success=on_success, on_error=on_error, retry_connect=False
    )
    done.wait(float(seconds))
    handler.cancel()
    return {"received": seen}


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    with WorkloadApiClient() as client:
        try:
            if cmd == "x509":
                out = x509(client)
            elif cmd == "jwt":
                out = jwt(client, args[0])
            elif cmd == "tls":
                out = tls(client, args[0], args[1])
            elif cmd == "stream":
                out = stream(client, args[0])
            else:
                sys.exit(f"unknown command {cmd}")
        except Exception as e:  # the API's refusal, as the client reports it
            print(json.dumps({"error": str(e)}))
            sys.stdout.flush()
            os._exit(3)
    print(json.dumps(out))
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
