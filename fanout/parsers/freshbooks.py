"""FreshBooks webhook payloads: one form-encoded event per request, and the `callback.verify` handshake.

`name` is `<entity>.<operation>`, `object_id` the record, `account_id` the account; there is no
timestamp. The handshake carries no change: its verifier must be PUT back to FreshBooks, which then
signs every delivery with it (docs/providers.md, FreshBooks). A repeated field counts once, with its
first value, as in the signature check (`provider_auth.webhooks.freshbooks`).
"""

from dataclasses import dataclass
from urllib.parse import parse_qsl

from fanout.changes import CONNECTION_ACCOUNT, ParseError, ProviderChange

VERIFY_EVENT = "callback.verify"
# Form fields kept as provider extras on the change.
_EXTRAS = ("business_id", "identity_id", "user_id")


@dataclass(frozen=True, slots=True)
class CallbackVerification:
    """A `callback.verify` handshake: the callback to confirm and the code to send back."""

    callback_id: str | None
    verifier: str
    account_id: str | None = None


def parse(body: bytes) -> list[ProviderChange]:
    """The change in a FreshBooks delivery; [] for the `callback.verify` handshake."""
    fields = _form(body)
    name = fields.get("name", "").strip()
    if not name:
        raise ParseError("form has no name field")
    if name == VERIFY_EVENT:
        return []
    entity, _, operation = name.partition(".")
    if not entity or not operation:
        raise ParseError("name must look like <entity>.<operation>")
    object_id = fields.get("object_id", "").strip()
    if not object_id:
        raise ParseError("form has no object_id field")
    account = fields.get("account_id", "").strip()
    return [
        ProviderChange(
            # Deliveries come in on the connection's own URL; account_id is there in practice.
            provider_account_id=account or CONNECTION_ACCOUNT,
            entity=entity,
            entity_id=object_id,
            operation=operation,
            occurred_at=None,  # FreshBooks sends no timestamp
            attributes={key: fields[key].strip() for key in _EXTRAS if fields.get(key, "").strip()},
        )
    ]


def callback_verification(body: bytes) -> CallbackVerification | None:
    """The handshake in `body` when it is a `callback.verify` with a verifier, else None. Never raises."""
    try:
        fields = _form(body)
    except ParseError:
        return None
    verifier = fields.get("verifier", "")
    if fields.get("name", "").strip() != VERIFY_EVENT or not verifier.strip():
        return None
    return CallbackVerification(
        callback_id=fields.get("object_id", "").strip() or None,
        # The code is a secret used as sent: not trimmed or altered.
        verifier=verifier,
        account_id=fields.get("account_id", "").strip() or None,
    )


def verification_code(body: bytes) -> str | None:
    """The verifier of a `callback.verify` body, or None for any other body. Never raises."""
    handshake = callback_verification(body)
    return handshake.verifier if handshake else None


def _form(body: bytes) -> dict[str, str]:
    """Form fields, first value per name; ParseError when the body or a field is not UTF-8."""
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise ParseError("body is not a UTF-8 form") from None
    fields: dict[str, str] = {}
    for key, value in pairs:
        fields.setdefault(key, value)
    return fields
