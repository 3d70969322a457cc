"""Secrets at rest: AES-256-GCM under a key ring, so keys can be rotated without downtime.

OAuth tokens and per-connection webhook secrets are stored encrypted with `KeyRing.encrypt`; the
ring comes from `LEDGERHOOK_ENCRYPTION_KEYS` (`kid:base64key,...`): the first key encrypts, every key
decrypts. How to rotate: docs/tokens.md, "Storage".

Ciphertext format, version 1 (bytes, self-describing)::

    b"v1" | kid length (1 byte, 1..32) | kid (ASCII, [A-Za-z0-9_-]) | nonce (12 random bytes)
          | AES-256-GCM ciphertext (same length as the plaintext) | GCM tag (16 bytes)

The GCM associated data is the header (`b"v1" | kid length | kid`) followed by the caller's
associated data (e.g. `b"connection:<id>:webhook_secret"`), which is not stored: the header is
authenticated too, and a ciphertext copied into another row or column no longer decrypts. Nonces
are random, so one key should encrypt fewer than 2**32 messages (NIST SP 800-38D, 8.3).

Every failure raises `ValueError` (a bad key ring) or `VaultError` (a ciphertext that cannot be
decrypted); neither message ever carries key material or plaintext.
"""

import base64
import binascii
import os
import re
from collections.abc import Iterable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["KEY_SIZE", "NONCE_SIZE", "TAG_SIZE", "VERSION", "Ciphertext", "KeyRing", "VaultError"]

VERSION = b"v1"
KEY_SIZE = 32  # AES-256
NONCE_SIZE = 12  # the GCM standard nonce size
TAG_SIZE = 16  # full-length GCM tag
_KID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,32}")
_KID_MAX = 32

# What decrypt accepts: database drivers hand back bytes, memoryview or bytearray for binary columns.
Ciphertext = bytes | bytearray | memoryview


class VaultError(Exception):
    """A ciphertext could not be decrypted: malformed, unknown key id, tampered or wrong associated data.

    The message names the reason (and the key id when it is a valid one), never key material or
    plaintext.
    """


