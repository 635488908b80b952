#!/usr/bin/env python3
"""The pycose side of moat-cose's interop test (tests/pycose.rs).

    pycose_peer.py check                 pycose 1.x and cbor2 < 6 importable (exit 0), else why
    pycose_peer.py identity DIR          a device key and self-signed certificate: DIR/key.der
                                         (PKCS#8), DIR/pub.der (SPKI), DIR/cert.der
    pycose_peer.py verify DIR CASES      decode and verify objects moat-cose signed
    pycose_peer.py sign DIR CASES        sign objects for moat-cose to verify
    pycose_peer.py open DIR SEALED       decrypt payloads moat-cose sealed to DIR/key.der
    pycose_peer.py seal DIR SEALED       seal payloads to DIR/pub.der for moat-cose to open

CASES has one object per line: PATH COUNTER PAYLOAD_HEX tagged|untagged [ok|bad], with "-" for
an empty payload. `verify`
checks each object's headers (exactly alg ES256, x5t [-16, SHA-256(cert.der)], Partial IV as
OSCORE encodes COUNTER; nothing unprotected), payload and signature (with the certificate's
key): `ok` ones must pass, `bad` ones must fail the signature check. It prints
"verified N, refused M". `sign` writes each object to PATH, headers in the order alg, x5t,
Partial IV (not moat-cose's), and prints "signed N".

SEALED has one payload per line: PATH PLAINTEXT_HEX ("-" when empty). `open` decodes each
COSE_Encrypt (A128GCM, one ECDH-ES + HKDF-256 recipient), decrypts it with the key and checks
the plaintext, printing "opened N"; `seal` writes each object to PATH and prints "sealed N".

Needs pycose 1.1.0 with cbor2 < 6 (cbor2 6 decodes tagged arrays as tuples, which pycose
rejects).
"""
import datetime
import hashlib
import sys
from pathlib import Path


def check():
    from importlib import metadata

    import cbor2  # noqa: F401
    import pycose  # noqa: F401

    cbor2_version = metadata.version("cbor2")
    pycose_version = metadata.version("pycose")
    if int(cbor2_version.split(".")[0]) >= 6:
        sys.exit(f"cbor2 {cbor2_version} is too new for pycose: pip install 'cbor2<6'")
    if not pycose_version.startswith("1."):
        sys.exit(f"pycose {pycose_version}: this peer is written for pycose 1.x")
    print(f"pycose {pycose_version}, cbor2 {cbor2_version}")


