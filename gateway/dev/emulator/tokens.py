"""OAuth token and revocation endpoints for every emulated provider.

`POST /{provider}/oauth/token`: `grant_type=refresh_token` for all providers, plus NetSuite's
`grant_type=client_credentials` with a JWT client assertion. `POST /{provider}/oauth/revoke`:
revoke by refresh or access token (QuickBooks takes JSON `{"token": ...}`, the others a form or
query parameter). Behaviour per provider comes from profiles.py and the live `ProviderConfig`.
"""

from collections.abc import Mapping
from typing import Any

import jwt
from aiohttp import web

from provider_auth.providers import Provider

from .core import (
    authenticate_client,
    deliver,
    gate,
    json_response,
    oauth_error,
    provider_of,
    read_params,
    state_of,
)
from .profiles import PROFILES
from .state import EmulatorState, Rejected

TOKEN_PATH = "/{provider}/oauth/token"
REVOKE_PATH = "/{provider}/oauth/revoke"

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# NetSuite help, "The Request Token Structure": the allowed signing algorithms and scopes, and
# exp must be less than 60 minutes after iat.
JWT_ALGORITHMS = frozenset({"PS256", "PS384", "PS512", "ES256", "ES384", "ES512"})
NETSUITE_SCOPES = frozenset({"restlets", "rest_webservices", "suite_analytics"})
MAX_ASSERTION_LIFETIME = 3600
CLOCK_SKEW = 60


def token_path(provider: str | Provider) -> str:
    """The token endpoint path of a provider."""
    return TOKEN_PATH.format(provider=Provider(provider).value)


def revoke_path(provider: str | Provider) -> str:
    """The revocation endpoint path of a provider."""
    return REVOKE_PATH.format(provider=Provider(provider).value)


def _expires_in(provider: Provider, seconds: float) -> int | float | str:
    value: int | float = int(seconds) if float(seconds).is_integer() else round(seconds, 3)
    return str(value) if PROFILES[provider].expires_in_as_string else value


async def token_endpoint(request: web.Request) -> web.Response:
    """The token endpoint: refresh a grant, or (NetSuite) client credentials with a JWT."""
    provider = provider_of(request)
    faulted = await gate(request, provider, "token")
    if faulted is not None:
        return faulted
    params = await read_params(request)
    grant_type = params.get("grant_type")
    if grant_type == "refresh_token":
        response, ok = _refresh(request, provider, params)
    elif grant_type == "client_credentials" and PROFILES[provider].client_credentials_jwt:
        response, ok = _client_credentials(request, provider, params)
    elif not grant_type:
        response, ok = oauth_error("invalid_request", description="grant_type is required"), False
    else:
        response, ok = oauth_error("unsupported_grant_type"), False
    return await deliver(request, provider, "token", response, ok)


def _refresh(request: web.Request, provider: Provider, params: dict[str, str]) -> tuple[web.Response, bool]:
    state = state_of(request)
    client = authenticate_client(request, provider, params)
    if isinstance(client, web.Response):
        return client, False
    refresh_token = params.get("refresh_token")
    if not refresh_token:
        return oauth_error("invalid_request", description="refresh_token is required"), False
    outcome = state.refresh(provider, client, refresh_token)
    cfg = state.config(provider)
    if isinstance(outcome, Rejected):
        return json_response({"error": cfg.dead_grant_error}, cfg.dead_grant_status), False
    profile = cfg.profile
    now = state.clock()
    body: dict[str, Any] = {
        "access_token": outcome.access.token,
        "token_type": profile.token_type,
        "expires_in": _expires_in(provider, outcome.access.ttl),
    }
    if outcome.rotated or profile.echoes_refresh_token:
        body["refresh_token"] = outcome.refresh_token
    if provider is Provider.QUICKBOOKS and outcome.refresh_expires_in is not None:
        # Intuit: seconds left on the refresh token (100 days rolling, capped by the 5-year limit).
        body["x_refresh_token_expires_in"] = int(outcome.refresh_expires_in)
    body.update(profile.extra_fields)
    if provider is Provider.FRESHBOOKS:
        # FreshBooks token responses carry the issue time as a unix timestamp.
        body["created_at"] = int(now)
    return json_response(body), True