class KeyRing:
    """AES-256-GCM keys by key id; the first one encrypts, all of them decrypt.

    Key material is held only inside `AESGCM` objects and is never shown by `repr` or `str`.
    """

    __slots__ = ("_ciphers", "_current")

    _ciphers: dict[str, AESGCM]
    _current: str

    def __init__(self, keys: Iterable[tuple[str, bytes]]) -> None:
        """A ring from `(key id, 32-byte key)` pairs in order; the first pair is the encrypting key.

        Raises ValueError for an empty ring, an invalid or duplicate key id, a key that is not 32
        bytes, or the same key under two ids (rotating to it would change nothing).
        """
        ciphers: dict[str, AESGCM] = {}
        seen: dict[bytes, str] = {}
        for position, (kid, key) in enumerate(keys, start=1):
            if not isinstance(kid, str) or not _KID_PATTERN.fullmatch(kid):
                # The bad id is not echoed: a swapped `key:kid` entry would put key material here.
                raise ValueError(f"key {position}: key id must match [A-Za-z0-9_-]{{1,32}}")
            if kid in ciphers:
                raise ValueError(f"key id {kid!r} appears more than once")
            key = bytes(key)
            if len(key) != KEY_SIZE:
                raise ValueError(f"key {kid!r} is {len(key)} bytes, AES-256 needs {KEY_SIZE}")
            if key in seen:
                raise ValueError(f"keys {seen[key]!r} and {kid!r} are the same key")
            seen[key] = kid
            ciphers[kid] = AESGCM(key)
        if not ciphers:
            raise ValueError("the key ring is empty: at least one key is needed")
        self._ciphers = ciphers
        self._current = next(iter(ciphers))

    @classmethod
    def parse(cls, text: str) -> "KeyRing":
        """A ring from the `LEDGERHOOK_ENCRYPTION_KEYS` form `kid:base64key,kid2:base64key2`.

        Keys may be standard or URL-safe base64, padded or not; whitespace around entries is ignored,
        as are empty entries (a trailing comma). Raises ValueError with a message free of key material.
        """
        pairs: list[tuple[str, bytes]] = []
        entries = [entry.strip() for entry in text.split(",")]
        for position, entry in enumerate((e for e in entries if e), start=1):
            kid, colon, encoded = entry.partition(":")
            kid = kid.strip()
            if not colon:
                raise ValueError(f"key {position}: expected 'kid:base64key'")
            if not _KID_PATTERN.fullmatch(kid):
                raise ValueError(f"key {position}: key id must match [A-Za-z0-9_-]{{1,32}}")
            pairs.append((kid, _decode_key(kid, encoded.strip())))
        return cls(pairs)

    @staticmethod
    def generate_key() -> str:
        """A new random 32-byte key, standard base64 (for docs, the CLI and tests)."""
        return base64.b64encode(os.urandom(KEY_SIZE)).decode("ascii")

    @property
    def current_key_id(self) -> str:
        """The id of the key that encrypts."""
        return self._current

    @property
    def key_ids(self) -> tuple[str, ...]:
        """All key ids, the encrypting one first."""
        return tuple(self._ciphers)

    def encrypt(self, plaintext: bytes, associated_data: bytes) -> bytes:
        """Encrypt under the current key with a fresh random nonce, bound to `associated_data`."""
        header = _header(self._current)
        nonce = os.urandom(NONCE_SIZE)
        sealed = self._ciphers[self._current].encrypt(nonce, bytes(plaintext), header + associated_data)
        return header + nonce + sealed

    def decrypt(self, ciphertext: Ciphertext, associated_data: bytes) -> bytes:
        """The plaintext of `ciphertext`, which must have been encrypted with the same associated data.

        Raises VaultError for a malformed ciphertext, an unknown key id, tampering or other associated
        data.
        """
        kid, header_size = _read_header(ciphertext)
        cipher = self._ciphers.get(kid)
        if cipher is None:
            raise VaultError(f"ciphertext was encrypted with key id {kid!r}, which is not in the key ring")
        body = bytes(ciphertext[header_size:])
        if len(body) < NONCE_SIZE + TAG_SIZE:
            raise VaultError("ciphertext is truncated")
        nonce, sealed = body[:NONCE_SIZE], body[NONCE_SIZE:]
        try:
            return cipher.decrypt(nonce, sealed, bytes(ciphertext[:header_size]) + associated_data)
        except InvalidTag:
            # `from None`: nothing from the cipher layer is worth chaining, and it keeps logs short.
            raise VaultError(
                f"ciphertext under key id {kid!r} failed authentication (tampered, or other associated data)"
            ) from None

    def encrypt_str(self, plaintext: str, associated_data: bytes) -> bytes:
        """`encrypt` for text: the plaintext is encoded as UTF-8."""
        return self.encrypt(plaintext.encode("utf-8"), associated_data)

    def decrypt_str(self, ciphertext: Ciphertext, associated_data: bytes) -> str:
        """`decrypt` for text written by `encrypt_str`; raises VaultError if the plaintext is not UTF-8."""
        plaintext = self.decrypt(ciphertext, associated_data)
        try:
            return plaintext.decode("utf-8")
        except UnicodeDecodeError:
            raise VaultError("decrypted value is not UTF-8 text") from None

    def reencrypt(self, ciphertext: Ciphertext, associated_data: bytes) -> bytes:
        """Decrypt with the ring key that made `ciphertext`; encrypt again under the current key."""
        return self.encrypt(self.decrypt(ciphertext, associated_data), associated_data)

    @staticmethod
    def key_id_of(ciphertext: Ciphertext) -> str:
        """The id of the key that encrypted `ciphertext` (read from its header, not verified).

        Raises VaultError when the header is malformed.
        """
        return _read_header(ciphertext)[0]

    def needs_rotation(self, ciphertext: Ciphertext) -> bool:
        """True when `ciphertext` was encrypted with a key other than the current one."""
        return self.key_id_of(ciphertext) != self._current

    def __repr__(self) -> str:
        # Ids only: they are labels, safe in logs; the keys stay inside the AESGCM objects.
        return f"KeyRing(current={self._current!r}, key_ids={self.key_ids!r})"

    __str__ = __repr__


def _header(kid: str) -> bytes:
    encoded = kid.encode("ascii")
    return VERSION + bytes([len(encoded)]) + encoded


def _read_header(ciphertext: Ciphertext) -> tuple[str, int]:
    """The key id and the header size; checks the version and the key id's form."""
    if not isinstance(ciphertext, Ciphertext):
        raise VaultError("ciphertext must be bytes")
    data = bytes(ciphertext[: len(VERSION) + 1 + _KID_MAX])
    if data[: len(VERSION)] != VERSION:
        raise VaultError("ciphertext is not in a known format (expected version v1)")
    if len(data) <= len(VERSION):
        raise VaultError("ciphertext is truncated")
    size = data[len(VERSION)]
    start = len(VERSION) + 1
    raw = data[start : start + size]
    if not 1 <= size <= _KID_MAX or len(raw) != size:
        raise VaultError("ciphertext has a malformed key id")
    kid = raw.decode("ascii", errors="replace")
    if not _KID_PATTERN.fullmatch(kid):
        raise VaultError("ciphertext has a malformed key id")
    return kid, start + size


def _decode_key(kid: str, encoded: str) -> bytes:
    """Standard or URL-safe base64, padded or not; errors name the key id, never the value."""
    body = encoded.rstrip("=")
    padding = len(encoded) - len(body)
    if not body:
        raise ValueError(f"key {kid!r} is empty")
    if padding and (padding > 2 or len(encoded) % 4):
        raise ValueError(f"key {kid!r} is not valid base64 (bad padding)")
    # URL-safe to standard alphabet; validate=True then refuses anything outside it (including '=').
    standard = body.replace("-", "+").replace("_", "/")
    try:
        key = base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"key {kid!r} is not valid base64") from None
    if len(key) != KEY_SIZE:
        raise ValueError(f"key {kid!r} is {len(key)} bytes after base64 decoding, AES-256 needs {KEY_SIZE}")
    return key
