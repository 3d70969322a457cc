"""Property tests for every parser: hostile input is a ParseError or sound changes, never a crash;
generated valid payloads come back exactly as generated."""

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fanout.changes import CONNECTION_ACCOUNT, ParseError, ProviderChange
from fanout.parsers import PARSERS, freshbooks
from fanout.vocabulary import normalize
from provider_auth.providers import Provider

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ROUND_TRIP = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_NAME = re.compile(r"[a-z0-9]+(?:_[a-z0-9]+)*")


def sound_changes(provider: Provider, body: bytes) -> list[ProviderChange] | None:
    """The parser's changes after checking every invariant, or None for a ParseError.

    Any other exception fails the test: that is the property.
    """
    parser = PARSERS[provider]
    try:
        changes = parser(body)
    except ParseError:
        return None
    assert isinstance(changes, list)
    for change in changes:
        assert isinstance(change, ProviderChange)
        for value in (change.provider_account_id, change.entity, change.entity_id, change.operation):
            assert isinstance(value, str)
            assert value.strip()
        for optional in (change.event_id, change.merged_away_id):
            assert optional is None or (isinstance(optional, str) and optional.strip())
        if change.occurred_at is not None:
            assert change.occurred_at.utcoffset() == timedelta(0)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in change.attributes.items())
        normalized = normalize(provider, change)
        assert _NAME.fullmatch(normalized.entity)
        assert _NAME.fullmatch(normalized.operation)
        assert normalized.contact_type in (None, "customer", "vendor")
    assert parser(body) == changes  # pure: same bytes, same changes
    return changes


# --- hostile values ------------------------------------------------------------------------------

