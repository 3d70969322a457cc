"""AES-256-GCM key ring for secrets at rest: format, rotation, tamper detection, parsing, hygiene."""

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provider_auth.vault import NONCE_SIZE, TAG_SIZE, KeyRing, VaultError

KEY_A = bytes(range(32))
KEY_B = bytes(range(100, 132))
AD = b"connection:42:webhook_secret"


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def ring_of(*pairs: tuple[str, bytes]) -> KeyRing:
    return KeyRing.parse(",".join(f"{kid}:{b64(key)}" for kid, key in pairs))


RING = ring_of(("k1", KEY_A))


# Round trip and format.


@given(plaintext=st.binary(max_size=2048), associated_data=st.binary(max_size=128))
def test_round_trip(plaintext: bytes, associated_data: bytes) -> None:
    ciphertext = RING.encrypt(plaintext, associated_data)
    assert RING.decrypt(ciphertext, associated_data) == plaintext


@given(text=st.text(max_size=300))
def test_str_round_trip(text: str) -> None:
    ciphertext = RING.encrypt_str(text, AD)
    assert isinstance(ciphertext, bytes)
    assert RING.decrypt_str(ciphertext, AD) == text


def test_layout_is_version_kid_nonce_then_sealed_body() -> None:
    ring = ring_of(("prod-2025_a", KEY_A))
    ciphertext = ring.encrypt(b"refresh-token-value", AD)
    assert ciphertext[:2] == b"v1"
    assert ciphertext[2] == len(b"prod-2025_a")
    assert ciphertext[3:14] == b"prod-2025_a"
    assert len(ciphertext) == 14 + NONCE_SIZE + len(b"refresh-token-value") + TAG_SIZE
    assert ring.key_id_of(ciphertext) == "prod-2025_a"
    assert KeyRing.key_id_of(ciphertext) == "prod-2025_a"


def test_empty_plaintext_still_carries_a_tag() -> None:
    ciphertext = RING.encrypt(b"", AD)
    assert len(ciphertext) == 5 + NONCE_SIZE + TAG_SIZE
    assert RING.decrypt(ciphertext, AD) == b""
    with pytest.raises(VaultError):
        RING.decrypt(ciphertext, b"other")


def test_decrypt_accepts_bytearray_and_memoryview() -> None:
    ciphertext = RING.encrypt(b"secret", AD)
    assert RING.decrypt(bytearray(ciphertext), AD) == b"secret"
    assert RING.decrypt(memoryview(ciphertext), AD) == b"secret"


def test_decrypt_str_refuses_non_utf8_plaintext() -> None:
    ciphertext = RING.encrypt(b"\xff\xfe", AD)
    with pytest.raises(VaultError, match="UTF-8"):
        RING.decrypt_str(ciphertext, AD)


# Rotation.


def test_rotation_lifecycle() -> None:
    old = ring_of(("old", KEY_A))
    stored = old.encrypt(b"xero-refresh-token", AD)
    assert not old.needs_rotation(stored)

    rotated = ring_of(("new", KEY_B), ("old", KEY_A))
    assert rotated.current_key_id == "new"
    assert rotated.key_ids == ("new", "old")
    assert rotated.decrypt(stored, AD) == b"xero-refresh-token"
    assert rotated.needs_rotation(stored)

    fresh = rotated.encrypt(b"another", AD)
    assert rotated.key_id_of(fresh) == "new"
    assert not rotated.needs_rotation(fresh)

    rewritten = rotated.reencrypt(stored, AD)
    assert rotated.key_id_of(rewritten) == "new"
    assert not rotated.needs_rotation(rewritten)
    assert rotated.decrypt(rewritten, AD) == b"xero-refresh-token"
    # The re-encrypted value is bound to the same associated data as before.
    with pytest.raises(VaultError):
        rotated.decrypt(rewritten, b"connection:43:webhook_secret")

    retired = ring_of(("new", KEY_B))
    assert retired.decrypt(rewritten, AD) == b"xero-refresh-token"
    assert retired.decrypt(fresh, AD) == b"another"
    with pytest.raises(VaultError, match=r"'old'.*not in the key ring"):
        retired.decrypt(stored, AD)
    assert retired.needs_rotation(stored)


