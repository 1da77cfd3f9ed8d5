"""The other side of the SPIFFE tests, run by the test itself (unenrolled, as root).

  server BUNDLE ALLOWED_ID PORT_FILE   a mutual-TLS server on 127.0.0.1 that trusts
                                       the X.509 bundle in file BUNDLE and lets in
                                       only ALLOWED_ID; one JSON line per client
  verify TOKEN JWKS AUDIENCE           check a JWT-SVID with PyJWT against a JWK set
  ca DIR                               an operator's root and intermediate CA:
                                       DIR/chain.pem (intermediate, root) and
                                       DIR/key.pem (the intermediate's, 0600)
  forged SPIFFE_ID PORT                mutual TLS to 127.0.0.1:PORT with a
                                       self-signed certificate naming SPIFFE_ID
  relay SOCKET LISTEN [stay]           connect to SOCKET, fork a child that relays
                                       one client of unix socket LISTEN over that
                                       connection; print both pids; the parent
                                       exits at once unless `stay`
"""
import datetime
import json
import os
import select
import socket
import ssl
import sys
import tempfile
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def self_signed(san_uri=None, cn="zt-agent test"):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
    )
    if san_uri:
        b = b.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(san_uri)]),
            critical=False,
        )
    cert = b.sign(key, hashes.SHA256())
    d = tempfile.mkdtemp()
    cp, kp = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    with open(cp, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(kp, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return cp, kp


def server(bundle, allowed, port_file):
    cp, kp = self_signed(cn="localhost")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cp, kp)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile=bundle)
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(16)
    with open(port_file + ".tmp", "w") as f:
        f.write(str(ls.getsockname()[1]))
    os.rename(port_file + ".tmp", port_file)
    while True:
        raw, _ = ls.accept()
        raw.settimeout(10)
        try:
            s = ctx.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError) as e:
            print(json.dumps({"handshake": "failed", "error": str(e)}), flush=True)
            raw.close()
            continue
        uris = [v for k, v in s.getpeercert().get("subjectAltName", ()) if k == "URI"]
        ok = uris == [allowed]
        s.sendall(b"welcome\n" if ok else b"forbidden\n")
        print(json.dumps({"handshake": "ok", "peer": uris, "let_in": ok}), flush=True)
        s.close()


def verify(token_file, jwks_file, audience):
    import jwt

    token = open(token_file).read().strip()
    jwks = jwt.PyJWKSet.from_json(open(jwks_file).read())
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in jwks.keys if k.key_id == kid)
    claims = jwt.decode(
        token,
        key=key.key,
        algorithms=["ES256"],
        audience=audience,
        options={"require": ["exp", "sub", "aud"]},
    )
    print(json.dumps(claims))


def ca(d):
    now = datetime.datetime.now(datetime.timezone.utc)

    def make(name, issuer_name, issuer_key, key):
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .sign(issuer_key, hashes.SHA256())
        )

    root_key = ec.generate_private_key(ec.SECP256R1())
    root = make("test root", "test root", root_key, root_key)
    inter_key = ec.generate_private_key(ec.SECP256R1())
    inter = make("test intermediate", "test root", root_key, inter_key)
    pem = lambda c: c.public_bytes(serialization.Encoding.PEM).decode()
    with open(os.path.join(d, "chain.pem"), "w") as f:
        f.write(pem(inter) + pem(root))
    kp = os.path.join(d, "key.pem")
    fd = os.open(kp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            inter_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    print(json.dumps({"root": pem(root), "intermediate": pem(inter)}))


def forged(spiffe_id, port):
    cp, kp = self_signed(spiffe_id)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.load_cert_chain(cp, kp)
    try:
        with socket.create_connection(("127.0.0.1", int(port)), timeout=10) as raw:
            with ctx.wrap_socket(raw) as s:
                answer = s.recv(100).decode().strip()
    except (ssl.SSLError, OSError) as e:
        answer = f"refused: {e}"
    print(json.dumps({"answer": answer or "refused: closed"}))


def relay(sock_path, listen_path, stay):
    up = socket.socket(socket.AF_UNIX)
    up.connect(sock_path)
    ls = socket.socket(socket.AF_UNIX)
    ls.bind(listen_path)
    ls.listen(1)
    child = os.fork()
    if child:
        print(json.dumps({"connected_pid": os.getpid(), "relay_pid": child}), flush=True)
        up.close()
        ls.close()
        if stay:
            time.sleep(120)
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    c, _ = ls.accept()
    peers = {up: c, c: up}
    while True:
        r, _, _ = select.select(list(peers), [], [], 60)
        if not r:
            break
        for s in r:
            data = s.recv(65536)
            if not data:
                os._exit(0)
            peers[s].sendall(data)
    os._exit(0)


def main():
    cmd, a = sys.argv[1], sys.argv[2:]
    if cmd == "server":
        server(a[0], a[1], a[2])
    elif cmd == "verify":
        verify(a[0], a[1], a[2])
    elif cmd == "ca":
        ca(a[0])
    elif cmd == "forged":
        forged(a[0], a[1])
    elif cmd == "relay":
        relay(a[0], a[1], len(a) > 2 and a[2] == "stay")
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
