"""The OAuth token client: refresh, client credentials (NetSuite JWT assertion), revocation.

One `TokenClient` per process, on the aiohttp session `gateway` creates. Every outcome that is not a
token set is a `TokenRequestError` of one of three kinds, which decide everything the token manager
does next:

- `permanent`: the provider said no for good (`invalid_grant` and its provider aliases,
  `invalid_client`, `unauthorized_client`; RFC 6749 section 5.2);
- `transient`: the provider did not decide (5xx, 429, an unknown or malformed answer, a request that
  never left: connection refused, DNS, connect timeout);
- `lost`: the request was sent but no answer came back (timeout, connection dropped mid-way). For a
  rotating provider the refresh token may have been used up (docs/tokens.md, "Lost answers").

Token values never appear in exceptions, logs or reprs.
"""

import base64
import email.utils
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote

import aiohttp
import jwt
import orjson

from provider_auth.oauth.apps import GrantParams, OAuthApp, resolve_url
from provider_auth.oauth.specs import OAuthSpec, oauth_spec

__all__ = [
    "JWT_BEARER",
    "PERMANENT_ERRORS",
    "ErrorKind",
    "TokenClient",
    "TokenRequestError",
    "TokenSet",
]

ErrorKind = Literal["permanent", "transient", "lost"]

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# RFC 6749 section 5.2: the client is unknown or not allowed this grant type. Both are as final as a
# dead grant: retrying cannot fix them, a person must.
PERMANENT_ERRORS = frozenset({"invalid_client", "unauthorized_client"})
# NetSuite help ("The Request Token Structure"): exp must be less than 60 minutes after iat
# (docs/providers.md, NetSuite).
ASSERTION_LIFETIME = 50 * 60
_DESCRIPTION_LIMIT = 200


@dataclass(frozen=True, slots=True)
class TokenSet:
    """A successful token response, normalized. Token values are hidden from `repr`."""

    access_token: str = field(repr=False)
    expires_in: float
    refresh_token: str | None = field(repr=False)
    refresh_expires_in: float | None
    scope: str | None
    # Non-secret response fields worth keeping (Zoho's api_domain).
    extra: dict[str, str]


class TokenRequestError(Exception):
    """A token request that produced no token set; `kind` says what it means."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        error: str | None = None,
        description: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.error = error
        # The error in Ledgerhook's vocabulary: provider aliases of a dead grant become invalid_grant.
        self.reason = reason or error
        self.description = description
        self.status = status
        self.retry_after = retry_after

    @property
    def provider_error(self) -> str | None:
        """The provider's own words (`error: description`), trimmed; None when it said nothing."""
        if self.error is None:
            return None
        text = f"{self.error}: {self.description}" if self.description else self.error
        return text[:_DESCRIPTION_LIMIT]


class TokenClient:
    """HTTP calls to token, revocation and connection endpoints, bounded by `timeout` seconds."""

    def __init__(
        self, http: aiohttp.ClientSession, *, timeout: float = 15.0, clock: Callable[[], float] = time.time
    ) -> None:
        self._http = http
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=min(timeout, 5.0))
        self._clock = clock

    async def refresh(self, app: OAuthApp, refresh_token: str, params: GrantParams) -> TokenSet:
        """Exchange a refresh token (RFC 6749 section 6)."""
        spec = oauth_spec(app.provider)
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        return await self._token_request(app, spec, form, params)

    async def client_credentials(self, app: OAuthApp, params: GrantParams) -> TokenSet:
        """NetSuite client credentials: a JWT assertion signed with the app's certificate key.

        NetSuite help ("OAuth 2.0 Client Credentials (M2M) Setup"): the JWT header names the
        certificate id as `kid`; `iss` is the client id, `aud` the token endpoint URL, `scope` the
        requested scopes, and exp must be less than 60 minutes after iat.
        """
        spec = oauth_spec(app.provider)
        if not spec.supports_client_credentials:
            raise TokenRequestError("permanent", f"{app.provider.value} has no client credentials grant")
        if not app.jwt_key_id or not app.jwt_private_key:
            raise TokenRequestError(
                "permanent",
                f"client credentials need LEDGERHOOK_{app.provider.env_name}_JWT_KEY_ID and _JWT_PRIVATE_KEY",
                error="invalid_client",
            )
        url = resolve_url(app.token_url, params)
        now = int(self._clock())
        claims = {
            "iss": app.client_id,
            "scope": [s.strip() for s in app.jwt_scope.split(",") if s.strip()],
            "aud": url,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME,
        }
        assertion = jwt.encode(
            claims,
            app.jwt_private_key,
            algorithm=app.jwt_algorithm,
            headers={"kid": app.jwt_key_id, "typ": "JWT"},
        )
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": JWT_BEARER,
            "client_assertion": assertion,
        }
        return await self._token_request(app, spec, form, params, client_auth=False)

    async def revoke_token(self, app: OAuthApp, token: str) -> bool:
        """Revoke a token at the provider's revocation endpoint; True when the provider confirmed.

        Intuit ("Revoke a token"): POST {"token": ...} as JSON with Basic client auth; revoking the
        refresh token ends the whole grant (docs/providers.md, QuickBooks Online).
        """
        spec = oauth_spec(app.provider)
        url = app.revoke_url or spec.revoke_endpoint
        if url is None or spec.revoke == "none":
            return False
        headers = {"Accept": "application/json"}
        try:
            if spec.revoke == "token_json":
                headers |= _basic(app)
                request = self._http.post(
                    url, data=orjson.dumps({"token": token}), headers=headers | _JSON, timeout=self._timeout
                )
            else:
                request = self._http.post(
                    url, data=_client_form(app, {"token": token}), headers=headers, timeout=self._timeout
                )
            async with request as response:
                await response.read()
                return 200 <= response.status < 300
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def xero_disconnect(self, app: OAuthApp, access_token: str, tenant_id: str) -> bool:
        """Give one Xero tenant back: find its connection id, then `DELETE /connections/{id}`.

        Xero developer docs ("Connections"): GET https://api.xero.com/connections lists the tenants
        of the token's grant, each with its own connection `id`; DELETE on that id disconnects the
        tenant (204) (docs/providers.md, Xero). True when Xero confirmed or the tenant was no longer
        connected.
        """
        base = app.api_base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {access_token}", "Accept": "application/json"}
        try:
            listing = self._http.get(f"{base}/connections", headers=headers, timeout=self._timeout)
            async with listing as listed:
                if listed.status != 200:
                    await listed.read()
                    return False
                connections = orjson.loads(await listed.read())
            matches = [
                c.get("id")
                for c in connections
                if isinstance(c, dict) and str(c.get("tenantId", "")).lower() == tenant_id.lower()
            ]
            if not matches:
                return True
            for connection_id in matches:
                url = f"{base}/connections/{quote(str(connection_id), safe='')}"
                async with self._http.delete(url, headers=headers, timeout=self._timeout) as deleted:
                    await deleted.read()
                    if deleted.status not in (200, 204, 404):
                        return False
            return True
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError):
            return False

    async def _token_request(
        self,
        app: OAuthApp,
        spec: OAuthSpec,
        form: dict[str, str],
        params: GrantParams,
        *,
        client_auth: bool = True,
    ) -> TokenSet:
        try:
            url = resolve_url(app.token_url, params)
        except ValueError as exc:
            raise TokenRequestError("permanent", str(exc), error="invalid_request") from None
        headers = {"Accept": "application/json"}
        if client_auth and spec.client_auth == "basic":
            headers |= _basic(app)
        elif client_auth:
            form = _client_form(app, form)
        try:
            async with self._http.post(url, data=form, headers=headers, timeout=self._timeout) as response:
                body = await response.read()
                return _interpret(spec, response.status, response.headers, body, self._clock)
        except TokenRequestError:
            raise
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            # Never reached the server: nothing was used up.
            message = f"cannot reach the token endpoint ({type(exc).__name__})"
            raise TokenRequestError("transient", message) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            # Sent, but no complete answer: the provider may have acted on it.
            message = f"no answer from the token endpoint ({type(exc).__name__})"
            raise TokenRequestError("lost", message) from None