def test_ring_with_same_id_but_other_key_cannot_decrypt() -> None:
    ciphertext = ring_of(("k1", KEY_A)).encrypt(b"secret", AD)
    with pytest.raises(VaultError, match="failed authentication"):
        ring_of(("k1", KEY_B)).decrypt(ciphertext, AD)


# Tamper detection.


def test_every_single_byte_flip_is_detected() -> None:
    ciphertext = RING.encrypt(b"a webhook secret of some length", AD)
    for index in range(len(ciphertext)):
        for mask in (0x01, 0x80, 0xFF):
            tampered = bytearray(ciphertext)
            tampered[index] ^= mask
            with pytest.raises(VaultError):
                RING.decrypt(bytes(tampered), AD)


@given(
    plaintext=st.binary(max_size=200),
    position=st.integers(min_value=0),
    mask=st.integers(min_value=1, max_value=255),
)
def test_any_byte_flip_is_detected(plaintext: bytes, position: int, mask: int) -> None:
    ciphertext = bytearray(RING.encrypt(plaintext, AD))
    ciphertext[position % len(ciphertext)] ^= mask
    with pytest.raises(VaultError):
        RING.decrypt(bytes(ciphertext), AD)


def test_truncation_and_extension_are_detected() -> None:
    ciphertext = RING.encrypt(b"token", AD)
    for cut in range(len(ciphertext)):
        with pytest.raises(VaultError):
            RING.decrypt(ciphertext[:cut], AD)
    with pytest.raises(VaultError):
        RING.decrypt(ciphertext + b"\x00", AD)


def test_header_is_authenticated_even_when_the_relabelled_key_is_identical() -> None:
    # Two separate rings hold the same key under different ids: relabelling the header must still fail.
    ciphertext = ring_of(("ka", KEY_A)).encrypt(b"secret", AD)
    relabelled = ciphertext.replace(b"\x02ka", b"\x02kb", 1)
    assert KeyRing.key_id_of(relabelled) == "kb"
    with pytest.raises(VaultError, match="failed authentication"):
        ring_of(("kb", KEY_A)).decrypt(relabelled, AD)


def test_swapping_to_another_known_kid_is_detected() -> None:
    ring = ring_of(("k1", KEY_A), ("k2", KEY_B))
    ciphertext = ring.encrypt(b"secret", AD)
    with pytest.raises(VaultError):
        ring.decrypt(ciphertext.replace(b"k1", b"k2", 1), AD)


@pytest.mark.parametrize(
    "ciphertext",
    [
        b"",
        b"v",
        b"v1",
        b"v2\x02k1" + bytes(40),
        b"V1\x02k1" + bytes(40),
        b"v1\x00" + bytes(40),  # zero-length kid
        b"v1\x21" + b"k" * 33 + bytes(40),  # kid longer than 32
        b"v1\x05k1",  # kid runs past the end
        b"v1\x02k!" + bytes(40),  # kid outside the alphabet
        b"v1\x02\xff\xfe" + bytes(40),  # kid not ASCII
        b"v1\x02k1" + bytes(NONCE_SIZE + TAG_SIZE - 1),  # no room for nonce and tag
    ],
)
def test_malformed_ciphertexts_raise_vault_error(ciphertext: bytes) -> None:
    with pytest.raises(VaultError):
        RING.decrypt(ciphertext, AD)


@pytest.mark.parametrize("ciphertext", [b"", b"v2\x02k1", b"v1\x00", b"v1\x02k!"])
def test_key_id_of_and_needs_rotation_refuse_malformed_headers(ciphertext: bytes) -> None:
    with pytest.raises(VaultError):
        KeyRing.key_id_of(ciphertext)
    with pytest.raises(VaultError):
        RING.needs_rotation(ciphertext)


def test_text_instead_of_bytes_is_refused() -> None:
    ciphertext = RING.encrypt(b"secret", AD)
    with pytest.raises(VaultError, match="must be bytes"):
        RING.decrypt(ciphertext.decode("latin-1"), AD)  # type: ignore[arg-type]


# Associated data binding.


