"""The samples `send-sample` posts: each verifies with its provider's scheme (and Standard Webhooks
with the official library too), parses with its fan-out parser into changes of the account it names,
in the unified vocabulary; the dev Sage Intacct key `dev` trusts and `send-sample` signs with."""

import os
import random
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook

from fanout.parsers import PARSERS
from fanout.parsers.freshbooks import callback_verification
from fanout.vocabulary import STANDARD_OPERATIONS, UNIFIED_ENTITIES, normalize
from gateway.dev import samples
from gateway.dev.jwt_key import (
    DEV_AUDIENCE,
    DEV_ISSUER,
    KEY_FILE,
    DevKeyMissing,
    dev_sage_intacct_settings,
    dev_sage_intacct_token,
)
from gateway.dev.secrets import DEV_CONNECTION_SECRETS, DEV_SECRETS
from gateway.ingress.verification import FreshBooksHandshake
from provider_auth.providers import Provider
from provider_auth.webhooks import JwtBearer, Verdict
from provider_auth.webhooks.registry import SecretHolder, check_secret, scheme_for, signing

SEEDS = range(40)  # enough draws to meet every entity and operation a builder picks from
ACCOUNT = "acct-7f3a"

Sample = Callable[[random.Random], samples.SignedSample]

SIGNED: dict[Provider, Sample] = {
    Provider.QUICKBOOKS: lambda rng: samples.signed_quickbooks(
        samples.quickbooks_cloudevents(ACCOUNT, 3, rng), DEV_SECRETS["quickbooks_verifier_tokens"]
    ),
    Provider.XERO: lambda rng: samples.signed_xero(
        samples.xero_events(ACCOUNT, 3, rng), DEV_SECRETS["xero_webhook_keys"]
    ),
    Provider.ZOHO_BOOKS: lambda rng: samples.signed_zoho(
        samples.zoho_books_event(ACCOUNT, rng), DEV_SECRETS["zoho_books_webhook_secret"]
    ),
    Provider.FRESHBOOKS: lambda rng: samples.signed_freshbooks(
        samples.freshbooks_event(ACCOUNT, rng), DEV_SECRETS["freshbooks_verifier"]
    ),
    Provider.NETSUITE: lambda rng: samples.signed_standard(
        samples.standard_event(ACCOUNT, netsuite=True, rng=rng), DEV_SECRETS["netsuite_webhook_secret"]
    ),
    Provider.CUSTOM: lambda rng: samples.signed_standard(
        samples.standard_event(ACCOUNT, rng=rng), DEV_SECRETS["custom_webhook_secret"]
    ),
}

DEV_SECRET_OF = {
    Provider.QUICKBOOKS: DEV_SECRETS["quickbooks_verifier_tokens"],
    Provider.XERO: DEV_SECRETS["xero_webhook_keys"],
    **{Provider(slug): DEV_SECRETS[name] for slug, name in DEV_CONNECTION_SECRETS.items()},
}


@pytest.mark.parametrize("provider", list(SIGNED), ids=str)
def test_each_sample_verifies_and_parses_into_changes_of_its_account(provider: Provider) -> None:
    scheme = scheme_for(provider, [DEV_SECRET_OF[provider]])
    other = "whsec_b3RoZXIta2V5" if DEV_SECRET_OF[provider].startswith("whsec_") else "x" * 20
    wrong = scheme_for(provider, [other])
    entities, operations = set(), set()
    for seed in SEEDS:
        sample = SIGNED[provider](random.Random(seed))
        assert scheme.verify(sample.body, sample.headers) is Verdict.OK
        assert wrong.verify(sample.body, sample.headers) is Verdict.MISMATCH
        changes = PARSERS[provider](sample.body)
        assert changes
        for change in changes:
            assert change.provider_account_id == ACCOUNT
            normalized = normalize(provider, change)
            entities.add(normalized.entity)
            operations.add(normalized.operation)
    # Every entity a sample names is one of the vocabulary's (QuickBooks samples also carry an
    # Estimate, kept under its own name), every operation a standard one.
    assert entities - {"estimate"} <= set(UNIFIED_ENTITIES), entities - set(UNIFIED_ENTITIES)
    assert operations <= set(STANDARD_OPERATIONS), operations - set(STANDARD_OPERATIONS)
    assert len(entities) >= 3


@pytest.mark.parametrize("provider", [Provider.NETSUITE, Provider.CUSTOM], ids=str)
def test_standard_webhooks_samples_verify_with_the_official_library(provider: Provider) -> None:
    sample = SIGNED[provider](random.Random(1))
    secret = DEV_SECRET_OF[provider]
    assert Webhook(secret).verify(sample.body, sample.headers) is not None
    assert sample.headers["webhook-id"] and int(sample.headers["webhook-timestamp"]) > 0


