"""Zoho Books operation names: the entity prefix is stripped whatever its separators."""

from fanout.parsers.zoho_books import _strip_entity


def test_zoho_operation_after_an_entity_ending_in_an_underscore() -> None:
    # Found by the parser property test: the separator after the entity may repeat.
    assert _strip_entity("a_", "a__created") == "created"
    assert _strip_entity("credit_note", "creditnote_updated") == "updated"
    assert _strip_entity("invoice", "invoice_created") == "created"