def _client_credentials(
    request: web.Request, provider: Provider, params: dict[str, str]
) -> tuple[web.Response, bool]:
    state = state_of(request)
    if params.get("client_assertion_type") != JWT_BEARER:
        return oauth_error(
            "invalid_request", description=f"client_assertion_type must be {JWT_BEARER}"
        ), False
    assertion = params.get("client_assertion")
    if not assertion:
        return oauth_error("invalid_request", description="client_assertion is required"), False
    verified = verify_assertion(state, provider, assertion, request.path)
    if isinstance(verified, str):
        state.count_event(provider, "invalid_client")
        # RFC 7523 section 3.2: a client assertion that fails validation is invalid_client.
        return oauth_error("invalid_client", 401, description=verified), False
    client_id, scope = verified
    access = state.issue_client_credentials(provider, client_id, scope)
    body = {
        "access_token": access.token,
        "expires_in": _expires_in(provider, access.ttl),
        "token_type": PROFILES[provider].token_type,
    }
    return json_response(body), True


def verify_assertion(
    state: EmulatorState, provider: Provider, assertion: str, token_endpoint_path: str
) -> tuple[str, str] | str:
    """Check a NetSuite client-credentials JWT; `(client_id, scope)` or the reason it fails."""
    try:
        header = jwt.get_unverified_header(assertion)
    except jwt.PyJWTError:
        return "client_assertion is not a JWT"
    alg = header.get("alg")
    if alg not in JWT_ALGORITHMS:
        return f"alg must be one of {sorted(JWT_ALGORITHMS)}"
    if str(header.get("typ", "JWT")).upper() != "JWT":
        return "typ must be JWT"
    registered = state.jwt_key(provider, str(header.get("kid")))
    if registered is None:
        return "unknown kid (certificate id)"
    client_id, key = registered
    try:
        claims: Mapping[str, Any] = jwt.decode(
            assertion,
            key,
            algorithms=[alg],
            # Times are checked below against the emulator's clock, audience by path.
            options={"verify_exp": False, "verify_iat": False, "verify_nbf": False, "verify_aud": False},
        )
    except (jwt.PyJWTError, TypeError, ValueError):
        return "signature does not verify with the registered key"
    if claims.get("iss") != client_id:
        return "iss must be the client id the certificate is mapped to"
    audiences = claims.get("aud")
    audiences = [audiences] if isinstance(audiences, str) else audiences
    # The real aud is the account's token endpoint URL; behind the emulator the host varies
    # (127.0.0.1, localhost, a container name), so the path is what must match.
    if not isinstance(audiences, list) or not any(
        isinstance(a, str) and a.split("?")[0].rstrip("/").endswith(token_endpoint_path) for a in audiences
    ):
        return "aud must be the token endpoint URL"
    iat, exp = claims.get("iat"), claims.get("exp")
    if not isinstance(iat, int | float) or not isinstance(exp, int | float):
        return "iat and exp are required numbers"
    if exp - iat >= MAX_ASSERTION_LIFETIME:
        return "exp must be less than 60 minutes after iat"
    now = state.clock()
    if exp <= now:
        return "assertion expired"
    if iat > now + CLOCK_SKEW:
        return "iat is in the future"
    scope = claims.get("scope")
    scopes = scope.split(",") if isinstance(scope, str) else scope
    if not isinstance(scopes, list) or not scopes or not set(map(str, scopes)) <= NETSUITE_SCOPES:
        return f"scope must name some of {sorted(NETSUITE_SCOPES)}"
    return client_id, ",".join(map(str, scopes))


async def revoke_endpoint(request: web.Request) -> web.Response:
    """Revoke the grant behind a refresh or access token (RFC 7009 style)."""
    provider = provider_of(request)
    faulted = await gate(request, provider, "revoke")
    if faulted is not None:
        return faulted
    state = state_of(request)
    profile = PROFILES[provider]
    params = await read_params(request)
    client_id: str | None = None
    if profile.revoke_requires_client_auth:
        client = authenticate_client(request, provider, params)
        if isinstance(client, web.Response):
            return client
        client_id = client
    token = params.get("token") or params.get("refresh_token")
    if not token:
        return oauth_error("invalid_request", description="token is required")
    revoked = state.revoke(provider, token, client_id=client_id)
    if revoked or profile.revoke_unknown_status < 400:
        response = (
            json_response(dict(profile.revoke_ok_body))
            if profile.revoke_ok_body is not None
            else web.Response(status=200)
        )
    else:
        response = oauth_error("invalid_request", profile.revoke_unknown_status)
    return await deliver(request, provider, "revoke", response, revoked)


def setup(app: web.Application) -> None:
    """Add the token and revocation routes."""
    app.router.add_post(TOKEN_PATH, token_endpoint)
    app.router.add_post(REVOKE_PATH, revoke_endpoint)
