"""Errors of the admin API as RFC 9457 problem details (`application/problem+json`).

`type` is `about:blank`, so `title` is the status phrase (RFC 9457, section 4.2.1); a 422 lists each
invalid member in `errors`. The format: docs/admin-api.md, "Errors". No problem ever repeats a
submitted value, so a secret sent by mistake is never echoed.
"""

from http import HTTPStatus
from typing import Any
from urllib.parse import quote

import orjson
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

MEDIA_TYPE = "application/problem+json"
_FRAGMENT_SAFE = "~!$&'()*+,;=:@"  # RFC 3986 fragment characters that need no percent-encoding
# RFC 9110 renamed 422; Python's HTTPStatus has the new phrase only from 3.13.
_PHRASES = {422: "Unprocessable Content"}


def status_phrase(status: int) -> str:
    """The HTTP status phrase of `status` (RFC 9110's wording)."""
    return _PHRASES.get(status) or HTTPStatus(status).phrase


class Problem(Exception):
    """An admin API error; raise it from a handler and the app answers with it."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        extensions: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}
        self.extensions = extensions or {}

    def body(self) -> dict[str, Any]:
        """The problem document."""
        document: dict[str, Any] = {
            "type": "about:blank",
            "title": status_phrase(self.status),
            "status": self.status,
            "detail": self.detail,
        }
        if self.errors is not None:
            document["errors"] = self.errors
        return document | self.extensions

    def response(self) -> Response:
        """The problem as an HTTP response."""
        return Response(
            orjson.dumps(self.body()), status_code=self.status, headers=self.headers, media_type=MEDIA_TYPE
        )


def validation_problem(errors: list[dict[str, str]], detail: str = "the request is not valid") -> Problem:
    """A 422 listing each invalid member."""
    return Problem(422, detail, errors=errors)


def pointer(location: tuple[int | str, ...]) -> str:
    """A JSON Pointer (RFC 6901) in URI fragment form for a location in the request body."""
    # surrogatepass: a member name holding a lone surrogate can still be pointed at.
    escaped = (
        quote(str(part).replace("~", "~0").replace("/", "~1"), safe=_FRAGMENT_SAFE, errors="surrogatepass")
        for part in location
    )
    return "#/" + "/".join(escaped) if location else "#"


class ProblemError(BaseModel):
    """One invalid member of a request."""

    model_config = ConfigDict(title="ProblemError")

    pointer: str | None = Field(None, description="JSON Pointer (URI fragment form) into the request body.")
    parameter: str | None = Field(None, description="The invalid query or path parameter.")
    detail: str


class ProblemDetails(BaseModel):
    """The shape of every error answer (RFC 9457), for the OpenAPI document."""

    model_config = ConfigDict(title="ProblemDetails", extra="allow")

    type: str = Field("about:blank", description="Always `about:blank`: the status says the kind.")
    title: str = Field(description="The HTTP status phrase.")
    status: int
    detail: str = Field(description="What went wrong this time.")
    errors: list[ProblemError] | None = Field(None, description="Each invalid member (422 only).")
