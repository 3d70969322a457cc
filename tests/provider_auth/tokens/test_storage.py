"""Tokens exist in PostgreSQL only encrypted, bound to their row; key rotation re-encrypts every stored
secret so the old key can go; one token set serves several connections."""

import pytest

from gateway.cli.keys import rotate_keys
from provider_auth.accounts.store import ConnectionStore
from provider_auth.providers import Provider
from provider_auth.tokens import (
    ConnectionRef,
    Credentials,
    GrantStatus,
    GrantType,
    ReauthRequired,
)
from provider_auth.vault import KeyRing, VaultError
from tests.provider_auth.tokens.token_support import CLIENT_ID, TokenStack, build_manager, key_entries


async def raw_rows(stack: TokenStack) -> str:
    """Every row of every table in the database, as PostgreSQL prints it (bytea as hex)."""
    tables = await stack.pool.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
    )
    lines: list[str] = []
    for table in tables:
        rows = await stack.pool.fetch(f'SELECT t::text AS line FROM "{table["tablename"]}" t')
        lines.extend(r["line"] for r in rows)
    return "\n".join(lines)


def stored_in_clear(secret: str, dump: str) -> bool:
    """The secret as text, or as the hex of its bytes (how a bytea column prints)."""
    return secret in dump or secret.encode().hex() in dump


async def test_no_plaintext_token_in_any_table(stack: TokenStack) -> None:
    tokens: list[str] = []
    for provider in (Provider.QUICKBOOKS, Provider.XERO, Provider.ZOHO_BOOKS, Provider.FRESHBOOKS):
        connection_id, access, refresh = await stack.connect(provider, expires_in=30)
        refreshed = await stack.manager.get_access_token(connection_id)  # a refresh stores new tokens
        grant = stack.emu.grant_info(provider, refreshed.token)
        assert grant is not None
        tokens += [access, refresh, refreshed.token, grant.refresh_token]
    await stack.connections.create(
        "tenant-secret", Provider.ZOHO_BOOKS, "org-1", webhook_secrets=["whsec-zoho"]
    )
    dump = await raw_rows(stack)
    assert len(dump) > 1000
    for token in [*tokens, "whsec-zoho", "ledgerhook-app-secret"]:
        assert not stored_in_clear(token, dump), "a secret is stored in clear"
    # The search itself works: a token written in clear to a bytea column is found.
    await stack.pool.execute("CREATE TABLE scratch (b bytea)")
    await stack.pool.execute("INSERT INTO scratch VALUES ($1)", tokens[0].encode())
    assert stored_in_clear(tokens[0], await raw_rows(stack))
    # The audit log says what happened, with no secret in it.
    actions = {r["action"] for r in await stack.pool.fetch("SELECT action FROM audit_log")}
    assert {"token.stored", "token.rotated", "token.refreshed"} <= actions


async def test_a_ciphertext_copied_to_another_grant_does_not_decrypt(stack: TokenStack) -> None:
    first, _, _ = await stack.connect(Provider.XERO)
    second, _, _ = await stack.connect(Provider.XERO)
    state_one = await stack.manager.credentials_state(first)
    state_two = await stack.manager.credentials_state(second)
    assert state_one is not None and state_two is not None
    await stack.pool.execute(
        "UPDATE oauth_grants SET access_token = (SELECT access_token FROM oauth_grants WHERE id = $1)"
        " WHERE id = $2",
        state_one.grant_id,
        state_two.grant_id,
    )
    with pytest.raises(VaultError):
        await stack.another_manager().get_access_token(second)


