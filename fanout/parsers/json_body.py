"""Shared JSON reading for parsers: one error type, nothing but `ParseError` escapes."""

from datetime import datetime
from typing import Any

import orjson

from fanout.changes import ParseError
from fanout.timestamps import parse_timestamp


def load_json(body: bytes) -> Any:
    """The decoded JSON document, or ParseError."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ParseError(f"body is not JSON: {exc.msg}") from None


def text(obj: dict[str, Any], key: str, *, where: str) -> str:
    """A required non-empty string (numbers accepted and rendered), or ParseError."""
    value = obj.get(key)
    if isinstance(value, str):  # the common case first: this runs for every field of every change
        stripped = value.strip()
        if stripped:
            return stripped
    elif isinstance(value, bool) or value is None:
        raise ParseError(f"{where}: {key} is missing")
    elif isinstance(value, int):
        return str(value)
    raise ParseError(f"{where}: {key} must be a non-empty string")


def optional_text(obj: dict[str, Any], key: str) -> str | None:
    """An optional string (numbers rendered); None for absent or empty."""
    value = obj.get(key)
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def as_object(value: Any, *, where: str) -> dict[str, Any]:
    """`value` when it is a JSON object, else ParseError."""
    if not isinstance(value, dict):
        raise ParseError(f"{where} must be a JSON object")
    return value


def as_list(value: Any, *, where: str) -> list[Any]:
    """`value` when it is a JSON array, else ParseError."""
    if not isinstance(value, list):
        raise ParseError(f"{where} must be a JSON array")
    return value


def timestamp(value: object, where: str) -> datetime:
    """A required provider timestamp (`fanout.timestamps.parse_timestamp`), or ParseError."""
    if value is None:
        raise ParseError(f"{where} is missing")
    if not isinstance(value, str):
        raise ParseError(f"{where} must be a string")
    try:
        return parse_timestamp(value)
    except (ValueError, OverflowError):
        raise ParseError(f"{where} is unreadable") from None


def optional_timestamp(value: object, where: str) -> datetime | None:
    """A provider timestamp when present, or ParseError for one that cannot be read."""
    return None if value is None else timestamp(value, where)
