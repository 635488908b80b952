"""TLS session resumption against the MQTT hub (driven by mqtt.rs).

Connects with a client certificate over TLS, sends an MQTT 3.1.1 CONNECT, keeps the TLS
session, prints "ready", waits for a line on stdin (the test revokes the device meanwhile),
then reconnects *resuming that TLS session* and prints one JSON line: whether the session was
resumed and the CONNACK return code (or null when the hub closed the connection)."""
import json
import socket
import ssl
import sys

host, port, ca, cert, key, cid = sys.argv[1:7]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.load_verify_locations(ca)
ctx.load_cert_chain(cert, key)


def connect(session=None):
    raw = socket.create_connection((host, int(port)), timeout=5)
    tls = ctx.wrap_socket(raw, server_hostname="localhost", session=session)
    cidb = cid.encode()
    rem = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(cidb).to_bytes(2, "big") + cidb
    tls.sendall(bytes([0x10, len(rem)]) + rem)
    try:
        data = tls.recv(4)
    except (ConnectionError, ssl.SSLError, socket.timeout):
        data = b""
    rc = data[3] if len(data) == 4 and data[0] == 0x20 else None
    return tls, rc


first, rc = connect()
assert rc == 0, f"first CONNECT refused: {rc}"
session = first.session
first.close()
print("ready", flush=True)
sys.stdin.readline()
second, rc = connect(session)
print(json.dumps({"resumed": second.session_reused, "connack": rc}), flush=True)