async def test_key_rotation_reencrypts_every_row_and_the_old_key_can_go(stack: TokenStack) -> None:
    connections = []
    for provider in (Provider.QUICKBOOKS, Provider.XERO, Provider.FRESHBOOKS):
        connection_id, access, _ = await stack.connect(provider)
        connections.append((connection_id, access))
    secret_owner = await stack.connections.create(
        "tenant-rot", Provider.ZOHO_BOOKS, "org-r", webhook_secrets=["s1"]
    )
    old = stack.keyring
    old_entry = key_entries(stack.settings)
    new_entry = f"k2:{KeyRing.generate_key()}"
    only_new = KeyRing.parse(new_entry)
    # Before rotation the new key alone cannot read anything.
    with pytest.raises(VaultError):
        await build_manager(
            stack.pool, stack.http, only_new, stack.emu, stack.manager.events
        ).get_access_token(connections[0][0])
    both = KeyRing.parse(f"{new_entry},{old_entry}")
    report = await rotate_keys(stack.pool, both, batch=2)  # small batches: the paging is exercised
    assert report.grants_reencrypted == 3 and report.connections_reencrypted == 1 and report.done
    again = await rotate_keys(stack.pool, both)
    assert again.grants_reencrypted == 0 and again.connections_reencrypted == 0
    sealed = await stack.pool.fetch("SELECT access_token, refresh_token FROM oauth_grants")
    assert all(KeyRing.key_id_of(s) == "k2" for row in sealed for s in row)
    # The old key is gone: everything still reads with the new one alone.
    manager = build_manager(stack.pool, stack.http, only_new, stack.emu, stack.manager.events)
    for connection_id, access in connections:
        assert (await manager.get_access_token(connection_id)).token == access
    assert await ConnectionStore(stack.pool, only_new).webhook_secrets(secret_owner.id) == ["s1"]
    assert old.current_key_id == "k1"


async def test_one_xero_token_set_serves_every_tenant_it_covers(stack: TokenStack) -> None:
    tenants = ["org-a", "org-b", "org-c"]
    grant = stack.emu.issue_grant(Provider.XERO, CLIENT_ID, accounts=tenants)
    ids = []
    for tenant in tenants:
        connection_id, _, _ = await stack.connect(Provider.XERO, account=tenant, grant=grant, expires_in=30)
        ids.append(connection_id)
    states = [await stack.manager.credentials_state(c) for c in ids]
    assert len({s.grant_id for s in states if s}) == 1 and all(s and s.connections == 3 for s in states)
    first = states[0]
    assert first is not None
    tokens = {(await stack.manager.get_access_token(c)).token for c in ids}
    assert len(tokens) == 1 and stack.emu.refreshes(Provider.XERO) == 1
    # Handing over the first (now superseded) token set again joins the grant, keeping its newer tokens.
    late = await stack.connection(Provider.XERO, "org-d")
    state = await stack.manager.put_credentials(
        ConnectionRef(late, Provider.XERO, "org-d"),
        Credentials(grant.access_token, grant.refresh_token, expires_at=stack.manager.clock() + 30),
    )
    assert state.action == "linked" and state.grant_id == first.grant_id
    assert (await stack.manager.get_access_token(late)).token in tokens
    # One consent revoked: every tenant on it is reported, once each.
    stack.emu.revoke(Provider.XERO, grant.grant_id)
    with pytest.raises(ReauthRequired):
        await stack.another_manager(skew=10_000).get_access_token(ids[0])
    for connection_id in [*ids, late]:
        with pytest.raises(ReauthRequired):
            await stack.another_manager().get_access_token(connection_id)
    events = await stack.account_events()
    assert sorted(e["connection_id"] for e in events) == sorted([*ids, late])
    assert {e["type"] for e in events} == {"integrated_account:authentication_error"}


async def test_netsuite_client_credentials_mint_tokens_with_a_signed_assertion(stack: TokenStack) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    stack.emu.register_jwt_key(Provider.NETSUITE, CLIENT_ID, "cert-7", key.public_key())
    manager = stack.another_manager()
    app = manager.apps[Provider.NETSUITE]
    manager.apps[Provider.NETSUITE] = type(app)(
        provider=app.provider,
        client_id=app.client_id,
        client_secret=app.client_secret,
        token_url=app.token_url,
        api_base_url=app.api_base_url,
        jwt_key_id="cert-7",
        jwt_private_key=pem,
        jwt_algorithm="ES256",
        jwt_scope="rest_webservices,restlets",
    )
    connection_id = await stack.connection(Provider.NETSUITE, "1234567_SB1")
    state = await manager.put_credentials(
        ConnectionRef(connection_id, Provider.NETSUITE, "1234567_SB1"),
        Credentials(grant_type=GrantType.CLIENT_CREDENTIALS),
    )
    assert state.grant_type is GrantType.CLIENT_CREDENTIALS and state.status is GrantStatus.ACTIVE
    token = await manager.get_access_token(connection_id)
    assert stack.emu.validate_access_token(Provider.NETSUITE, token.token)
    assert stack.emu.events(Provider.NETSUITE, "client_credentials") == 1
    assert token.expires_at - manager.clock() == pytest.approx(3600, abs=5)  # expires_in came as a string
    assert (await manager.get_access_token(connection_id)).token == token.token