_HUGE = st.builds(
    lambda unit, count: unit * count,
    st.sampled_from(["x", "é", "\u202e", "🧾", " ", "\x00", "\ud800", "0"]),
    st.integers(min_value=1_000, max_value=60_000),
)
_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),  # beyond 64 bits too
    st.floats(),  # NaN and infinities are written as non-JSON tokens
    st.text(max_size=30),
    _HUGE,
)
JSON = st.recursive(
    _LEAF,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
MISSING = object()


def dumps(value: Any) -> bytes:
    """JSON bytes as a careless sender would write them (NaN, huge integers, escaped surrogates)."""
    return json.dumps(_present(value), allow_nan=True).encode()


def _present(value: Any) -> Any:
    """`value` without the MISSING markers (a missing list element or key is left out)."""
    if isinstance(value, dict):
        return {key: _present(item) for key, item in value.items() if item is not MISSING}
    if isinstance(value, list):
        return [_present(item) for item in value if item is not MISSING]
    return None if value is MISSING else value


def hostile(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A field value that is sometimes right, sometimes any JSON at all, sometimes missing."""
    return st.one_of(valid, JSON, st.just(MISSING))


def obj(**fields: Any) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if value is not MISSING}


# --- valid values ----------------------------------------------------------------------------------

TOKEN = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zs", "Zl", "Zp")),
    min_size=1,
    max_size=16,
).filter(lambda s: s == s.strip() and s.strip())
DOTLESS = TOKEN.filter(lambda s: "." not in s)
IDENT = st.from_regex(r"[a-z][a-z0-9_]{0,15}", fullmatch=True)
ID = st.one_of(TOKEN, st.integers(min_value=0, max_value=2**63 - 1))
MOMENT = st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC))


def text_of(value: str | int) -> str:
    return str(value)


@st.composite
def rendered_time(draw: st.DrawFn) -> tuple[str, datetime]:
    """A timestamp in one of the provider forms, and the instant it stands for."""
    moment = draw(MOMENT)
    minutes = draw(st.integers(min_value=-12 * 60, max_value=14 * 60))
    local = moment.astimezone(timezone(timedelta(minutes=minutes)))
    sign = "-" if minutes < 0 else "+"
    hours, mins = divmod(abs(minutes), 60)
    form = draw(st.sampled_from(["legacy", "colon", "nanos", "z", "naive"]))
    if form == "legacy":  # 2015-10-05T14:42:19.123456-0700
        return local.strftime("%Y-%m-%dT%H:%M:%S.%f") + f"{sign}{hours:02d}{mins:02d}", moment
    if form == "colon":
        return local.isoformat(timespec="microseconds"), moment
    if form == "nanos":
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "789Z", moment
    if form == "z":
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), moment
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f"), moment  # Xero: no offset, UTC


def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


# --- every parser: arbitrary input -----------------------------------------------------------------

ALL = sorted(PARSERS, key=str)


def test_every_provider_has_a_parser() -> None:
    assert set(PARSERS) == set(Provider)


@pytest.mark.parametrize("provider", ALL)
@FUZZ
@given(body=st.binary(max_size=2_000))
def test_arbitrary_bytes(provider: Provider, body: bytes) -> None:
    sound_changes(provider, body)


@pytest.mark.parametrize("provider", ALL)
@FUZZ
@given(value=JSON)
def test_arbitrary_json(provider: Provider, value: Any) -> None:
    sound_changes(provider, dumps(value))


@pytest.mark.parametrize("provider", ALL)
@FUZZ
@given(
    value=st.dictionaries(st.sampled_from(["events", "eventNotifications", "data", "invoice", "type"]), JSON)
)
def test_arbitrary_json_under_the_keys_parsers_look_for(provider: Provider, value: Any) -> None:
    sound_changes(provider, dumps(value))


# --- structurally valid payloads with hostile field values -----------------------------------------


@st.composite
def hostile_quickbooks_legacy(draw: st.DrawFn) -> Any:
    entity = st.builds(
        obj,
        name=hostile(st.sampled_from(["Customer", "Invoice", "TimeActivity"])),
        id=hostile(ID),
        operation=hostile(st.sampled_from(["Create", "Merge", "Void"])),
        lastUpdated=hostile(rendered_time().map(lambda pair: pair[0])),
        deletedId=hostile(ID),
    )
    notification = st.builds(
        obj,
        realmId=hostile(ID),
        dataChangeEvent=hostile(st.builds(obj, entities=hostile(st.lists(hostile(entity), max_size=3)))),
    )
    return {"eventNotifications": draw(hostile(st.lists(hostile(notification), max_size=3)))}


@st.composite
def hostile_quickbooks_cloudevents(draw: st.DrawFn) -> Any:
    event = st.builds(
        obj,
        specversion=hostile(st.just("1.0")),
        id=hostile(TOKEN),
        type=hostile(st.builds("qbo.{}.{}.v1".format, DOTLESS, DOTLESS)),
        time=hostile(rendered_time().map(lambda pair: pair[0])),
        intuitentityid=hostile(ID),
        intuitaccountid=hostile(ID),
        data=hostile(st.builds(obj, deletedid=hostile(ID))),
    )
    return draw(st.lists(hostile(event), max_size=4))


@st.composite
def hostile_xero(draw: st.DrawFn) -> Any:
    event = st.builds(
        obj,
        resourceId=hostile(ID),
        eventDateUtc=hostile(rendered_time().map(lambda pair: pair[0])),
        eventType=hostile(st.sampled_from(["CREATE", "UPDATE"])),
        eventCategory=hostile(st.sampled_from(["CONTACT", "INVOICE", "CREDITNOTE"])),
        tenantId=hostile(TOKEN),
        tenantType=hostile(st.just("ORGANISATION")),
        data=hostile(st.builds(obj, Type=hostile(TOKEN), Status=hostile(TOKEN))),
    )
    return obj(events=draw(hostile(st.lists(hostile(event), max_size=4))), entropy=draw(hostile(TOKEN)))


@st.composite
def hostile_zoho_books(draw: st.DrawFn) -> Any:
    entity = draw(st.one_of(st.sampled_from(["invoice", "contact", "creditnote", "vendorpayment"]), IDENT))
    record = obj(
        **{f"{entity}_id": draw(hostile(ID))},
        id=draw(hostile(ID)),
        payment_id=draw(hostile(ID)),
        last_modified_time=draw(hostile(rendered_time().map(lambda pair: pair[0]))),
        updated_time=draw(hostile(TOKEN)),
        contact_type=draw(hostile(st.sampled_from(["customer", "vendor"]))),
        status=draw(hostile(TOKEN)),
        event_type=draw(hostile(TOKEN)),
        nested=draw(hostile(JSON)),
    )
    document = obj(
        organization_id=draw(hostile(ID)), event_type=draw(hostile(TOKEN)), action=draw(hostile(TOKEN))
    )
    document[entity] = draw(hostile(st.just(record)))
    extra = draw(st.dictionaries(IDENT, JSON, max_size=2))
    return {**extra, **document}


@st.composite
def hostile_standard_event(draw: st.DrawFn) -> Any:
    data = st.builds(
        obj,
        id=hostile(ID),
        entity=hostile(TOKEN),
        updated_at=hostile(rendered_time().map(lambda pair: pair[0])),
        merged_into=hostile(ID),
        contact_type=hostile(TOKEN),
    )
    return draw(
        st.builds(
            obj,
            type=hostile(st.builds("{}.{}".format, TOKEN, TOKEN)),
            id=hostile(TOKEN),
            account_id=hostile(ID),
            timestamp=hostile(rendered_time().map(lambda pair: pair[0])),
            data=hostile(data),
        )
    )


@st.composite
def hostile_standard_events(draw: st.DrawFn) -> Any:
    if draw(st.booleans()):
        return draw(hostile_standard_event())
    return obj(
        account_id=draw(hostile(ID)),
        events=draw(hostile(st.lists(hostile(hostile_standard_event()), max_size=3))),
    )


@st.composite
def hostile_sage_intacct_event(draw: st.DrawFn) -> Any:
    fields = {
        "object": hostile(st.sampled_from(["ARINVOICE", "accounts-payable/vendor"])),
        "RECORDNO": hostile(ID),
        "id": hostile(ID),
        "action": hostile(st.sampled_from(["add", "set", "delete", "a.b."])),
        "companyId": hostile(TOKEN),
        "whenModified": hostile(st.one_of(rendered_time().map(lambda pair: pair[0]), TOKEN)),
        "idempotencyKey": hostile(TOKEN),
        "audit": hostile(st.builds(obj, modifiedDateTime=hostile(TOKEN))),
    }
    event = obj(**{key: draw(value) for key, value in fields.items()})
    nested = obj(**{key: draw(value) for key, value in fields.items()})
    event[draw(st.sampled_from(["data", "record", "payload"]))] = draw(hostile(st.just(nested)))
    return event


@st.composite
def hostile_sage_intacct(draw: st.DrawFn) -> Any:
    shape = draw(st.sampled_from(["one", "list", "batch"]))
    if shape == "one":
        return draw(hostile_sage_intacct_event())
    events = draw(st.lists(hostile(hostile_sage_intacct_event()), max_size=3))
    return events if shape == "list" else {"events": events}


@pytest.mark.parametrize(
    ("provider", "strategy"),
    [
        (Provider.QUICKBOOKS, hostile_quickbooks_legacy()),
        (Provider.QUICKBOOKS, hostile_quickbooks_cloudevents()),
        (Provider.XERO, hostile_xero()),
        (Provider.ZOHO_BOOKS, hostile_zoho_books()),
        (Provider.NETSUITE, hostile_standard_events()),
        (Provider.CUSTOM, hostile_standard_events()),
        (Provider.SAGE_INTACCT, hostile_sage_intacct()),
    ],
    ids=[
        "quickbooks-legacy",
        "quickbooks-cloudevents",
        "xero",
        "zoho-books",
        "netsuite",
        "custom",
        "sage-intacct",
    ],
)
@FUZZ
@given(data=st.data())
def test_hostile_field_values(
    provider: Provider, strategy: st.SearchStrategy[Any], data: st.DataObject
) -> None:
    sound_changes(provider, dumps(data.draw(strategy)))


_FORM_VALUE = st.one_of(
    TOKEN,
    st.text(max_size=30),
    _HUGE.filter(lambda s: "\ud800" not in s),
    st.sampled_from(
        ["", " ", "%", "%ZZ", "%FF", "%C3%28", "&&", "==", "+", "invoice..create", ".", "callback.verify"]
    ),
)


@FUZZ
@given(
    fields=st.lists(
        st.tuples(
            st.sampled_from(
                ["name", "object_id", "account_id", "business_id", "identity_id", "verifier", "x"]
            ),
            _FORM_VALUE,
        ),
        max_size=8,
    ),
    encode=st.booleans(),
)
def test_hostile_freshbooks_forms(fields: list[tuple[str, str]], encode: bool) -> None:
    # Encoded properly, or pasted raw (so that stray %, & and = reach the form reader).
    text = urlencode(fields) if encode else "&".join(f"{key}={value}" for key, value in fields)
    body = text.encode("utf-8", "surrogatepass")
    sound_changes(Provider.FRESHBOOKS, body)
    code = freshbooks.verification_code(body)
    assert code is None or (isinstance(code, str) and code.strip())


@FUZZ
@given(body=st.binary(max_size=500))
def test_verification_code_never_raises(body: bytes) -> None:
    code = freshbooks.verification_code(body)
    assert code is None or isinstance(code, str)


# --- round trips -----------------------------------------------------------------------------------

Expected = list[ProviderChange]
Generated = tuple[bytes, Expected]


@st.composite
def quickbooks_legacy(draw: st.DrawFn) -> Generated:
    notifications, expected = [], []
    for realm in draw(st.lists(ID, max_size=3)):
        entities = []
        for _ in range(draw(st.integers(min_value=0, max_value=4))):
            name = draw(st.one_of(st.sampled_from(["Customer", "Vendor", "CreditMemo", "Estimate"]), TOKEN))
            record = draw(ID)
            operation = draw(
                st.one_of(st.sampled_from(["Create", "Update", "Delete", "Merge", "Void"]), TOKEN)
            )
            when = draw(optional(rendered_time()))
            merged = draw(optional(ID))
            entities.append(
                obj(
                    name=name,
                    id=record,
                    operation=operation,
                    lastUpdated=when[0] if when else MISSING,
                    deletedId=merged if merged is not None else MISSING,
                )
            )
            expected.append(
                ProviderChange(
                    text_of(realm),
                    name,
                    text_of(record),
                    operation,
                    when[1] if when else None,
                    merged_away_id=text_of(merged) if merged is not None else None,
                )
            )
        notifications.append({"realmId": realm, "dataChangeEvent": {"entities": entities}})
    return dumps({"eventNotifications": notifications}), expected


@st.composite
def quickbooks_cloudevents(draw: st.DrawFn) -> Generated:
    events, expected = [], []
    for _ in range(draw(st.integers(min_value=0, max_value=5))):
        entity = draw(st.one_of(st.sampled_from(["customer", "creditmemo", "timeactivity"]), DOTLESS))
        operation = draw(st.one_of(st.sampled_from(["created", "updated", "merged", "voided"]), DOTLESS))
        realm, record, event_id = draw(ID), draw(ID), draw(optional(TOKEN))
        when, merged = draw(optional(rendered_time())), draw(optional(ID))
        events.append(
            obj(
                specversion="1.0",
                id=event_id if event_id is not None else MISSING,
                source="intuit.test",
                type=f"qbo.{entity}.{operation}.v1",
                time=when[0] if when else MISSING,
                intuitentityid=record,
                intuitaccountid=realm,
                data={"deletedid": merged} if merged is not None else {},
            )
        )
        expected.append(
            ProviderChange(
                text_of(realm),
                entity,
                text_of(record),
                operation,
                when[1] if when else None,
                event_id=event_id,
                merged_away_id=text_of(merged) if merged is not None else None,
            )
        )
    return dumps(events), expected


@st.composite
def xero_events(draw: st.DrawFn) -> Generated:
    events, expected = [], []
    for _ in range(draw(st.integers(min_value=0, max_value=5))):
        tenant, record = draw(TOKEN), draw(ID)
        category = draw(st.one_of(st.sampled_from(["CONTACT", "INVOICE", "CREDITNOTE"]), TOKEN))
        kind = draw(st.one_of(st.sampled_from(["CREATE", "UPDATE", "update"]), TOKEN))
        when, tenant_type = draw(optional(rendered_time())), draw(optional(TOKEN))
        credit_type, status = draw(optional(TOKEN)), draw(optional(TOKEN))
        events.append(
            obj(
                resourceUrl="https://api.xero.com/api.xro/2.0/X/1",
                resourceId=record,
                eventDateUtc=when[0] if when else MISSING,
                eventType=kind,
                eventCategory=category,
                tenantId=tenant,
                tenantType=tenant_type if tenant_type is not None else MISSING,
                data=obj(
                    Type=credit_type if credit_type is not None else MISSING,
                    Status=status if status is not None else MISSING,
                ),
            )
        )
        attributes = {}
        if credit_type is not None:
            attributes["type"] = credit_type
        if status is not None:
            attributes["status"] = status
        if tenant_type is not None:
            attributes["tenant_type"] = tenant_type
        expected.append(
            ProviderChange(
                tenant, category, text_of(record), kind, when[1] if when else None, attributes=attributes
            )
        )
    body = {"events": events, "firstEventSequence": 1, "lastEventSequence": len(events), "entropy": "E"}
    return dumps(body), expected


@st.composite
def freshbooks_event(draw: st.DrawFn) -> Generated:
    entity = draw(st.one_of(st.sampled_from(["invoice", "client", "bill_vendor", "payment"]), DOTLESS))
    operation = draw(st.one_of(st.sampled_from(["create", "update", "delete", "sendByEmail"]), TOKEN))
    if f"{entity}.{operation}" == freshbooks.VERIFY_EVENT:
        operation = "update"
    record, account = draw(TOKEN), draw(optional(TOKEN))
    extras = {key: draw(optional(TOKEN)) for key in ("business_id", "identity_id", "user_id")}
    fields = [("name", f"{entity}.{operation}"), ("object_id", record)]
    if account is not None:
        fields.append(("account_id", account))
    fields += [(key, value) for key, value in extras.items() if value is not None]
    fields.append(("unrelated", draw(st.text(max_size=10))))
    fields = draw(st.permutations(fields))
    expected = ProviderChange(
        account if account is not None else CONNECTION_ACCOUNT,
        entity,
        record,
        operation,
        None,
        attributes={key: value for key, value in extras.items() if value is not None},
    )
    return urlencode(fields).encode(), [expected]


@st.composite
def zoho_books_body(draw: st.DrawFn) -> Generated:
    entity, id_field = draw(
        st.one_of(
            st.sampled_from(
                [
                    ("invoice", "invoice_id"),
                    ("contact", "contact_id"),
                    ("creditnote", "creditnote_id"),
                    ("vendorpayment", "payment_id"),
                    ("chartofaccount", "account_id"),
                ]
            ),
            IDENT.filter(lambda s: s != "organization").map(lambda s: (s, f"{s}_id")),
        )
    )
    record, org = draw(ID), draw(optional(ID))
    operation = draw(optional(st.sampled_from(["created", "updated", "deleted", "voided"])))
    prefixed = draw(st.booleans())
    when = draw(optional(rendered_time()))
    contact_type, status = draw(optional(st.sampled_from(["customer", "vendor"]))), draw(optional(TOKEN))
    body = obj(
        **{
            entity: obj(
                **{id_field: record},
                last_modified_time=when[0] if when else MISSING,
                contact_type=contact_type if contact_type is not None else MISSING,
                status=status if status is not None else MISSING,
                total=12.5,
                line_items=[{"item_id": "1"}],
            )
        },
        organization_id=org if org is not None else MISSING,
        event_type=(f"{entity}_{operation}" if prefixed else operation) if operation else MISSING,
    )
    attributes = {}
    if contact_type is not None:
        attributes["contact_type"] = contact_type
    if status is not None:
        attributes["status"] = status
    expected = ProviderChange(
        text_of(org) if org is not None else CONNECTION_ACCOUNT,
        entity,
        text_of(record),
        operation or "updated",
        when[1] if when else None,
        attributes=attributes,
    )
    return dumps(body), [expected]


@st.composite
def standard_event(
    draw: st.DrawFn, default_account: str | None = None
) -> tuple[dict[str, Any], ProviderChange]:
    entity, operation = draw(DOTLESS), draw(DOTLESS)
    namespace = draw(st.sampled_from(["", "accounting.", "netsuite.record."]))
    record, override = draw(ID), draw(optional(TOKEN))
    account, event_id = draw(optional(ID)), draw(optional(TOKEN))
    updated, sent = draw(optional(rendered_time())), draw(optional(rendered_time()))
    merged_into, contact_type = draw(optional(ID)), draw(optional(TOKEN))
    event = obj(
        type=f"{namespace}{entity}.{operation}",
        id=event_id if event_id is not None else MISSING,
        account_id=account if account is not None else MISSING,
        timestamp=sent[0] if sent else MISSING,
        data=obj(
            id=record,
            entity=override if override is not None else MISSING,
            updated_at=updated[0] if updated else MISSING,
            merged_into=merged_into if merged_into is not None else MISSING,
            contact_type=contact_type if contact_type is not None else MISSING,
            amount=1,
        ),
    )
    change = ProviderChange(
        text_of(account) if account is not None else default_account or CONNECTION_ACCOUNT,
        override if override is not None else entity,
        text_of(merged_into) if merged_into is not None else text_of(record),
        operation,
        updated[1] if updated else sent[1] if sent else None,
        event_id=event_id,
        merged_away_id=text_of(record) if merged_into is not None else None,
        attributes={"contact_type": contact_type} if contact_type is not None else {},
    )
    return event, change


@st.composite
def standard_events(draw: st.DrawFn) -> Generated:
    if draw(st.booleans()):
        event, change = draw(standard_event())
        return dumps(event), [change]
    default = draw(optional(TOKEN))
    pairs = draw(st.lists(standard_event(default), max_size=4))
    body = obj(account_id=default if default is not None else MISSING, events=[event for event, _ in pairs])
    return dumps(body), [change for _, change in pairs]


_SAGE_ALIASES = {
    "object": ["object", "objectName", "OBJECT_TYPE", "recordType"],
    "record": ["key", "RECORDNO", "recordNumber", "record_key", "recordId"],
    "action": ["action", "eventType", "EVENT", "operation"],
    "company": ["companyId", "company_id", "COMPANY", "cnyId"],
    "time": ["whenModified", "WHENMODIFIED", "modifiedAt", "updatedAt", "timestamp"],
    "event_id": ["idempotencyKey", "eventId"],
}


@st.composite
def sage_intacct_event(draw: st.DrawFn) -> tuple[dict[str, Any], ProviderChange]:
    values: dict[str, Any] = {
        "object": draw(st.one_of(st.sampled_from(["ARINVOICE", "accounts-payable/vendor"]), TOKEN)),
        "record": draw(ID),
        "action": draw(optional(DOTLESS)),
        "company": draw(optional(TOKEN)),
        "time": draw(optional(rendered_time())),
        "event_id": draw(optional(TOKEN)),
    }
    event: dict[str, Any] = {}
    nested: dict[str, Any] = {}
    for field, value in values.items():
        if value is None:
            continue
        key = draw(st.sampled_from(_SAGE_ALIASES[field]))
        target = nested if draw(st.booleans()) else event
        target[key] = value[0] if field == "time" else value
    if nested:
        event[draw(st.sampled_from(["data", "record", "payload"]))] = nested
    change = ProviderChange(
        values["company"] or CONNECTION_ACCOUNT,
        values["object"],
        text_of(values["record"]),
        values["action"] or "updated",
        values["time"][1] if values["time"] else None,
        event_id=values["event_id"],
    )
    return event, change


@st.composite
def sage_intacct_body(draw: st.DrawFn) -> Generated:
    shape = draw(st.sampled_from(["one", "list", "batch"]))
    if shape == "one":
        event, change = draw(sage_intacct_event())
        return dumps(event), [change]
    pairs = draw(st.lists(sage_intacct_event(), max_size=4))
    events = [event for event, _ in pairs]
    return dumps(events if shape == "list" else {"events": events}), [change for _, change in pairs]


GENERATORS: list[tuple[Provider, Callable[[], st.SearchStrategy[Generated]]]] = [
    (Provider.QUICKBOOKS, quickbooks_legacy),
    (Provider.QUICKBOOKS, quickbooks_cloudevents),
    (Provider.XERO, xero_events),
    (Provider.FRESHBOOKS, freshbooks_event),
    (Provider.ZOHO_BOOKS, zoho_books_body),
    (Provider.NETSUITE, standard_events),
    (Provider.CUSTOM, standard_events),
    (Provider.SAGE_INTACCT, sage_intacct_body),
]


@pytest.mark.parametrize(
    ("provider", "generator"), GENERATORS, ids=[f"{p.value}-{g.__name__}" for p, g in GENERATORS]
)
@ROUND_TRIP
@given(data=st.data())
def test_valid_payloads_round_trip(
    provider: Provider, generator: Callable[[], st.SearchStrategy[Generated]], data: st.DataObject
) -> None:
    body, expected = data.draw(generator())
    assert sound_changes(provider, body) == expected


@ROUND_TRIP
@given(callback_id=TOKEN, verifier=st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=64))
def test_verification_code_round_trips(callback_id: str, verifier: str) -> None:
    body = urlencode({"name": "callback.verify", "object_id": callback_id, "verifier": verifier}).encode()
    assert freshbooks.parse(body) == []
    if verifier.strip():
        assert freshbooks.verification_code(body) == verifier
        handshake = freshbooks.callback_verification(body)
        assert handshake is not None
        assert handshake.callback_id == callback_id
    else:
        assert freshbooks.verification_code(body) is None