def test_ciphertext_copied_to_another_row_or_purpose_fails() -> None:
    ciphertext = RING.encrypt(b"whsec_value", b"connection:42:webhook_secret")
    for other in (
        b"connection:43:webhook_secret",
        b"connection:42:refresh_token",
        b"connection:42:webhook_secre",
        b"connection:42:webhook_secret\x00",
        b"",
    ):
        with pytest.raises(VaultError, match="failed authentication"):
            RING.decrypt(ciphertext, other)
    assert RING.decrypt(ciphertext, b"connection:42:webhook_secret") == b"whsec_value"


@given(plaintext=st.binary(max_size=64), ad=st.binary(max_size=64), other=st.binary(max_size=64))
def test_any_other_associated_data_fails(plaintext: bytes, ad: bytes, other: bytes) -> None:
    ciphertext = RING.encrypt(plaintext, ad)
    if other == ad:
        assert RING.decrypt(ciphertext, other) == plaintext
    else:
        with pytest.raises(VaultError):
            RING.decrypt(ciphertext, other)


# Parsing.


def test_parse_accepts_standard_urlsafe_padded_unpadded_and_whitespace() -> None:
    # This key's standard base64 contains '+' and '/', so the URL-safe form differs.
    key = bytes([0xFB, 0xFF, 0xBF] * 10 + [1, 2])
    standard = base64.b64encode(key).decode()
    urlsafe = base64.urlsafe_b64encode(key).decode()
    assert "+" in standard and "/" in standard and standard.endswith("=")
    ciphertext = KeyRing.parse(f"k:{standard}").encrypt(b"secret", AD)
    for form in (standard, standard.rstrip("="), urlsafe, urlsafe.rstrip("="), f"  {standard}  "):
        ring = KeyRing.parse(f" k : {form} ,")
        assert ring.key_ids == ("k",)
        assert ring.decrypt(ciphertext, AD) == b"secret"


