"""Properties of the Zoho and Bearer-JWT schemes: hostile input never raises, an independent signer's
deliveries always verify, and any change to the body or the secret is refused."""

import base64
import hashlib
import hmac
import json
import time
from urllib.parse import urlencode

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.settings import SettingsError, load_settings
from provider_auth.webhooks import JwtBearer, Verdict, ZohoWebhookSignature
from provider_auth.webhooks.jwt_bearer import key_for, load_keys

KEY = ec.generate_private_key(ec.SECP256R1())
JWT_SCHEME = JwtBearer((key_for(KEY.public_key()),))
secrets = st.text(
    st.characters(min_codepoint=48, max_codepoint=122).filter(str.isalnum), min_size=12, max_size=50
)
header_text = st.text(st.characters(min_codepoint=1, max_codepoint=255), max_size=300)


@settings(max_examples=300, deadline=None)
@given(
    body=st.binary(max_size=500),
    value=header_text,
    content_type=st.sampled_from(
        [
            "",
            "application/json",
            "application/x-www-form-urlencoded",
            "application/x-www-form-urlencoded; charset=utf-8",
        ]
    ),
)
def test_hostile_input_never_raises(body: bytes, value: str, content_type: str) -> None:
    zoho = ZohoWebhookSignature.create(["SecretToken12345"])
    headers = {"x-zoho-webhook-signature": value, "content-type": content_type, "authorization": value}
    assert not zoho.verify(body, headers).ok
    assert not JWT_SCHEME.verify(body, headers).ok
    assert not JWT_SCHEME.verify(body, {"authorization": "Bearer " + value}).ok


@settings(max_examples=200, deadline=None)
@given(
    secret=secrets, fields=st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=12), max_size=6)
)
def test_independently_signed_zoho_forms_verify(secret: str, fields: dict[str, str]) -> None:
    body = urlencode(fields).encode()
    content = "".join(key + value for key, value in sorted(fields.items())).encode()
    signature = hmac.new(secret.encode(), content, hashlib.sha256).hexdigest()
    headers = {"x-zoho-webhook-signature": signature, "content-type": "application/x-www-form-urlencoded"}
    scheme = ZohoWebhookSignature.create(["SomeOtherToken99", secret])
    assert scheme.verify(body, headers) is Verdict.OK
    assert scheme.verify(body, headers | {"x-zoho-webhook-signature": signature.upper()}) is Verdict.OK
    assert ZohoWebhookSignature.create([secret + "x"]).verify(body, headers) is Verdict.MISMATCH
    assert scheme.verify(body + b"&extra=1", headers) is Verdict.MISMATCH


@settings(max_examples=100, deadline=None)
@given(secret=secrets, body=st.binary(min_size=1, max_size=300))
def test_independently_signed_zoho_json_verifies_hex_and_base64(secret: str, body: bytes) -> None:
    digest = hmac.new(secret.encode(), body, hashlib.sha256)
    scheme = ZohoWebhookSignature.create([secret])
    for value in (
        digest.hexdigest(),
        "sha256=" + digest.hexdigest(),
        base64.b64encode(digest.digest()).decode(),
    ):
        assert scheme.verify(body, {"x-zoho-webhook-signature": value}) is Verdict.OK
    assert scheme.verify(body + b"!", {"x-zoho-webhook-signature": digest.hexdigest()}) is Verdict.MISMATCH


def test_zoho_payments_style_header_with_tolerance() -> None:
    scheme = ZohoWebhookSignature.create(["SecretToken12345"], clock=lambda: 1_734_340_423.0)
    body = b'{"status":"success"}'
    stamp = "1734340423138"  # milliseconds, as Zoho Payments sends
    signature = hmac.new(b"SecretToken12345", stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert scheme.verify(body, {"x-zoho-webhook-signature": f"t={stamp},v={signature}"}) is Verdict.OK
    late = ZohoWebhookSignature.create(["SecretToken12345"], clock=lambda: 1_734_341_423.0)
    assert late.verify(body, {"x-zoho-webhook-signature": f"t={stamp},v={signature}"}) is Verdict.STALE


@settings(max_examples=50, deadline=None)
@given(claims=st.dictionaries(st.sampled_from(["sub", "jti", "scope"]), st.text(max_size=20), max_size=3))
def test_jwt_verdicts(claims: dict[str, str]) -> None:
    now = int(time.time())
    good = jwt.encode(claims | {"exp": now + 60}, KEY, "ES256")
    assert JWT_SCHEME.verify(b"", {"authorization": f"Bearer {good}"}) is Verdict.OK
    expired = jwt.encode(claims | {"exp": now - 3600}, KEY, "ES256")
    assert JWT_SCHEME.verify(b"", {"authorization": f"Bearer {expired}"}) is Verdict.STALE
    tampered = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    assert not JWT_SCHEME.verify(b"", {"authorization": f"Bearer {tampered}"}).ok


def _pem(key: object, private: bool = False) -> str:
    if private:
        return key.private_bytes(  # type: ignore[attr-defined,no-any-return]
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
    return (
        key.public_key()
        .public_bytes(  # type: ignore[attr-defined,no-any-return]
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        .decode()
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json, not pem",
        "[1, 2]",
        json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}),
        json.dumps([_pem(KEY, private=True)]),
        _pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)),  # noqa: S505 - refused on purpose
        _pem(ec.generate_private_key(ec.SECP384R1())),
    ],
)
def test_unusable_key_settings_are_refused_at_start(text: str) -> None:
    with pytest.raises(ValueError):
        load_keys(text)
    if text:
        with pytest.raises(SettingsError) as caught:
            load_settings(database_url="d", kafka_bootstrap_servers="k", sage_intacct_jwt_keys=text)
        assert "LEDGERHOOK_SAGE_INTACCT_JWT_KEYS" in str(caught.value)
        assert "PRIVATE KEY-----\n" not in str(caught.value)
