#!/usr/bin/env python3
"""An application that trusts only the device's certificate (tests/gateways.rs): it verifies
a relayed COSE_Sign1 object with pycose, a COSE implementation nobody here wrote, without
trusting the gateway or the hub.

    cose_app.py CERT_PEM OBJECT_HEX
        checks that the object's x5t is [-16, SHA-256 of the certificate's DER], that alg is
        ES256 and that the signature verifies with the certificate's key; prints
        "verified COUNTER PAYLOAD_HEX", else exits non-zero with the reason.

Needs pycose 1.1.0 with cbor2 < 6 (see crates/moat-cose/tests/pycose_peer.py).
"""
import hashlib
import sys


def main():
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from pycose.algorithms import Es256
    from pycose.headers import Algorithm, PartialIV, X5t
    from pycose.keys import CoseKey
    from pycose.messages import Sign1Message

    if len(sys.argv) != 3:
        sys.exit(__doc__)
    cert = x509.load_pem_x509_certificate(open(sys.argv[1], "rb").read())
    der = cert.public_bytes(serialization.Encoding.DER)
    data = bytes.fromhex(sys.argv[2])
    # pycose decodes tagged objects only; the tag is a one-byte prefix.
    msg = Sign1Message.decode(data if data[:1] == b"\xd2" else b"\xd2" + data)
    if msg.phdr.get(Algorithm) is not Es256:
        sys.exit(f"refused: alg {msg.phdr.get(Algorithm)}")
    if msg.phdr.get(X5t) != [-16, hashlib.sha256(der).digest()]:
        sys.exit("refused: x5t does not name this certificate")
    pem = cert.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    msg.key = CoseKey.from_pem_public_key(pem.decode())
    if not msg.verify_signature():
        sys.exit("refused: signature does not verify")
    counter = int.from_bytes(msg.phdr[PartialIV], "big")
    print(f"verified {counter} {msg.payload.hex()}")


if __name__ == "__main__":
    main()