def test_parse_keeps_order_first_key_encrypts() -> None:
    ring = KeyRing.parse(f"b-2:{b64(KEY_B)}, a_1:{b64(KEY_A)}")
    assert ring.key_ids == ("b-2", "a_1")
    assert ring.current_key_id == "b-2"
    assert ring.key_id_of(ring.encrypt(b"x", AD)) == "b-2"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("  ", "empty"),
        (",,", "empty"),
        (f"k1:{b64(KEY_A)[:-4]}!!!=", "not valid base64"),
        ("k1:abc", "2 bytes"),  # unpadded base64 of 2 bytes
        ("k1:abcde", "not valid base64"),  # 5 characters: one more than a multiple of 4
        (f"k1:{b64(KEY_A)}===", "bad padding"),
        (f"k1:{b64(KEY_A).rstrip('=')}=A=", "not valid base64"),
        (f"k1:{b64(bytes(range(16)))}", "16 bytes"),
        (f"k1:{b64(bytes(range(31)))}", "31 bytes"),
        (f"k1:{b64(bytes(range(33)))}", "33 bytes"),
        ("k1:", "empty"),
        (f"k1:{b64(KEY_A)},k1:{b64(KEY_B)}", "more than once"),
        (f"k1:{b64(KEY_A)},k2:{b64(KEY_A)}", "same key"),
        (b64(KEY_A), "expected 'kid:base64key'"),
        (f":{b64(KEY_A)}", "key id must match"),
        (f"k 1:{b64(KEY_A)}", "key id must match"),
        (f"k.1:{b64(KEY_A)}", "key id must match"),
        (f"{'k' * 33}:{b64(KEY_A)}", "key id must match"),
        (f"{b64(KEY_A)}:k1", "key id must match"),  # swapped: key material where the id goes
    ],
)
def test_parse_errors_are_clear_and_free_of_key_material(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        KeyRing.parse(text)
    shown = str(caught.value)
    for kid, _, encoded in (entry.partition(":") for entry in text.split(",")):
        for part in (encoded.strip(), kid.strip()):
            if len(part) >= 8:  # key material, or an id position holding it
                assert part.rstrip("=")[:8] not in shown
    assert caught.value.__cause__ is None


def test_parse_accepts_kid_of_32_characters() -> None:
    kid = "A" * 30 + "_-"
    ring = KeyRing.parse(f"{kid}:{b64(KEY_A)}")
    assert ring.key_id_of(ring.encrypt(b"x", AD)) == kid


def test_constructor_validates_like_parse() -> None:
    assert KeyRing([("k1", KEY_A), ("k2", KEY_B)]).key_ids == ("k1", "k2")
    with pytest.raises(ValueError, match="empty"):
        KeyRing([])
    with pytest.raises(ValueError, match="31 bytes"):
        KeyRing([("k1", KEY_A[:31])])
    with pytest.raises(ValueError, match="more than once"):
        KeyRing([("k1", KEY_A), ("k1", KEY_B)])
    with pytest.raises(ValueError, match="key id must match"):
        KeyRing([("bad id", KEY_A)])


def test_generate_key_is_a_fresh_valid_32_byte_key() -> None:
    keys = {KeyRing.generate_key() for _ in range(50)}
    assert len(keys) == 50
    for key in keys:
        assert len(base64.b64decode(key, validate=True)) == 32
    ring = KeyRing.parse(",".join(f"k{i}:{key}" for i, key in enumerate(sorted(keys))))
    assert len(ring.key_ids) == 50
    assert ring.decrypt(ring.encrypt(b"x", AD), AD) == b"x"


# Hygiene: nothing secret in representations, errors or ciphertexts.


def test_repr_and_str_show_ids_but_never_keys() -> None:
    ring = KeyRing([("current", KEY_A), ("previous", KEY_B)])
    for shown in (repr(ring), str(ring), f"{ring}", repr([ring])):
        assert "current" in shown and "previous" in shown
        for key in (KEY_A, KEY_B):
            for form in (
                base64.b64encode(key).decode()[:8],
                base64.urlsafe_b64encode(key).decode()[:8],
                key.hex()[:8],
                repr(key)[2:12],
            ):
                assert form not in shown
    assert not hasattr(ring, "__dict__")


def test_vault_errors_carry_no_key_material_or_plaintext() -> None:
    plaintext = b"super-secret-refresh-token"
    ring = KeyRing([("k1", KEY_A)])
    ciphertext = ring.encrypt(plaintext, AD)
    failures: list[VaultError] = []
    for target_ring, target, ad in (
        (ring, ciphertext, b"wrong"),
        (ring, ciphertext[:-1] + bytes([ciphertext[-1] ^ 1]), AD),
        (KeyRing([("k2", KEY_B)]), ciphertext, AD),
        (ring, ciphertext[:20], AD),
    ):
        with pytest.raises(VaultError) as caught:
            target_ring.decrypt(target, ad)
        failures.append(caught.value)
    for error in failures:
        shown = str(error) + repr(error)
        assert plaintext.decode() not in shown
        assert b64(KEY_A)[:8] not in shown and b64(KEY_B)[:8] not in shown
        assert KEY_A.hex()[:8] not in shown and KEY_B.hex()[:8] not in shown
        assert error.__cause__ is None


def test_nonces_are_unique_across_many_encryptions() -> None:
    header_size = 5
    count = 20_000
    ciphertexts = [RING.encrypt(b"same plaintext", AD) for _ in range(count)]
    nonces = {c[header_size : header_size + NONCE_SIZE] for c in ciphertexts}
    assert len(nonces) == count
    assert len(set(ciphertexts)) == count


@settings(max_examples=200)
@given(plaintext=st.binary(min_size=16, max_size=512), associated_data=st.binary(max_size=64))
def test_plaintext_never_appears_in_ciphertext(plaintext: bytes, associated_data: bytes) -> None:
    # 16 bytes or more: a shorter plaintext could turn up inside random bytes by pure chance.
    ciphertext = RING.encrypt(plaintext, associated_data)
    assert plaintext not in ciphertext
    assert plaintext[:16] not in ciphertext
    if len(associated_data) >= 16:
        # Associated data is authenticated, not stored.
        assert associated_data not in ciphertext


@given(text=st.text(min_size=16, max_size=200))
def test_text_plaintext_never_appears_in_ciphertext(text: str) -> None:
    ciphertext = RING.encrypt_str(text, AD)
    assert text.encode() not in ciphertext
