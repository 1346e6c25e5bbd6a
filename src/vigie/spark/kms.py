"""Parquet modular encryption keys for the Spark dataset.

Data keys are wrapped with AES-256-GCM under master keys derived from the store key of the
keyfile (HMAC-SHA256), one per master key id: ``VigieKms.java`` does it inside Spark,
``VigieKmsClient`` here for pyarrow. The token handed to both is itself derived from the
store key, so the keyfile's key never enters a Spark configuration.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from vigie.keys import Keys

FOOTER_KEY = "vigie-footer"
COLUMN_KEY = "vigie-columns"
KMS_CLASS = "vigie.VigieKms"


def access_token(keys: Keys) -> str:
    """The 64-hex token the KMS clients derive their master keys from."""
    return hmac.new(keys.store_key.encode(), b"vigie parquet kms token", hashlib.sha256).hexdigest()


def master_key(token: str, key_id: str) -> bytes:
    return hmac.new(
        token.encode("ascii"), f"vigie parquet master key: {key_id}".encode(), hashlib.sha256
    ).digest()


def wrap(token: str, data_key: bytes, key_id: str) -> str:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    iv = os.urandom(12)
    sealed = AESGCM(master_key(token, key_id)).encrypt(iv, data_key, key_id.encode())
    return base64.b64encode(iv + sealed).decode("ascii")


def unwrap(token: str, wrapped: str, key_id: str) -> bytes:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    raw = base64.b64decode(wrapped)
    return AESGCM(master_key(token, key_id)).decrypt(raw[:12], raw[12:], key_id.encode())