def identity(out: Path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cose-interop-device")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    der = serialization.Encoding.DER
    (out / "key.der").write_bytes(
        key.private_bytes(der, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    (out / "pub.der").write_bytes(
        key.public_key().public_bytes(der, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    (out / "cert.der").write_bytes(cert.public_bytes(der))


def partial_iv(counter: int) -> bytes:
    """OSCORE's encoding: big-endian, no leading zero bytes, 0 as one zero byte."""
    return counter.to_bytes(max(1, (counter.bit_length() + 7) // 8), "big")


def cases(path: Path):
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) < 4:
            sys.exit(f"{path}:{n}: bad case line {line!r}")
        expect = fields[4] if len(fields) > 4 else "ok"
        if fields[3] not in ("tagged", "untagged") or expect not in ("ok", "bad"):
            sys.exit(f"{path}:{n}: bad case line {line!r}")
        yield Path(fields[0]), int(fields[1]), bytes.fromhex(fields[2].strip("-")), fields[3] == "tagged", expect


def thumbprint(out: Path) -> bytes:
    return hashlib.sha256((out / "cert.der").read_bytes()).digest()


def verify(out: Path, case_file: Path):
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from pycose.algorithms import Es256
    from pycose.headers import Algorithm, PartialIV, X5t
    from pycose.keys import CoseKey
    from pycose.messages import Sign1Message

    cert = x509.load_der_x509_certificate((out / "cert.der").read_bytes())
    pem = cert.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key = CoseKey.from_pem_public_key(pem.decode())
    x5t = [-16, thumbprint(out)]
    verified = refused = 0
    for path, counter, payload, tagged, expect in cases(case_file):
        data = path.read_bytes()
        if (data[0] == 0xD2) != tagged:
            sys.exit(f"{path}: first byte {data[0]:#x}, expected {'tagged' if tagged else 'untagged'}")
        # pycose decodes tagged objects only; the tag is a one-byte prefix.
        msg = Sign1Message.decode(data if tagged else b"\xd2" + data)
        problems = []
        if set(msg.phdr) != {Algorithm, X5t, PartialIV}:
            problems.append(f"protected header has {sorted(k.fullname for k in msg.phdr)}")
        if msg.phdr.get(Algorithm) is not Es256:
            problems.append(f"alg {msg.phdr.get(Algorithm)}")
        if msg.phdr.get(X5t) != x5t:
            problems.append(f"x5t {msg.phdr.get(X5t)!r}, expected {x5t!r}")
        if msg.phdr.get(PartialIV) != partial_iv(counter):
            problems.append(f"Partial IV {msg.phdr.get(PartialIV)!r} for counter {counter}")
        if msg.uhdr:
            problems.append(f"unprotected header {msg.uhdr}")
        if msg.payload != payload:
            problems.append("payload differs")
        if problems:
            sys.exit(f"{path}: " + "; ".join(problems))
        msg.key = key
        good = msg.verify_signature()
        if good != (expect == "ok"):
            sys.exit(f"{path}: signature check {good}, expected {expect}")
        if good:
            verified += 1
        else:
            refused += 1
    print(f"verified {verified}, refused {refused}")


def sign(out: Path, case_file: Path):
    from cryptography.hazmat.primitives import serialization
    from pycose.algorithms import Es256
    from pycose.headers import Algorithm, PartialIV, X5t
    from pycose.keys import CoseKey
    from pycose.messages import Sign1Message

    private = serialization.load_der_private_key((out / "key.der").read_bytes(), None)
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    key = CoseKey.from_pem_private_key(pem.decode())
    x5t = [-16, thumbprint(out)]
    n = 0
    for path, counter, payload, tagged, _ in cases(case_file):
        msg = Sign1Message(
            phdr={Algorithm: Es256, X5t: x5t, PartialIV: partial_iv(counter)}, payload=payload
        )
        msg.key = key
        path.write_bytes(msg.encode(tag=tagged))
        n += 1
    print(f"signed {n}")


def sealed_cases(path: Path):
    for n, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split()
        if len(fields) != 2:
            sys.exit(f"{path}:{n}: bad case line {line!r}")
        yield Path(fields[0]), bytes.fromhex(fields[1].strip("-"))


def with_full_ephemeral_key(data: bytes) -> bytes:
    """The object with the ephemeral key's y as a coordinate: pycose 1.1 takes no sign bit.
    Only the recipient's unprotected header changes (it is not part of the AAD)."""
    import cbor2
    from cryptography.hazmat.primitives.asymmetric import ec

    tagged = cbor2.loads(data if data[:2] == b"\xd8\x60" else b"\xd8\x60" + data)
    key = tagged.value[3][0][1][-1]
    if isinstance(key.get(-3), bool):
        point = bytes([3 if key[-3] else 2]) + key[-2]
        numbers = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point).public_numbers()
        key[-3] = numbers.y.to_bytes(32, "big")
    return cbor2.dumps(tagged)


def open_sealed(out: Path, case_file: Path):
    from cryptography.hazmat.primitives import serialization
    from pycose.keys import CoseKey
    from pycose.messages import CoseMessage

    private = serialization.load_der_private_key((out / "key.der").read_bytes(), None)
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    key = CoseKey.from_pem_private_key(pem.decode())
    n = 0
    for path, plaintext in sealed_cases(case_file):
        msg = CoseMessage.decode(with_full_ephemeral_key(path.read_bytes()))
        recipient = msg.recipients[0]
        recipient.key = key
        got = msg.decrypt(recipient)
        if got != plaintext:
            sys.exit(f"{path}: decrypted {got.hex()}, expected {plaintext.hex()}")
        n += 1
    print(f"opened {n}")


def seal(out: Path, case_file: Path):
    import os

    from cryptography.hazmat.primitives import serialization
    from pycose.algorithms import A128GCM, EcdhEsHKDF256
    from pycose.headers import IV, Algorithm, EphemeralKey, StaticKey
    from pycose.keys import CoseKey, EC2Key
    from pycose.keys.curves import P256
    from pycose.keys.keyparam import EC2KpD
    from pycose.messages import EncMessage
    from pycose.messages.recipient import DirectKeyAgreement

    public = serialization.load_der_public_key((out / "pub.der").read_bytes())
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    app = CoseKey.from_pem_public_key(pem.decode())
    n = 0
    for path, plaintext in sealed_cases(case_file):
        # pycose 1.1 derives the key before it would make the ephemeral one: make it here.
        ephemeral = EC2Key.generate_key(crv=P256)
        public = {k: v for k, v in dict(ephemeral).items() if k is not EC2KpD}
        recipient = DirectKeyAgreement(
            phdr={Algorithm: EcdhEsHKDF256}, uhdr={EphemeralKey: public}
        )
        recipient.key = ephemeral
        recipient.local_attrs = {StaticKey: app}
        msg = EncMessage(
            phdr={Algorithm: A128GCM},
            uhdr={IV: os.urandom(12)},
            payload=plaintext,
            recipients=[recipient],
        )
        path.write_bytes(msg.encode(tag=True))
        n += 1
    print(f"sealed {n}")


def main():
    args = sys.argv[1:]
    if args == ["check"]:
        check()
    elif len(args) == 2 and args[0] == "identity":
        identity(Path(args[1]))
    elif len(args) == 3 and args[0] == "verify":
        verify(Path(args[1]), Path(args[2]))
    elif len(args) == 3 and args[0] == "sign":
        sign(Path(args[1]), Path(args[2]))
    elif len(args) == 3 and args[0] == "open":
        open_sealed(Path(args[1]), Path(args[2]))
    elif len(args) == 3 and args[0] == "seal":
        seal(Path(args[1]), Path(args[2]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
