"""`Authorization: Bearer <JWT>` deliveries (Sage Intacct), verified against configured public keys.

Sage Intacct publishes neither the issuer, the audience nor the signing keys of its webhook JWTs
(docs/providers.md, Sage Intacct), so all three are configuration: keys as a JWKS document, a JSON
list of PEM public keys, or PEM text; issuer and audience checked only when set.

Rules, whatever the sender: RS256 (RSA, 2048 bits or more) or ES256 (P-256) only, each key bound
to its own algorithm (no algorithm confusion, never `none` or HMAC); `exp` is required; a `kid` in
the token picks the key when the key has one too. The JWT covers who sent the delivery, not the
body: the body is stored as received, like every other delivery.
"""

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from provider_auth.webhooks.base import Headers, Verdict

ALGORITHMS = ("RS256", "ES256")
MAX_TOKEN_CHARS = 16_384  # far above any real token; refuses absurd headers before decoding
MIN_RSA_BITS = 2048

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """One public key, the single algorithm it may verify, and its key id when it has one."""

    key: PublicKey
    algorithm: str
    kid: str | None = None


def key_for(public_key: object, kid: str | None = None) -> VerificationKey:
    """A verification key for an RSA (RS256) or P-256 (ES256) public key; ValueError otherwise."""
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < MIN_RSA_BITS:
            raise ValueError(f"RSA keys need at least {MIN_RSA_BITS} bits")
        return VerificationKey(public_key, "RS256", kid)
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if not isinstance(public_key.curve, ec.SECP256R1):
            raise ValueError("EC keys must be on P-256 (ES256)")
        return VerificationKey(public_key, "ES256", kid)
    raise ValueError("only RSA (RS256) and P-256 (ES256) public keys are accepted")


def load_keys(text: str) -> tuple[VerificationKey, ...]:
    """Keys from a JWKS document, a single JWK, a JSON list of PEM strings, or PEM text.

    Raises ValueError naming what is wrong; private keys and symmetric keys are refused.
    """
    stripped = text.strip()
    if not stripped:
        raise ValueError("no keys given")
    if stripped.startswith("-----BEGIN"):
        keys = _pem_blocks(stripped)
    else:
        try:
            document = json.loads(stripped)
        except json.JSONDecodeError:
            raise ValueError(
                "expected a JWKS document, a JSON list of PEM public keys, or PEM text"
            ) from None
        keys = _from_json(document)
    if not keys:
        raise ValueError("no keys given")
    return tuple(keys)


def _from_json(document: Any) -> list[VerificationKey]:
    if isinstance(document, list):
        if not all(isinstance(item, str) for item in document):
            raise ValueError("a JSON list of keys must hold PEM strings")
        return [key for item in document for key in _pem_blocks(item)]
    if isinstance(document, dict) and isinstance(document.get("keys"), list):
        return [_from_jwk(item) for item in document["keys"] if _is_signing_jwk(item)]
    if isinstance(document, dict) and "kty" in document:
        return [_from_jwk(document)]
    raise ValueError('expected a JWKS document ({"keys": [...]}), a JWK, or a JSON list of PEM strings')


def _is_signing_jwk(item: Any) -> bool:
    if not isinstance(item, dict):
        raise ValueError("every entry of a JWKS must be a JSON object")
    return bool(item.get("use", "sig") == "sig")


def _from_jwk(item: dict[str, Any]) -> VerificationKey:
    if any(private in item for private in ("d", "p", "q", "k")):
        raise ValueError("a JWK holds private or symmetric key material; give public keys only")
    try:
        parsed = jwt.PyJWK(item)
    except jwt.PyJWTError as exc:
        raise ValueError(f"unusable JWK: {type(exc).__name__}") from None
    kid = item.get("kid")
    return key_for(parsed.key, kid if isinstance(kid, str) else None)


def _pem_blocks(text: str) -> list[VerificationKey]:
    keys = []
    for block in text.split("-----END")[:-1]:
        start = block.find("-----BEGIN")
        if start < 0:
            raise ValueError("malformed PEM text")
        body = block[start:]
        label = body.split("\n", 1)[0].strip()
        if "PRIVATE" in label:
            raise ValueError("a PEM block is a private key; give public keys only")
        pem = (body.rstrip() + "\n" + label.replace("BEGIN", "END") + "\n").encode()
        try:
            if "CERTIFICATE" in label:
                public_key: object = x509.load_pem_x509_certificate(pem).public_key()
            else:
                public_key = load_pem_public_key(pem)
        except (ValueError, TypeError):
            raise ValueError("a PEM block is not a readable public key or certificate") from None
        keys.append(key_for(public_key))
    if not keys:
        raise ValueError("no PEM block found")
    return keys


@dataclass(frozen=True, slots=True)
class JwtBearer:
    """Verifies the Bearer JWT of a delivery against every configured public key."""

    keys: tuple[VerificationKey, ...]
    issuer: str | None = None
    audience: str | None = None
    leeway_seconds: int = 30

    @classmethod
    def create(
        cls,
        keys: Iterable[VerificationKey] | str,
        issuer: str | None = None,
        audience: str | None = None,
        leeway_seconds: int = 30,
    ) -> "JwtBearer":
        """A scheme from loaded keys or from key text (see `load_keys`); ValueError without keys."""
        ring = load_keys(keys) if isinstance(keys, str) else tuple(keys)
        if not ring:
            raise ValueError("a JWT scheme needs at least one public key")
        return cls(ring, issuer or None, audience or None, leeway_seconds)

    def verify(self, body: bytes, headers: Headers) -> Verdict:
        """OK for a Bearer JWT signed by a configured key, unexpired, with the configured iss/aud."""
        value = headers.get("authorization")
        if not value or not value.strip():
            return Verdict.MISSING
        scheme, _, token = value.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or len(token) > MAX_TOKEN_CHARS:
            return Verdict.MALFORMED
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return Verdict.MALFORMED
        algorithm, kid = header.get("alg"), header.get("kid")
        if algorithm not in ALGORITHMS:
            return Verdict.MISMATCH
        candidates = [
            key
            for key in self.keys
            if key.algorithm == algorithm and (not isinstance(kid, str) or key.kid in (None, kid))
        ]
        for key in candidates:
            try:
                jwt.decode(
                    token,
                    key.key,
                    algorithms=[key.algorithm],
                    options={"require": ["exp"], "verify_aud": self.audience is not None},
                    issuer=self.issuer,
                    audience=self.audience,
                    leeway=self.leeway_seconds,
                )
            except jwt.InvalidSignatureError:
                continue  # another key of the ring may have signed it
            except (jwt.ExpiredSignatureError, jwt.ImmatureSignatureError):
                return Verdict.STALE
            except jwt.DecodeError:
                return Verdict.MALFORMED
            except jwt.PyJWTError:
                return Verdict.MISMATCH  # a trusted key signed it, but issuer, audience or claims are wrong
            return Verdict.OK
        return Verdict.MISMATCH
