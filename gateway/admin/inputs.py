"""What every admin request must pass before a handler reads it: text that PostgreSQL can store (in
JSON bodies, path and query parameters), and only the query parameters its endpoint takes, each
once and not empty.

PostgreSQL's text has no NUL character, and a lone UTF-16 surrogate has no UTF-8 form: both are
refused here, once for every resource, so that they answer 422 with a pointer instead of failing in
the database. The rules: docs/admin-api.md, "Validation".
"""

import json
from collections.abc import Collection
from typing import Any

from starlette.requests import Request

from gateway.admin.problems import pointer, validation_problem

NUL = "must not contain NUL (U+0000)"
SURROGATE = "must not contain a lone surrogate (U+D800 to U+DFFF)"


def unstorable(text: str) -> str | None:
    """Why PostgreSQL cannot store `text`, or None when it can."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return SURROGATE  # the only characters without a UTF-8 form
    return NUL if "\x00" in text else None


def text_errors(document: Any) -> list[dict[str, str]]:
    """A 422 error, with its JSON Pointer, for each member name or string of a JSON document that
    PostgreSQL cannot store (walked without recursion: a document may nest as deep as the parser
    lets it)."""
    errors = []
    pending: list[tuple[tuple[int | str, ...], Any]] = [((), document)]
    while pending:
        location, value = pending.pop()
        if isinstance(value, str):
            reason = unstorable(value)
            if reason is not None:
                errors.append({"pointer": pointer(location), "detail": reason})
        elif isinstance(value, dict):
            for name, member in value.items():
                reason = unstorable(name)
                if reason is not None:
                    errors.append({"pointer": pointer((*location, name)), "detail": "the name " + reason})
                pending.append(((*location, name), member))
        elif isinstance(value, list):
            pending.extend(((*location, index), item) for index, item in enumerate(value))
    return sorted(errors, key=lambda error: error["pointer"])


def lone_surrogate_document(body: bytes) -> Any | None:
    """`body` read as JSON when it holds `\\uD800`-style escapes of lone surrogates (which orjson
    refuses to read, so the caller cannot point at them), else None."""
    try:
        document = json.loads(body.decode(), parse_constant=_refuse)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    errors = text_errors(document)
    return document if any(error["detail"].endswith(SURROGATE) for error in errors) else None


def _refuse(constant: str) -> None:
    raise ValueError(f"{constant} is not JSON")


def check_parameters(request: Request, takes: Collection[str]) -> None:
    """422 naming each path parameter PostgreSQL cannot store, and each query parameter that
    `takes` does not name, is repeated, empty or holds such text."""
    errors = []
    for name, value in request.path_params.items():
        reason = unstorable(value) if isinstance(value, str) else None
        if reason is not None:
            errors.append({"parameter": name, "detail": reason})
    given: dict[str, list[str]] = {}
    for name, value in request.query_params.multi_items():
        given.setdefault(name, []).append(value)
    for name, values in given.items():
        reason = _parameter_problem(name, values, takes)
        if reason is not None:
            errors.append({"parameter": name, "detail": reason})
    if errors:
        raise validation_problem(errors, "the request's parameters are not valid")


def _parameter_problem(name: str, values: list[str], takes: Collection[str]) -> str | None:
    if name not in takes:
        if not takes:
            return "unknown parameter: this endpoint takes no query parameters"
        return "unknown parameter: this endpoint takes " + ", ".join(takes)
    if len(values) > 1:
        return "must be given once"
    if not values[0]:
        return "must not be empty (leave the parameter out instead)"
    return unstorable(values[0])


def page_limit(request: Request, default: int, maximum: int, errors: list[dict[str, str]]) -> int:
    """The `limit` query parameter of a list endpoint: `default` when absent; an error added to
    `errors` (and `default` returned) unless it is an integer from 1 to `maximum`."""
    raw = request.query_params.get("limit")
    if raw is None:
        return default
    if raw.isascii() and raw.isdigit() and 1 <= int(raw) <= maximum:
        return int(raw)
    errors.append({"parameter": "limit", "detail": f"must be an integer from 1 to {maximum}"})
    return default
