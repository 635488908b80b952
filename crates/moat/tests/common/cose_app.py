#!/usr/bin/env python3
"""An application that trusts only the device's certificate (tests/gateways.rs): it verifies
a relayed COSE_Sign1 object with pycose, a COSE implementation nobody here wrote, without
trusting the gateway or the hub.

    cose_app.py CERT_PEM OBJECT_HEX [APP_KEY_PEM]
        checks that the object's x5t is [-16, SHA-256 of the certificate's DER], that alg is
        ES256 and that the signature verifies with the certificate's key; prints
        "verified COUNTER PAYLOAD_HEX", else exits non-zero with the reason. With
        APP_KEY_PEM (the application's P-256 private key), a payload sealed to it
        (COSE_Encrypt, tag 96: ECDH-ES + HKDF-256, A128GCM) is decrypted with pycose too, and
        "verified COUNTER PLAINTEXT_HEX sealed" printed.

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

    if len(sys.argv) not in (3, 4):
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
    if len(sys.argv) == 4 and msg.payload[:2] == b"\xd8\x60":
        plaintext = decrypt(msg.payload, open(sys.argv[3]).read())
        print(f"verified {counter} {plaintext.hex()} sealed")
        return
    print(f"verified {counter} {msg.payload.hex()}")


def decrypt(sealed: bytes, key_pem: str) -> bytes:
    """Decrypts a payload sealed to the application key with pycose. pycose 1.1 does not take
    an EC2 key whose y is the sign bit (RFC 9053 §7.1.1, what a device sends to save 32 bytes):
    the point is expanded first, in the recipient's unprotected header (not part of the AAD)."""
    import cbor2
    from cryptography.hazmat.primitives.asymmetric import ec
    from pycose.keys import CoseKey
    from pycose.messages import CoseMessage

    obj = cbor2.loads(sealed)
    eph = obj.value[3][0][1][-1]
    if isinstance(eph.get(-3), bool):
        point = bytes([3 if eph[-3] else 2]) + eph[-2]
        y = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point).public_numbers().y
        eph[-3] = y.to_bytes(32, "big")
    msg = CoseMessage.decode(cbor2.dumps(obj))
    recipient = msg.recipients[0]
    recipient.key = CoseKey.from_pem_private_key(key_pem)
    try:
        return msg.decrypt(recipient)
    except Exception as e:  # pycose raises several kinds
        sys.exit(f"refused: decryption failed: {e}")


if __name__ == "__main__":
    main()
