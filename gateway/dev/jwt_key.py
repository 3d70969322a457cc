"""A dev-only signing key for Sage Intacct's Bearer JWT webhooks, kept in `dev`'s data folder.

`ledgerhook dev` makes a P-256 key pair there on first use (the private key readable by its owner
only, never printed) and trusts its public key; `ledgerhook send-sample sage-intacct` signs with the
private key. Sage Intacct's own issuer, audience and keys are settings (docs/providers.md, Sage
Intacct).
"""

import os
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.settings import environment_values

# In the data folder, next to the dev key ring.
KEY_FILE = "sage-intacct-dev-key.pem"
DEV_ISSUER = "ledgerhook-dev"
DEV_AUDIENCE = "ledgerhook-dev-gateway"
TOKEN_LIFETIME_SECONDS = 300

JWT_SETTINGS = ("sage_intacct_jwt_keys", "sage_intacct_jwt_issuer", "sage_intacct_jwt_audience")


class DevKeyMissing(Exception):
    """The data folder holds no dev Sage Intacct key: `dev` has not run there."""


def dev_sage_intacct_settings(data_dir: Path) -> dict[str, Any]:
    """Settings that make `dev` accept Sage Intacct webhooks signed with its dev key.

    Nothing when the environment configures any Sage Intacct JWT setting: keys, issuer and audience
    go together, so the environment's are used as they are.
    """
    if any(name in JWT_SETTINGS for name in environment_values()):
        return {}
    public_key = _private_key(data_dir).public_key()
    pem = public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    return {
        "sage_intacct_jwt_keys": pem,
        "sage_intacct_jwt_issuer": DEV_ISSUER,
        "sage_intacct_jwt_audience": DEV_AUDIENCE,
    }


def dev_sage_intacct_token(data_dir: Path, now: float | None = None) -> str:
    """A Bearer JWT as `dev` accepts it, signed with the data folder's key; DevKeyMissing without one."""
    path = data_dir / KEY_FILE
    if not path.exists():
        raise DevKeyMissing(f"no dev Sage Intacct key in {data_dir}")
    key = _read_key(path)
    issued = int(now if now is not None else time.time())
    claims = {
        "iss": DEV_ISSUER,
        "aud": DEV_AUDIENCE,
        "sub": "ledgerhook-dev-sender",
        "iat": issued,
        "exp": issued + TOKEN_LIFETIME_SECONDS,
        "jti": str(uuid.uuid4()),
    }
    return jwt.encode(claims, key, algorithm="ES256")


def _private_key(data_dir: Path) -> ec.EllipticCurvePrivateKey:
    """The data folder's key: read, or made (mode 0600) if absent."""
    path = data_dir / KEY_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another dev process made it first: use theirs
        else:
            with os.fdopen(descriptor, "wb") as file:
                file.write(pem)
    return _read_key(path)


def _read_key(path: Path) -> ec.EllipticCurvePrivateKey:
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path} is not a P-256 private key")
    return loaded
