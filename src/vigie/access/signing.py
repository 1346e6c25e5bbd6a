"""An admin's approval signature: Ed25519, its private key derived from the admin's API key.

Only the public key is stored (in the access file, beside the key's hash), so whoever can
read every file on the machine still cannot sign an approval: that takes the API key, which
only its holder has. Two approvals need two keys, hence two people.
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

_PURPOSE = b"vigie guard approval signing key v1"


def _private(api_key: str) -> Ed25519PrivateKey:
    seed = hmac.new(api_key.strip().encode(), _PURPOSE, hashlib.sha256).digest()
    return Ed25519PrivateKey.from_private_bytes(seed)


def public_key_hex(api_key: str) -> str:
    return _private(api_key).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def sign(api_key: str, message: bytes) -> str:
    return _private(api_key).sign(message).hex()


def signature_ok(public_hex: str, signature_hex: str, message: bytes) -> bool:
    try:
        key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_hex))
        key.verify(bytes.fromhex(signature_hex), message)
    except (InvalidSignature, ValueError):
        return False
    return True
