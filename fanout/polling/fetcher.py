"""The one component that sends a `PageRequest` to a provider and hands back the body of its answer.

Each request holds a rate-budget permit for its provider account while it runs, carries the
connection's access token, and meets the provider's answers the same way for every provider: a 429
parks the account's budget as `fanout.polling.budget` says and waits the park out, 5xx and network
failures back off, a 401 gets one refreshed token. What is left is a typed `FetchError` saying
whether the poll may be tried again later. The rules: docs/architecture.md, "Rate budgets".
"""

import asyncio
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol, assert_never

import aiohttp
import orjson

from fanout.polling.budget import BudgetTimeout, Kind, RateBudgets, backoff_seconds, retry_after_seconds
from fanout.polling.pages import PageRequest, PollTarget
from provider_auth.providers import Provider
from provider_auth.tokens.errors import (
    ConnectionPaused,
    NoCredentials,
    ProviderNotConfigured,
    ReauthRequired,
    TokenError,
    TokenUnavailable,
)

__all__ = [
    "FetchError",
    "NotAuthorized",
    "PageFetcher",
    "PollTokens",
    "Refused",
    "RequestObserver",
    "RequestOutcome",
    "Throttled",
    "Unavailable",
]

log = logging.getLogger("ledgerhook.fanout.polling")

RequestOutcome = Literal[
    "ok", "throttled", "server_error", "timeout", "connection_error", "unauthorized", "refused"
]
"""What became of one HTTP request: a 2xx (or 304), a 429, a 5xx (or 408), no answer in time, no
connection, a 401, any other status."""

RequestObserver = Callable[[Provider, RequestOutcome], None]
"""Called once per HTTP request sent, with its outcome (the engine turns these into metrics)."""

# The longest detail a provider's refusal is reported with.
DETAIL_LIMIT = 200
# Keys whose values say what went wrong in the providers' error bodies, and no more than that
# (QuickBooks `Fault.Error[].code/Message`, Xero `Title/Detail`, Zoho `code/message`, FreshBooks
# `errno/message`, NetSuite `title/o:errorCode`).
_ERROR_KEYS = frozenset(
    {"code", "errorcode", "o:errorcode", "errno", "error", "type", "title", "message", "detail"}
)
_XML_CODE = re.compile(rb'\bcode="([^"]{1,40})"')
_XML_MESSAGE = re.compile(rb"<Message>([^<]{1,200})</Message>")

# Zoho Books wants its own scheme, `Zoho-oauthtoken <token>`; every other provider takes a Bearer
# token (docs/providers.md, Zoho Books).
_AUTH_SCHEMES: dict[Provider, str] = {Provider.ZOHO_BOOKS: "Zoho-oauthtoken"}
_BEARER = "Bearer"


class PollTokens(Protocol):
    """Access tokens for the connection a poll runs for, with the API base URL they are good at."""

    async def access(self, connection_id: str) -> tuple[str, str]:
        """(access token, API base URL) for the connection; raises a `TokenError` when there is none."""
        ...

    async def refreshed(self, connection_id: str) -> tuple[str, str]:
        """(access token, API base URL) after the provider refused the last token handed out (401):
        a token refreshed now, not the cached one; raises a `TokenError` when none can be had."""
        ...