_JSON = {"Content-Type": "application/json"}


def _basic(app: OAuthApp) -> dict[str, str]:
    # RFC 6749 section 2.3.1: both parts are form-urlencoded before they are joined and encoded.
    pair = f"{quote(app.client_id, safe='')}:{quote(app.client_secret, safe='')}"
    return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}


def _client_form(app: OAuthApp, form: dict[str, str]) -> dict[str, str]:
    return form | {"client_id": app.client_id, "client_secret": app.client_secret}


def _interpret(
    spec: OAuthSpec,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    clock: Callable[[], float],
) -> TokenSet:
    """A token set, or the TokenRequestError the answer amounts to."""
    retry_after = _retry_after(headers.get("Retry-After"), clock)
    try:
        data: Any = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        data = None
    if status == 429 or status >= 500:
        raise TokenRequestError(
            "transient", f"token endpoint answered {status}", status=status, retry_after=retry_after
        )
    if not isinstance(data, dict):
        message = f"token endpoint answered {status} without a JSON object"
        raise TokenRequestError("transient", message, status=status)
    error = data.get("error")
    if isinstance(error, str) and error:
        description = data.get("error_description")
        description = description[:_DESCRIPTION_LIMIT] if isinstance(description, str) else None
        # Zoho answers a dead refresh token with HTTP 200 and {"error": "invalid_code"}
        # (docs/providers.md, Zoho Books).
        permanent = error in spec.dead_grant_errors or error in PERMANENT_ERRORS
        kind: ErrorKind = "permanent" if permanent and status < 500 else "transient"
        raise TokenRequestError(
            kind,
            f"token endpoint refused: {error}",
            error=error,
            description=description,
            status=status,
            retry_after=retry_after,
            reason="invalid_grant" if error in spec.dead_grant_errors else error,
        )
    if status != 200:
        raise TokenRequestError("transient", f"token endpoint answered {status}", status=status)
    access = data.get("access_token")
    if not isinstance(access, str) or not access:
        raise TokenRequestError("transient", "token response without access_token", status=status)
    expires_in = _seconds(data.get("expires_in"))
    refresh = data.get("refresh_token")
    # Intuit: x_refresh_token_expires_in is the time left on the refresh token (rolling 100 days,
    # capped by the 5-year limit; docs/providers.md, QuickBooks Online). Other providers that say
    # it use refresh_token_expires_in.
    refresh_expires_in = _seconds(
        data.get("x_refresh_token_expires_in", data.get("refresh_token_expires_in"))
    )
    scope = data.get("scope")
    extra = {k: v for k in ("api_domain",) if isinstance(v := data.get(k), str)}
    return TokenSet(
        access_token=access,
        expires_in=expires_in if expires_in is not None else spec.default_access_lifetime,
        refresh_token=refresh if isinstance(refresh, str) and refresh else None,
        refresh_expires_in=refresh_expires_in,
        scope=scope if isinstance(scope, str) else None,
        extra=extra,
    )


def _seconds(value: object) -> float | None:
    """A lifetime in seconds; NetSuite sends `expires_in` as a string, others as a number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if value >= 0 else None
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
        return number if number >= 0 else None
    return None


def _retry_after(value: str | None, clock: Callable[[], float]) -> float | None:
    """RFC 9110 section 10.2.3: delay-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - clock())