def test_standard_samples_follow_the_documented_body() -> None:
    netsuite = PARSERS[Provider.NETSUITE](
        samples.standard_event("TSTDRV1", netsuite=True, rng=random.Random(3))
    )
    custom = PARSERS[Provider.CUSTOM](samples.standard_event("c-1", rng=random.Random(3)))
    assert netsuite[0].occurred_at is not None and custom[0].occurred_at is not None
    assert netsuite[0].event_id is None  # the SuiteScript of docs/events.md sends no event id
    assert custom[0].event_id is not None and custom[0].event_id.startswith("evt_")


def test_the_freshbooks_handshake_carries_the_verifier_and_no_change() -> None:
    verifier = DEV_SECRETS["freshbooks_verifier"]
    body = samples.freshbooks_verify(verifier, "314159", ACCOUNT)
    handshake = callback_verification(body)
    assert handshake is not None
    assert (handshake.verifier, handshake.callback_id, handshake.account_id) == (verifier, "314159", ACCOUNT)
    sample = samples.unsigned_form(body)
    assert FreshBooksHandshake().verify(sample.body, sample.headers) is Verdict.OK
    assert "x-freshbooks-hmac-sha256" not in sample.headers
    assert PARSERS[Provider.FRESHBOOKS](body) == []


def test_dev_connection_secrets_have_the_form_each_provider_takes() -> None:
    for slug, name in DEV_CONNECTION_SECRETS.items():
        provider = Provider(slug)
        assert signing(provider).holder is SecretHolder.CONNECTION
        check_secret(provider, DEV_SECRETS[name])  # raises for a secret of the wrong form
    zoho = DEV_SECRETS["zoho_books_webhook_secret"]
    assert zoho.isalnum() and 12 <= len(zoho) <= 50  # as Zoho asks (docs/providers.md, Zoho Books)
    # Every per-connection provider with a secret has a dev one.
    with_secrets = {p.value for p in Provider if signing(p).holder is SecretHolder.CONNECTION}
    assert set(DEV_CONNECTION_SECRETS) == with_secrets


def _without_jwt_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("LEDGERHOOK_SAGE_INTACCT_JWT_"):
            monkeypatch.delenv(name)


def test_the_dev_sage_intacct_key_signs_what_dev_accepts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _without_jwt_settings(monkeypatch)
    data_dir = tmp_path / "state"
    settings = dev_sage_intacct_settings(data_dir)
    key_file = data_dir / KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert settings["sage_intacct_jwt_issuer"] == DEV_ISSUER
    assert settings["sage_intacct_jwt_audience"] == DEV_AUDIENCE
    assert "PRIVATE" not in settings["sage_intacct_jwt_keys"]
    # The same key on every start: a running `send-sample` and a restarted `dev` agree.
    assert dev_sage_intacct_settings(data_dir) == settings

    scheme = JwtBearer.create(
        settings["sage_intacct_jwt_keys"],
        issuer=settings["sage_intacct_jwt_issuer"],
        audience=settings["sage_intacct_jwt_audience"],
    )
    body = samples.sage_intacct_event("acme-corp", random.Random(5))
    sample = samples.signed_bearer(body, dev_sage_intacct_token(data_dir))
    assert scheme.verify(sample.body, sample.headers) is Verdict.OK
    stale = samples.signed_bearer(body, dev_sage_intacct_token(data_dir, now=1_000_000_000))
    assert scheme.verify(stale.body, stale.headers) is Verdict.STALE
    # Another data folder's key is not trusted.
    dev_sage_intacct_settings(tmp_path / "other")
    foreign = samples.signed_bearer(body, dev_sage_intacct_token(tmp_path / "other"))
    assert scheme.verify(foreign.body, foreign.headers) is Verdict.MISMATCH

    changes = PARSERS[Provider.SAGE_INTACCT](body)
    assert [c.provider_account_id for c in changes] == ["acme-corp"]
    assert normalize(Provider.SAGE_INTACCT, changes[0]).entity in UNIFIED_ENTITIES
    assert changes[0].occurred_at is not None and changes[0].event_id


def test_sage_intacct_samples_cover_the_vocabulary() -> None:
    seen = set()
    for seed in SEEDS:
        for change in PARSERS[Provider.SAGE_INTACCT](samples.sage_intacct_event("c", random.Random(seed))):
            normalized = normalize(Provider.SAGE_INTACCT, change)
            assert normalized.entity in UNIFIED_ENTITIES and normalized.operation in STANDARD_OPERATIONS
            seen.add(normalized.entity)
    assert len(seen) >= 4


def test_without_a_dev_key_the_token_says_so(tmp_path: Path) -> None:
    with pytest.raises(DevKeyMissing):
        dev_sage_intacct_token(tmp_path)


def test_configured_jwt_settings_leave_the_dev_key_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _without_jwt_settings(monkeypatch)
    monkeypatch.setenv("LEDGERHOOK_SAGE_INTACCT_JWT_ISSUER", "https://intacct.example.test")
    # Keys, issuer and audience go together: the environment's alone, no dev key made.
    assert dev_sage_intacct_settings(tmp_path) == {}
    assert not (tmp_path / KEY_FILE).exists()
