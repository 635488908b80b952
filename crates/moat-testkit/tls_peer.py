"""A TLS client (Python's ssl, i.e. OpenSSL) that presents a client certificate and can
resume its TLS session, for the hub's admission tests (driven by moat-testkit's peer.rs).

    tls_peer.py HOST PORT CA CERT KEY mqtt CLIENT_ID
    tls_peer.py HOST PORT CA CERT KEY http METHOD PATH CONTENT_TYPE BODY_FILE

Reads commands on stdin, one per line, and answers each with one JSON line:
  full    a new connection with a full handshake (its TLS session is kept for `resume`)
  resume  a new connection resuming the last TLS session
The answer: {"resumed": bool, "alert": TLS error text or null, "connack": the MQTT 3.1.1
CONNACK return code or null, "status": HTTP status or null, "body": HTTP body or null}.
A TLS 1.3 client learns that the server refused its certificate on its first read, so every
exchange waits for the server's answer."""
import json
import socket
import ssl
import sys

host, port, ca, cert, key, proto = sys.argv[1:7]
args = sys.argv[7:]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.load_verify_locations(ca)
ctx.load_cert_chain(cert, key)


def mqtt_exchange(tls):
    cid = args[0].encode()
    rem = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(cid).to_bytes(2, "big") + cid
    tls.sendall(bytes([0x10, len(rem)]) + rem)
    data = b""
    while len(data) < 4:
        chunk = tls.recv(4 - len(data))
        if not chunk:
            break
        data += chunk
    rc = data[3] if len(data) == 4 and data[0] == 0x20 else None
    return {"connack": rc}


def dechunk(body):
    out = b""
    while body:
        size, _, rest = body.partition(b"\r\n")
        n = int(size.split(b";")[0] or b"0", 16)
        if n == 0:
            break
        out += rest[:n]
        body = rest[n + 2:]
    return out


def http_exchange(tls):
    method, path, ctype, body_file = args[:4]
    body = open(body_file, "rb").read() if body_file != "-" else b""
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    tls.sendall(head.encode() + body)
    data = b""
    while True:
        chunk = tls.recv(65536)
        if not chunk:
            break
        data += chunk
    header, _, payload = data.partition(b"\r\n\r\n")
    lines = header.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1]) if lines and lines[0].startswith("HTTP/") else None
    if any(l.lower() == "transfer-encoding: chunked" for l in lines[1:]):
        payload = dechunk(payload)
    return {"status": status, "body": payload.decode("utf-8", "replace")}


session = None


def attempt(resume):
    global session
    out = {"resumed": False, "alert": None, "connack": None, "status": None, "body": None}
    tls = None
    try:
        raw = socket.create_connection((host, int(port)), timeout=10)
        tls = ctx.wrap_socket(raw, server_hostname="localhost", session=session if resume else None)
        out["resumed"] = tls.session_reused
        out.update(mqtt_exchange(tls) if proto == "mqtt" else http_exchange(tls))
    except ssl.SSLError as e:
        out["alert"] = str(e)
    except (ConnectionError, socket.timeout) as e:
        out["alert"] = f"connection: {e}"
    finally:
        if tls is not None:
            # The TLS 1.3 ticket arrives after the handshake, with the first data read.
            if tls.session is not None and not resume:
                session = tls.session
            tls.close()
    return out


for line in sys.stdin:
    cmd = line.strip()
    if cmd in ("full", "resume"):
        print(json.dumps(attempt(cmd == "resume")), flush=True)
