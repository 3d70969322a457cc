"""Sage Intacct Platform Trigger webhook bodies: the suggested template and tolerated variants."""

from datetime import UTC, datetime

import orjson
import pytest

from fanout.changes import CONNECTION_ACCOUNT, ParseError, ProviderChange
from fanout.parsers import PARSERS, sage_intacct
from fanout.vocabulary import normalize
from provider_auth.providers import Provider


def test_sage_intacct_is_registered() -> None:
    assert PARSERS[Provider.SAGE_INTACCT] is sage_intacct.parse


def test_suggested_trigger_body() -> None:
    body = orjson.dumps(
        {
            "object": "ARINVOICE",
            "key": "4211",
            "action": "set",
            "companyId": "acme-corp",
            "whenModified": "2025-03-04T05:06:07Z",
            "idempotencyKey": "b3f1c0de-1",
        }
    )
    assert sage_intacct.parse(body) == [
        ProviderChange(
            provider_account_id="acme-corp",
            entity="ARINVOICE",
            entity_id="4211",
            operation="set",
            occurred_at=datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC),
            event_id="b3f1c0de-1",
        )
    ]
    normalized = normalize(Provider.SAGE_INTACCT, sage_intacct.parse(body)[0])
    assert (normalized.entity, normalized.operation) == ("invoice", "updated")


def test_rest_style_nested_record_and_case_variants() -> None:
    body = orjson.dumps(
        {
            "OBJECT_NAME": "accounts-payable/vendor",
            "EVENT_TYPE": "create",
            "data": {
                "key": 88,
                "id": "V-0088",
                "audit": {"modifiedDateTime": "2025-03-04T05:06:07.123-05:00"},
            },
        }
    )
    change = sage_intacct.parse(body)[0]
    assert (change.entity_id, change.attributes) == ("88", {"id": "V-0088"})
    assert change.provider_account_id == CONNECTION_ACCOUNT
    assert change.occurred_at == datetime(2025, 3, 4, 10, 6, 7, 123000, tzinfo=UTC)
    normalized = normalize(Provider.SAGE_INTACCT, change)
    assert (normalized.entity, normalized.contact_type, normalized.operation) == (
        "contact",
        "vendor",
        "created",
    )


def test_batches_and_arrays() -> None:
    one = {"object": "APBILL", "RECORDNO": "1", "action": "delete", "company_id": "c1"}
    two = {"objectType": "GLBATCH", "recordNumber": "2", "companyId": "c1"}
    for body in (orjson.dumps({"events": [one, two]}), orjson.dumps([one, two])):
        normalized = [normalize(Provider.SAGE_INTACCT, c) for c in sage_intacct.parse(body)]
        assert [(n.entity, n.entity_id, n.operation) for n in normalized] == [
            ("bill", "1", "deleted"),
            ("journal_entry", "2", "updated"),
        ]


def test_xml_api_time_is_left_out_rather_than_guessed() -> None:
    body = orjson.dumps({"object": "CUSTOMER", "key": "5", "whenModified": "03/04/2025 05:06:07"})
    assert sage_intacct.parse(body)[0].occurred_at is None


@pytest.mark.parametrize(
    "body",
    [
        b'"x"',
        b"{}",
        b'{"object": "ARINVOICE"}',
        b'{"key": "1"}',
        b'{"object": "ARINVOICE", "key": {"a": 1}}',
        b'{"object": 3.5, "key": "1"}',
        b'{"events": [{"object": "ARINVOICE", "key": "1"}, null]}',
    ],
)
def test_malformed_bodies_raise_parse_error(body: bytes) -> None:
    with pytest.raises(ParseError):
        sage_intacct.parse(body)