class FetchError(Exception):
    """A page that could not be fetched. `retry_later` says whether the same poll may succeed if
    tried again later (after `retry_after` seconds when given). Never carries a token or a body."""

    retry_later: ClassVar[bool] = True

    def __init__(
        self,
        provider: Provider,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.status = status
        self.retry_after = retry_after


class Throttled(FetchError):
    """The provider answered 429 past the retries, or the account's budget stays parked longer than
    the fetcher waits for a permit; `retry_after` says when the budget opens again."""


class Unavailable(FetchError):
    """5xx, timeouts or connection failures past the retries, or a token that cannot be refreshed
    right now (the provider's token endpoint is down)."""


class NotAuthorized(FetchError):
    """The provider refused a refreshed token too, or the token layer says the connection cannot be
    used (reauthorization needed, no credentials, paused): stop polling the account until it is
    active again. Where the grant broke, the token layer already reported it
    (`integrated_account:authentication_error`). `reason` is the token layer's, when it gave one."""

    retry_later: ClassVar[bool] = False

    def __init__(self, provider: Provider, message: str, *, status: int | None = None, reason: str) -> None:
        super().__init__(provider, message, status=status)
        self.reason = reason


class Refused(FetchError):
    """Any other 4xx: the same request would be refused again. `detail` is the provider's error code
    and message, at most 200 characters."""

    retry_later: ClassVar[bool] = False

    def __init__(self, provider: Provider, status: int, detail: str) -> None:
        message = f"{provider.value} refused the request: {status}" + (f" ({detail})" if detail else "")
        super().__init__(provider, message, status=status)
        self.detail = detail


@dataclass(frozen=True, slots=True)
class _Answer:
    """One request's fate: the provider's answer, or none (`timeout`, `connection_error`)."""

    outcome: RequestOutcome
    status: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""


class PageFetcher:
    """Sends `PageRequest`s on the process's aiohttp session, within the rate budgets.

    `timeout` bounds one HTTP request (keep it under the budgets' `permit_lifetime`); `retries` is
    how many times one page is asked again after a 429, a 5xx or a network failure, in all (the one
    retry with a refreshed token after a 401 is not counted); `permit_wait` is the longest wait for a
    budget permit before the fetch gives up as `Throttled`; `backoff_base` and `backoff_cap` shape
    the back-off between failed attempts (see `backoff_seconds`).
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        budgets: RateBudgets,
        tokens: PollTokens,
        *,
        timeout: float = 30.0,
        retries: int = 3,
        permit_wait: float = 30.0,
        backoff_base: float = 1.0,
        backoff_cap: float = 60.0,
        observe: RequestObserver | None = None,
    ) -> None:
        if retries < 0:
            raise ValueError("retries must not be negative")
        self.session = session
        self.budgets = budgets
        self.tokens = tokens
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.retries = retries
        self.permit_wait = permit_wait
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.observe = observe

    async def fetch(
        self,
        provider: Provider,
        connection_id: str,
        target: PollTarget,
        request: PageRequest,
        kind: Kind = "poll",
    ) -> bytes:
        """The body of the provider's 2xx answer to `request`, sent with the connection's token
        (b"" for a 304 Not Modified, which the provider modules read as an empty last page).

        Raises Throttled, Unavailable, NotAuthorized or Refused (all `FetchError`).
        """
        token, base_url = await self._token(provider, connection_id, refresh=False)
        refreshed = False
        retried = throttles = failures = 0
        while True:
            answer = await self._send(provider, target, kind, token, base_url, request)
            self._observe(provider, answer.outcome)
            where = {"provider": provider.value, "account": target.account, "status": answer.status}
            match answer.outcome:
                case "ok":
                    return answer.body
                case "unauthorized":
                    if refreshed:
                        message = f"{provider.value} refused a refreshed token"
                        raise NotAuthorized(provider, message, status=401, reason="unauthorized")
                    log.info("token refused; asking for a refreshed one", extra=where)
                    token, base_url = await self._token(provider, connection_id, refresh=True)
                    refreshed = True
                case "throttled":
                    throttle = await self.budgets.park_after_429(
                        provider, target.account, answer.headers, throttles
                    )
                    throttles += 1
                    if retried >= self.retries:
                        message = f"{provider.value} answered 429"
                        raise Throttled(provider, message, status=429, retry_after=throttle.seconds)
                    retried += 1
                    log.info(
                        "throttled; the account's budget is parked",
                        extra=where | {"scope": throttle.scope, "seconds": round(throttle.seconds, 3)},
                    )
                    # The next permit waits the park out.
                case "server_error" | "timeout" | "connection_error":
                    if retried >= self.retries:
                        message = f"{provider.value}: {answer.outcome} after {retried} retries"
                        raise Unavailable(provider, message, status=answer.status)
                    told = retry_after_seconds(answer.headers.get("Retry-After")) or 0.0
                    delay = max(
                        backoff_seconds(failures, base=self.backoff_base, cap=self.backoff_cap),
                        min(told, self.backoff_cap),
                    )
                    failures += 1
                    retried += 1
                    log.info(
                        "no usable answer; retrying",
                        extra=where | {"outcome": answer.outcome, "delay": round(delay, 3)},
                    )
                    await asyncio.sleep(delay)
                case "refused":
                    assert answer.status is not None
                    raise Refused(provider, answer.status, _safe_detail(answer.body, (token,)))
                case _:
                    assert_never(answer.outcome)

    async def _token(self, provider: Provider, connection_id: str, *, refresh: bool) -> tuple[str, str]:
        """The connection's token and API base URL, token errors turned into fetch errors."""
        try:
            if refresh:
                return await self.tokens.refreshed(connection_id)
            return await self.tokens.access(connection_id)
        except TokenUnavailable as exc:
            message = f"no access token for now: {exc}"
            raise Unavailable(provider, message, retry_after=exc.retry_after) from None
        except TokenError as exc:
            # Nothing a later try of the same poll would change.
            raise NotAuthorized(provider, f"no usable token: {exc}", reason=_token_reason(exc)) from None

    async def _send(
        self,
        provider: Provider,
        target: PollTarget,
        kind: Kind,
        token: str,
        base_url: str,
        request: PageRequest,
    ) -> _Answer:
        """One HTTP request, holding a budget permit of the account while it runs."""
        headers = {name: value for name, value in request.headers if name.lower() != "authorization"}
        headers["Authorization"] = f"{_AUTH_SCHEMES.get(provider, _BEARER)} {token}"
        try:
            async with self.budgets.permit(provider, target.account, kind, max_wait=self.permit_wait):
                try:
                    async with self.session.request(
                        request.method,
                        _url(base_url, request.path),
                        params=list(request.params),
                        headers=headers,
                        data=request.body,
                        timeout=self.timeout,
                        allow_redirects=False,
                    ) as response:
                        body = await response.read()
                        return _Answer(_outcome(response.status), response.status, response.headers, body)
                except TimeoutError:
                    return _Answer("timeout")
                except aiohttp.ClientError:
                    return _Answer("connection_error")
        except BudgetTimeout as exc:
            message = f"the {provider.value} account's budget grants nothing for {exc.wait_seconds:.1f} s"
            raise Throttled(provider, message, retry_after=exc.wait_seconds) from None

    def _observe(self, provider: Provider, outcome: RequestOutcome) -> None:
        if self.observe is not None:
            self.observe(provider, outcome)


def _url(base_url: str, path: str) -> str:
    """The API base URL joined with a request path, with exactly one slash between them."""
    return base_url.rstrip("/") + "/" + path.lstrip("/")


def _outcome(status: int) -> RequestOutcome:
    # 304 answers a conditional request (Xero's If-Modified-Since) with no body: nothing changed.
    if 200 <= status < 300 or status == 304:
        return "ok"
    if status == 401:
        return "unauthorized"
    if status == 429:
        return "throttled"
    # 408: the provider gave up waiting for the request, which may go through on another try.
    if status >= 500 or status == 408:
        return "server_error"
    return "refused"


def _token_reason(error: TokenError) -> str:
    if isinstance(error, ReauthRequired):
        return error.reason
    if isinstance(error, NoCredentials):
        return "no_credentials"
    if isinstance(error, ConnectionPaused):
        return "paused"
    if isinstance(error, ProviderNotConfigured):
        return "provider_not_configured"
    return "token_error"


def _safe_detail(body: bytes, secrets: tuple[str, ...]) -> str:
    """The provider's error code and message from an error body, safe to log: printable, at most
    `DETAIL_LIMIT` characters, never one of `secrets`; "" when the body says nothing readable."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        parts = [f"code={m.decode(errors='replace')}" for m in _XML_CODE.findall(body)[:1]]
        parts += [m.decode(errors="replace") for m in _XML_MESSAGE.findall(body)[:1]]
    else:
        parts = [f"{key}={value}" for key, value in _error_fields(document, depth=0)]
    detail = " ".join("".join(c if c.isprintable() else " " for c in "; ".join(parts[:4])).split())
    for secret in secrets:
        if secret:
            detail = detail.replace(secret, "[redacted]")
    return detail[:DETAIL_LIMIT]


def _error_fields(value: Any, depth: int) -> Iterator[tuple[str, str]]:
    """(key, value) of the scalar error fields in a JSON error body, outermost first; the first
    element of each list only, three levels deep at most."""
    if depth > 3:
        return
    if isinstance(value, list):
        if value:
            yield from _error_fields(value[0], depth + 1)
        return
    if not isinstance(value, dict):
        return
    nested = []
    for key, item in value.items():
        if isinstance(item, dict | list):
            nested.append(item)
        elif key.lower() in _ERROR_KEYS and isinstance(item, str | int) and not isinstance(item, bool):
            yield key, str(item)
    for item in nested:
        yield from _error_fields(item, depth + 1)
