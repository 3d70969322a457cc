"""Disconnecting a connection: its grant given back at the provider where possible, its tokens erased.

QuickBooks: the refresh token is revoked (ending the grant) when no other connection uses it.
Xero: the tenant's connection is deleted (`DELETE /connections/{id}`); Xero ends the grant with its
last tenant (docs/providers.md, Xero). A grant still used by other connections keeps its tokens.
Provider errors never block the erasure. More in docs/tokens.md ("Disconnecting").
"""

from dataclasses import dataclass

from provider_auth import audit
from provider_auth.audit import AuditAction
from provider_auth.oauth.apps import OAuthApp
from provider_auth.oauth.client import TokenClient
from provider_auth.oauth.specs import SPECS
from provider_auth.tokens.grants import ConnectionGrant, GrantRecord, GrantStatus
from provider_auth.tokens.store import CredentialStore

__all__ = ["NOTHING_STORED", "DisconnectResult", "disconnect", "needs_access_token"]


@dataclass(frozen=True, slots=True)
class DisconnectResult:
    """What disconnecting a connection did to its credentials."""

    had_credentials: bool
    revoked_at_provider: bool
    erased: bool


# A connection without credentials: nothing to give back or erase.
NOTHING_STORED = DisconnectResult(had_credentials=False, revoked_at_provider=False, erased=False)


def needs_access_token(found: ConnectionGrant, app: OAuthApp | None) -> bool:
    """Whether giving the grant back takes a valid access token (Xero's connections endpoint)."""
    revoke = SPECS[found.record.provider].revoke
    return app is not None and revoke == "xero_connection" and found.record.status is GrantStatus.ACTIVE


async def disconnect(
    store: CredentialStore,
    client: TokenClient,
    app: OAuthApp | None,
    found: ConnectionGrant,
    connection_id: str,
    *,
    access_token: str | None,
) -> DisconnectResult:
    """Give the connection's grant back where the provider has an endpoint for it (`app` None: the
    provider is not configured, nothing is sent), unlink the connection and erase the grant's
    tokens if no other connection uses it. `access_token`: a valid one, for Xero."""
    async with store.pool.acquire() as conn, conn.transaction():
        link = await store.link_of(conn, connection_id)
        if link is None:
            return NOTHING_STORED
        record = await store.lock(conn, link[0]) or found.record
        others = [c for c in await store.connection_ids(conn, record.id) if c != connection_id]
        revoked = False
        if app is not None and record.status is not GrantStatus.NEEDS_REAUTH:
            revoked = await _give_back(store, client, app, record, found, access_token, shared=bool(others))
        await store.unlink(conn, connection_id)
        erased = await store.delete_if_orphaned(conn, record.id)
        await audit.record(
            conn,
            provider=record.provider.value,
            grant_id=record.id,
            connection_id=connection_id,
            action=AuditAction.REVOKED if revoked else AuditAction.ERASED,
            detail={
                "revoked_at_provider": revoked,
                "grant_erased": erased,
                "connections_left": len(others),
            },
        )
    return DisconnectResult(had_credentials=True, revoked_at_provider=revoked, erased=erased)


async def _give_back(
    store: CredentialStore,
    client: TokenClient,
    app: OAuthApp,
    record: GrantRecord,
    found: ConnectionGrant,
    access_token: str | None,
    *,
    shared: bool,
) -> bool:
    """True when the provider confirmed it took the grant (or the tenant) back."""
    revoke = SPECS[record.provider].revoke
    if revoke == "xero_connection" and access_token is not None:
        return await client.xero_disconnect(app, access_token, found.provider_account_id)
    if revoke in ("token_json", "token_form") and not shared:
        token = store.open_refresh(record) or store.open_access(record)
        if token is not None:
            return await client.revoke_token(app, token)
    return False
