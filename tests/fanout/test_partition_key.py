"""The request path's quick look at a payload agrees with the full parsers, and never raises."""

import random

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from fanout.parsers import PARSERS
from fanout.partition_key import Summary, summarize
from gateway.dev import samples
from provider_auth.providers import Provider


def full(provider: Provider, body: bytes) -> Summary:
    """What the full parser says: the single account and, for a one-event batch, its event id."""
    changes = PARSERS[provider](body)
    accounts = {c.provider_account_id for c in changes}
    events = {c.event_id for c in changes if c.event_id}
    return Summary(
        accounts.pop() if len(accounts) == 1 else None,
        events.pop() if len(events) == 1 and len(changes) == 1 else None,
    )


@settings(max_examples=200)
@given(
    seed=st.integers(0, 2**32),
    count=st.integers(1, 8),
    accounts=st.integers(1, 3),
    kind=st.sampled_from(["cloudevents", "legacy", "xero"]),
)
def test_peek_agrees_with_the_parser_on_valid_payloads(
    seed: int, count: int, accounts: int, kind: str
) -> None:
    rng = random.Random(seed)
    ids = [str(rng.randint(1, 10**12)) for _ in range(accounts)]
    if kind == "xero":
        provider = Provider.XERO
        parts = [orjson.loads(samples.xero_events(i, count, rng)) for i in ids]
        body = orjson.dumps({**parts[0], "events": [e for p in parts for e in p["events"]]})
    else:
        provider = Provider.QUICKBOOKS
        build = samples.quickbooks_cloudevents if kind == "cloudevents" else samples.quickbooks_legacy
        if kind == "cloudevents":
            body = orjson.dumps([e for i in ids for e in orjson.loads(build(i, count, rng))])
        else:
            notes = [n for i in ids for n in orjson.loads(build(i, count, rng))["eventNotifications"]]
            body = orjson.dumps({"eventNotifications": notes})
    assert summarize(provider, body) == full(provider, body)
    assert (summarize(provider, body).account_id is not None) == (len(set(ids)) == 1)


def test_intent_to_receive_and_per_connection_providers_name_no_account() -> None:
    assert summarize(Provider.XERO, samples.xero_intent_to_receive()) == Summary()
    assert summarize(Provider.ZOHO_BOOKS, b'{"organization_id": "1"}') == Summary()


@given(
    body=st.one_of(
        st.binary(max_size=500),
        st.recursive(
            st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(
                    st.sampled_from(
                        ["eventNotifications", "realmId", "events", "tenantId", "intuitaccountid", "id", "x"]
                    ),
                    inner,
                    max_size=4,
                )
            ),
            max_leaves=20,
        ).map(orjson.dumps),
    ),
    provider=st.sampled_from([Provider.QUICKBOOKS, Provider.XERO]),
)
def test_peek_never_raises(body: bytes, provider: Provider) -> None:
    summary = summarize(provider, body)
    assert summary.account_id is None or isinstance(summary.account_id, str)
