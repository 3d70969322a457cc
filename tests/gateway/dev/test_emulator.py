"""The provider emulator's OAuth endpoints, exercised over real loopback HTTP."""

import asyncio
import base64
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.dev.emulator import Emulator, ManualClock
from provider_auth.providers import Provider
from tests.paths import REPO_ROOT

CLIENT = ("app-id", "app-secret")


def basic(client_id: str, secret: str) -> dict[str, str]:
    """An HTTP Basic Authorization header."""
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator() as emulator:
        for provider in ("quickbooks", "xero", "zoho-books", "freshbooks", "netsuite", "sage-intacct"):
            emulator.register_client(provider, *CLIENT)
        yield emulator


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def refresh(
    http: aiohttp.ClientSession,
    emu: Emulator,
    provider: str,
    refresh_token: str,
    client: tuple[str, str] = CLIENT,
    **kwargs: Any,
) -> tuple[int, dict[str, Any]]:
    """Refresh the way each provider wants its client credentials sent."""
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    headers: dict[str, str] = {}
    if provider in ("quickbooks", "xero", "netsuite"):
        headers = basic(*client)
    else:
        data |= {"client_id": client[0], "client_secret": client[1]}
    async with http.post(emu.token_url(provider), data=data, headers=headers, **kwargs) as resp:
        return resp.status, await resp.json()


# ----- rotation, grace, per-provider shapes --------------------------------------------------


async def test_quickbooks_rotates_and_the_superseded_token_is_invalid_grant(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    _, first = emu.issue_grant("quickbooks", accounts=["9130350000000000"])

    status, body = await refresh(http, emu, "quickbooks", first)
    assert status == 200
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 3600
    assert body["x_refresh_token_expires_in"] == 100 * 86_400
    second = body["refresh_token"]
    assert second != first
    assert emu.validate_access_token("quickbooks", body["access_token"])
    assert emu.grant_info("quickbooks", second).accounts == ("9130350000000000",)

    status, body = await refresh(http, emu, "quickbooks", first)
    assert (status, body) == (400, {"error": "invalid_grant"})

    status, body = await refresh(http, emu, "quickbooks", second)
    assert status == 200 and body["refresh_token"] not in (first, second)
    assert emu.refreshes("quickbooks") == 2
    assert emu.events("quickbooks", "invalid_grant") == 1
    assert emu.calls("quickbooks") == 3


async def test_rotation_can_be_switched_off(emu: Emulator, http: aiohttp.ClientSession) -> None:
    emu.set_rotation("quickbooks", False)
    _, token = emu.issue_grant("quickbooks")
    for _ in range(2):
        status, body = await refresh(http, emu, "quickbooks", token)
        assert status == 200
        assert body["refresh_token"] == token


async def test_concurrent_refreshes_of_one_rotating_token_leave_one_loser(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    # The classic production failure the provider_auth lock exists for.
    emu.set_latency("quickbooks", 0.05)
    _, token = emu.issue_grant("quickbooks")
    results = await asyncio.gather(*(refresh(http, emu, "quickbooks", token) for _ in range(2)))
    assert sorted(status for status, _ in results) == [200, 400]
    assert emu.refreshes("quickbooks") == 1


async def test_xero_previous_token_works_inside_the_grace_window_only(http: aiohttp.ClientSession) -> None:
    clock = ManualClock()
    async with Emulator(clock=clock) as emu:
        emu.register_client("xero", *CLIENT)
        _, first = emu.issue_grant("xero")
        status, body = await refresh(http, emu, "xero", first)
        assert status == 200 and body["token_type"] == "Bearer" and body["expires_in"] == 1800
        second = body["refresh_token"]

        clock.advance(29 * 60)
        status, body = await refresh(http, emu, "xero", first)
        assert status == 200, body
        third = body["refresh_token"]
        assert third not in (first, second)
        assert emu.events("xero", "grace_used") == 1

        clock.advance(61)  # 30 min 1 s after `first` was superseded
        assert await refresh(http, emu, "xero", first) == (400, {"error": "invalid_grant"})
        # `second` was superseded 61 s ago, still inside its own window; the newest always works.
        assert (await refresh(http, emu, "xero", second))[0] == 200
        assert emu.grant_info("xero", third).rotations == 3


async def test_grace_is_configurable(emu: Emulator, http: aiohttp.ClientSession) -> None:
    emu.set_grace("xero", 0)
    _, first = emu.issue_grant("xero")
    assert (await refresh(http, emu, "xero", first))[0] == 200
    assert (await refresh(http, emu, "xero", first))[0] == 400

    emu.set_grace("freshbooks", 60)
    _, first = emu.issue_grant("freshbooks")
    assert (await refresh(http, emu, "freshbooks", first))[0] == 200
    assert (await refresh(http, emu, "freshbooks", first))[0] == 200


async def test_zoho_never_rotates_and_a_revoked_token_answers_invalid_code(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    _, token = emu.issue_grant("zoho-books")
    for _ in range(2):
        status, body = await refresh(http, emu, "zoho-books", token)
        assert status == 200
        assert "refresh_token" not in body
        assert body["api_domain"] == "https://www.zohoapis.com"
        assert body["expires_in"] == 3600
    # Zoho documents its token parameters in the query string.
    query = {
        "grant_type": "refresh_token",
        "refresh_token": token,
        "client_id": CLIENT[0],
        "client_secret": CLIENT[1],
    }
    async with http.post(emu.token_url("zoho-books"), params=query) as resp:
        assert resp.status == 200 and "access_token" in await resp.json()

    assert emu.revoke("zoho-books", token)
    assert await refresh(http, emu, "zoho-books", token) == (200, {"error": "invalid_code"})


async def test_zoho_silently_drops_the_oldest_of_more_than_20_grants(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    tokens = [emu.issue_grant("zoho-books", user="ana")[1] for _ in range(21)]
    other_user = emu.issue_grant("zoho-books", user="ben")[1]
    assert (await refresh(http, emu, "zoho-books", tokens[0]))[1] == {"error": "invalid_code"}
    assert "access_token" in (await refresh(http, emu, "zoho-books", tokens[1]))[1]
    assert "access_token" in (await refresh(http, emu, "zoho-books", other_user))[1]


async def test_freshbooks_accepts_a_json_body_and_its_refresh_token_is_single_use(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    _, first = emu.issue_grant("freshbooks")
    payload = {
        "grant_type": "refresh_token",
        "refresh_token": first,
        "client_id": CLIENT[0],
        "client_secret": CLIENT[1],
    }
    async with http.post(emu.token_url("freshbooks"), json=payload) as resp:
        body = await resp.json()
        assert resp.status == 200
    assert body["expires_in"] == 43_200 and isinstance(body["created_at"], int)
    assert body["refresh_token"] != first
    assert await refresh(http, emu, "freshbooks", first) == (400, {"error": "invalid_grant"})
    assert (await refresh(http, emu, "freshbooks", body["refresh_token"]))[0] == 200


async def test_sage_intacct_and_netsuite_refresh(emu: Emulator, http: aiohttp.ClientSession) -> None:
    _, token = emu.issue_grant("sage-intacct")
    status, body = await refresh(http, emu, "sage-intacct", token)
    assert status == 200 and body["refresh_token"] != token

    _, token = emu.issue_grant("netsuite")
    status, body = await refresh(http, emu, "netsuite", token)
    # NetSuite: no new refresh token, expires_in as a string.
    assert status == 200 and "refresh_token" not in body and body["expires_in"] == "3600"
    assert (await refresh(http, emu, "netsuite", token))[0] == 200


# ----- client authentication ------------------------------------------------------------------


async def test_bad_client_credentials_are_invalid_client(emu: Emulator, http: aiohttp.ClientSession) -> None:
    _, qb_token = emu.issue_grant("quickbooks")
    _, zoho_token = emu.issue_grant("zoho-books")

    assert await refresh(http, emu, "quickbooks", qb_token, client=(CLIENT[0], "wrong")) == (
        401,
        {"error": "invalid_client"},
    )
    assert (await refresh(http, emu, "quickbooks", qb_token, client=("stranger", CLIENT[1])))[0] == 401
    assert (await refresh(http, emu, "zoho-books", zoho_token, client=(CLIENT[0], "wrong")))[0] == 401

    # Credentials sent the way the provider does not take them are refused.
    form = {
        "grant_type": "refresh_token",
        "refresh_token": qb_token,
        "client_id": CLIENT[0],
        "client_secret": CLIENT[1],
    }
    async with http.post(emu.token_url("quickbooks"), data=form) as resp:
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"].startswith("Basic")
    async with http.post(
        emu.token_url("zoho-books"),
        data={"grant_type": "refresh_token", "refresh_token": zoho_token},
        headers=basic(*CLIENT),
    ) as resp:
        assert resp.status == 401

    assert emu.events("quickbooks", "invalid_client") == 3
    assert emu.refreshes("quickbooks") == 0
    # None of that touched the grant.
    assert (await refresh(http, emu, "quickbooks", qb_token))[0] == 200


async def test_a_refresh_token_only_works_for_the_client_it_was_issued_to(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    emu.register_client("xero", "other-app", "other-secret")
    _, token = emu.issue_grant("xero", CLIENT[0])
    assert await refresh(http, emu, "xero", token, client=("other-app", "other-secret")) == (
        400,
        {"error": "invalid_grant"},
    )


async def test_malformed_token_requests(emu: Emulator, http: aiohttp.ClientSession) -> None:
    async with http.post(emu.url("/sap/oauth/token"), data={"grant_type": "refresh_token"}) as resp:
        assert resp.status == 404
    async with http.post(
        emu.token_url("xero"), data={"grant_type": "password"}, headers=basic(*CLIENT)
    ) as resp:
        assert (resp.status, await resp.json()) == (400, {"error": "unsupported_grant_type"})
    async with http.post(
        emu.token_url("xero"), data={"grant_type": "refresh_token"}, headers=basic(*CLIENT)
    ) as resp:
        assert resp.status == 400 and (await resp.json())["error"] == "invalid_request"
    async with http.post(emu.token_url("xero"), data={"grant_type": "client_credentials"}) as resp:
        assert resp.status == 400  # only NetSuite does client credentials


# ----- revocation ------------------------------------------------------------------------------


async def test_quickbooks_revoke_endpoint_kills_the_grant(emu: Emulator, http: aiohttp.ClientSession) -> None:
    access, token = emu.issue_grant("quickbooks")
    # Intuit's revoke takes a JSON body with Basic auth.
    async with http.post(emu.revoke_url("quickbooks"), json={"token": token}, headers=basic(*CLIENT)) as resp:
        assert resp.status == 200
    assert not emu.validate_access_token("quickbooks", access)
    assert await refresh(http, emu, "quickbooks", token) == (400, {"error": "invalid_grant"})

    access, token = emu.issue_grant("quickbooks")
    async with http.post(
        emu.revoke_url("quickbooks"), data={"token": access}, headers=basic("x", "y")
    ) as resp:
        assert resp.status == 401
    async with http.post(
        emu.revoke_url("quickbooks"), data={"token": access}, headers=basic(*CLIENT)
    ) as resp:
        assert resp.status == 200
    assert (await refresh(http, emu, "quickbooks", token))[0] == 400
    assert emu.calls("quickbooks", "revoke") == 3
    assert emu.events("quickbooks", "revoked") == 2


async def test_admin_revoke_by_grant_id_or_token(emu: Emulator, http: aiohttp.ClientSession) -> None:
    issued = emu.issue_grant("xero")
    assert emu.revoke("xero", issued.grant_id)
    assert await refresh(http, emu, "xero", issued.refresh_token) == (400, {"error": "invalid_grant"})
    assert emu.grant_info("xero", issued.grant_id).revoked

    _, token = emu.issue_grant("xero")
    _, body = await refresh(http, emu, "xero", token)
    assert emu.revoke("xero", token)  # the superseded token still names its grant
    assert (await refresh(http, emu, "xero", body["refresh_token"]))[0] == 400
    assert not emu.revoke("xero", "never-issued")


async def test_zoho_revoke_takes_the_token_in_the_query(emu: Emulator, http: aiohttp.ClientSession) -> None:
    _, token = emu.issue_grant("zoho-books")
    async with http.post(emu.revoke_url("zoho-books"), params={"token": token}) as resp:
        assert (resp.status, await resp.json()) == (200, {"status": "success"})
    async with http.post(emu.revoke_url("zoho-books"), params={"token": "unknown"}) as resp:
        assert resp.status == 400
    assert (await refresh(http, emu, "zoho-books", token))[1] == {"error": "invalid_code"}


async def test_xero_connections_list_and_delete(emu: Emulator, http: aiohttp.ClientSession) -> None:
    access, token = emu.issue_grant("xero", accounts=["tenant-a", "tenant-b"])
    bearer = {"Authorization": f"Bearer {access}"}
    async with http.get(emu.connections_url(), headers=bearer) as resp:
        connections = await resp.json()
    assert resp.status == 200
    assert sorted(c["tenantId"] for c in connections) == ["tenant-a", "tenant-b"]
    by_tenant = {c["tenantId"]: c["id"] for c in connections}

    async with http.delete(emu.connections_url(by_tenant["tenant-a"]), headers=bearer) as resp:
        assert resp.status == 204
    async with http.delete(emu.connections_url(by_tenant["tenant-a"]), headers=bearer) as resp:
        assert resp.status == 404
    status, body = await refresh(http, emu, "xero", token)
    assert status == 200
    assert emu.grant_info("xero", body["refresh_token"]).accounts == ("tenant-a", "tenant-b")
    assert [t for _, t in emu.grant_info("xero", body["refresh_token"]).connections] == ["tenant-b"]

    # Disconnecting the last tenant ends the grant.
    async with http.delete(emu.connections_url(by_tenant["tenant-b"]), headers=bearer) as resp:
        assert resp.status == 204
    assert await refresh(http, emu, "xero", body["refresh_token"]) == (400, {"error": "invalid_grant"})
    async with http.get(emu.connections_url(), headers=bearer) as resp:
        assert resp.status == 401
    assert emu.calls("xero", "connections") == 5


# ----- fault injection --------------------------------------------------------------------------


async def test_fail_next_serves_faults_before_touching_the_grant(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    _, token = emu.issue_grant("xero")
    emu.fail_next("xero", 2, status=503)
    for _ in range(2):
        async with http.post(
            emu.token_url("xero"),
            data={"grant_type": "refresh_token", "refresh_token": token},
            headers=basic(*CLIENT),
        ) as resp:
            assert resp.status == 503
            assert "Retry-After" not in resp.headers
    status, _ = await refresh(http, emu, "xero", token)
    assert status == 200
    assert emu.calls("xero") == 3
    assert emu.events("xero", "fault") == 2
    assert emu.refreshes("xero") == 1
    assert emu.grant_info("xero", token).rotations == 1


async def test_429_carries_retry_after(emu: Emulator, http: aiohttp.ClientSession) -> None:
    _, token = emu.issue_grant("quickbooks")
    emu.fail_next("quickbooks", 1, status=429)
    emu.fail_next("quickbooks", 1, status=429, retry_after=7)
    emu.fail_next("quickbooks", 1, status=500, retry_after=2)
    seen = []
    for _ in range(3):
        async with http.post(emu.token_url("quickbooks"), data={"grant_type": "refresh_token"}) as resp:
            seen.append((resp.status, resp.headers.get("Retry-After")))
    assert seen == [(429, "1"), (429, "7"), (500, "2")]
    assert (await refresh(http, emu, "quickbooks", token))[0] == 200


async def test_faults_target_one_endpoint(emu: Emulator, http: aiohttp.ClientSession) -> None:
    _, token = emu.issue_grant("quickbooks")
    emu.fail_next("quickbooks", 1, status=502, endpoint="revoke")
    assert (await refresh(http, emu, "quickbooks", token))[0] == 200
    async with http.post(emu.revoke_url("quickbooks"), json={"token": "x"}, headers=basic(*CLIENT)) as resp:
        assert resp.status == 502
    async with http.post(emu.revoke_url("quickbooks"), json={"token": "x"}, headers=basic(*CLIENT)) as resp:
        assert resp.status == 200


async def test_controls_work_from_another_thread(emu: Emulator, http: aiohttp.ClientSession) -> None:
    _, token = emu.issue_grant("sage-intacct")
    await asyncio.to_thread(emu.fail_next, "sage-intacct", 1, 504)
    assert (await refresh(http, emu, "sage-intacct", token))[0] == 504


# ----- lost responses -----------------------------------------------------------------------------


async def test_lost_response_times_the_client_out_yet_the_token_rotated(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    _, first = emu.issue_grant("xero")
    emu.lose_next_response("xero", 1)
    started = time.monotonic()
    with pytest.raises(asyncio.TimeoutError):
        await refresh(http, emu, "xero", first, timeout=aiohttp.ClientTimeout(total=0.3))
    assert time.monotonic() - started < 2

    info = emu.grant_info("xero", first)
    assert info.refresh_token != first and info.rotations == 1
    assert emu.refreshes("xero") == 1
    assert emu.events("xero", "lost") == 1
    # Xero's answer to exactly this: the previous token may be retried inside the grace window.
    status, body = await refresh(http, emu, "xero", first)
    assert status == 200 and body["refresh_token"] != info.refresh_token


async def test_lost_response_without_grace_kills_the_connection(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    _, first = emu.issue_grant("quickbooks")
    emu.lose_next_response("quickbooks", 1, mode="drop")
    started = time.monotonic()
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await refresh(http, emu, "quickbooks", first)
    assert time.monotonic() - started < 1
    assert emu.grant_info("quickbooks", first).refresh_token != first
    assert await refresh(http, emu, "quickbooks", first) == (400, {"error": "invalid_grant"})


async def test_lost_responses_are_only_spent_on_successes(emu: Emulator, http: aiohttp.ClientSession) -> None:
    _, token = emu.issue_grant("freshbooks")
    emu.lose_next_response("freshbooks", 1, mode="drop")
    assert (await refresh(http, emu, "freshbooks", "bogus"))[0] == 400
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await refresh(http, emu, "freshbooks", token)
    assert (await refresh(http, emu, "freshbooks", emu.grant_info("freshbooks", token).refresh_token))[
        0
    ] == 200


async def test_stop_releases_a_held_response_promptly(http: aiohttp.ClientSession) -> None:
    emu = await Emulator().start()
    emu.register_client("xero", *CLIENT)
    _, token = emu.issue_grant("xero")
    emu.lose_next_response("xero", 1, hang_seconds=300)
    pending = asyncio.create_task(refresh(http, emu, "xero", token))
    while emu.events("xero", "lost") == 0:
        await asyncio.sleep(0.01)
    started = time.monotonic()
    await emu.stop()
    with pytest.raises(aiohttp.ClientError):
        await pending
    assert time.monotonic() - started < 2.5


# ----- latency and expiry ---------------------------------------------------------------------------


async def test_latency_delays_only_the_chosen_provider(emu: Emulator, http: aiohttp.ClientSession) -> None:
    _, qb = emu.issue_grant("quickbooks")
    _, xero = emu.issue_grant("xero")
    emu.set_latency("quickbooks", 0.3)

    started = time.monotonic()
    status, body = await refresh(http, emu, "quickbooks", qb)
    assert status == 200 and time.monotonic() - started >= 0.3
    started = time.monotonic()
    assert (await refresh(http, emu, "xero", xero))[0] == 200
    assert time.monotonic() - started < 0.25

    emu.set_latency("quickbooks", 0)
    started = time.monotonic()
    assert (await refresh(http, emu, "quickbooks", body["refresh_token"]))[0] == 200
    assert time.monotonic() - started < 0.25


async def test_a_latency_range_draws_each_request_s_delay_from_it(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    emu.set_latency("quickbooks", 0.05, up_to=0.2)
    drawn = [emu.latency_for(Provider.QUICKBOOKS, "cdc") for _ in range(400)]
    assert all(0.05 <= delay <= 0.2 for delay in drawn)
    # Spread over the range, not one fixed value (each bound fails by chance with p < 1e-17).
    assert min(drawn) < 0.065 and max(drawn) > 0.185
    _, token = emu.issue_grant("quickbooks")
    started = time.monotonic()
    assert (await refresh(http, emu, "quickbooks", token))[0] == 200
    assert time.monotonic() - started >= 0.05

    # Over the control endpoint: `[lowest, highest]`; a single number stays a fixed delay.
    config = emu.url("/_emulator/config")
    async with http.post(config, json={"provider": "xero", "latency": [0.1, 0.3]}) as resp:
        assert resp.status == 204
    drawn = [emu.latency_for(Provider.XERO, "Invoices") for _ in range(400)]
    assert all(0.1 <= delay <= 0.3 for delay in drawn) and max(drawn) - min(drawn) > 0.15
    async with http.post(config, json={"provider": "xero", "latency": 0.02}) as resp:
        assert resp.status == 204
    assert {emu.latency_for(Provider.XERO, "Invoices") for _ in range(20)} == {0.02}
    for bad in ([0.3, 0.1], [0.1], [0.1, 0.2, 0.3], ["soon", 1]):
        async with http.post(config, json={"provider": "xero", "latency": bad}) as resp:
            assert resp.status == 400, bad
    assert emu.latency_for(Provider.XERO, "Invoices") == 0.02
    with pytest.raises(ValueError, match="up_to"):
        emu.set_latency("xero", 0.2, up_to=0.1)


async def test_access_and_refresh_tokens_expire_on_the_injected_clock(http: aiohttp.ClientSession) -> None:
    clock = ManualClock()
    async with Emulator(clock=clock) as emu:
        emu.register_client("quickbooks", *CLIENT)
        emu.set_access_ttl("quickbooks", 60)
        emu.set_refresh_ttl("quickbooks", 600)
        _, token = emu.issue_grant("quickbooks")
        status, body = await refresh(http, emu, "quickbooks", token)
        assert status == 200
        assert body["expires_in"] == 60 and body["x_refresh_token_expires_in"] == 600
        access = body["access_token"]
        assert emu.validate_access_token("quickbooks", access)
        assert emu.grant_for_access_token("quickbooks", access) is not None
        assert not emu.validate_access_token("xero", access)

        clock.advance(61)
        assert not emu.validate_access_token("quickbooks", access)
        clock.advance(540)  # 601 s after the last refresh: the refresh token is gone too
        assert await refresh(http, emu, "quickbooks", body["refresh_token"]) == (
            400,
            {"error": "invalid_grant"},
        )


async def test_access_tokens_really_expire(emu: Emulator, http: aiohttp.ClientSession) -> None:
    emu.set_access_ttl("xero", 0.2)
    _, token = emu.issue_grant("xero")
    _, body = await refresh(http, emu, "xero", token)
    assert body["expires_in"] == 0.2
    assert emu.validate_access_token("xero", body["access_token"])
    await asyncio.sleep(0.25)
    assert not emu.validate_access_token("xero", body["access_token"])


# ----- NetSuite client credentials ------------------------------------------------------------------


@pytest.fixture(scope="module")
def signing_keys() -> dict[str, Any]:
    return {
        "PS256": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ES256": ec.generate_private_key(ec.SECP256R1()),
    }


def assertion(
    emu: Emulator,
    key: Any,
    alg: str = "PS256",
    kid: str = "cert-1",
    lifetime: float = 300,
    **claims: Any,
) -> str:
    """A NetSuite client-credentials JWT; `claims` override the defaults."""
    now = int(emu.clock())
    payload = {
        "iss": "ns-client",
        "scope": ["rest_webservices", "restlets"],
        "aud": emu.token_url("netsuite"),
        "iat": now,
        "exp": now + lifetime,
    } | claims
    return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid, "typ": "JWT"})


async def client_credentials(
    http: aiohttp.ClientSession, emu: Emulator, token: str, assertion_type: str | None = None
) -> tuple[int, dict[str, Any]]:
    data = {
        "grant_type": "client_credentials",
        "client_assertion_type": assertion_type or "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": token,
    }
    async with http.post(emu.token_url("netsuite"), data=data) as resp:
        return resp.status, await resp.json()


@pytest.mark.parametrize("alg", ["PS256", "ES256"])
async def test_netsuite_client_credentials(
    emu: Emulator, http: aiohttp.ClientSession, signing_keys: dict[str, Any], alg: str
) -> None:
    key = signing_keys[alg]
    emu.register_jwt_key("netsuite", "ns-client", "cert-1", key.public_key())
    status, body = await client_credentials(http, emu, assertion(emu, key, alg, lifetime=3599))
    assert status == 200, body
    assert body["token_type"] == "bearer" and body["expires_in"] == "3600"
    assert "refresh_token" not in body
    assert emu.validate_access_token("netsuite", body["access_token"])
    assert emu.grant_for_access_token("netsuite", body["access_token"]) is None
    assert emu.events("netsuite", "client_credentials") == 1
    assert emu.refreshes("netsuite") == 0


async def test_netsuite_key_can_be_registered_as_pem(
    emu: Emulator, http: aiohttp.ClientSession, signing_keys: dict[str, Any]
) -> None:
    from cryptography.hazmat.primitives import serialization

    key = signing_keys["ES256"]
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    emu.register_jwt_key("netsuite", "ns-client", "cert-pem", pem.decode())
    assert (await client_credentials(http, emu, assertion(emu, key, "ES256", kid="cert-pem")))[0] == 200


@pytest.mark.parametrize(
    "case",
    [
        "foreign-key",
        "lifetime-60-min",
        "unknown-kid",
        "rs256",
        "wrong-iss",
        "wrong-aud",
        "expired",
        "bad-scope",
        "not-a-jwt",
    ],
)
async def test_netsuite_rejects_bad_assertions(
    emu: Emulator, http: aiohttp.ClientSession, signing_keys: dict[str, Any], case: str
) -> None:
    key = signing_keys["PS256"]
    emu.register_jwt_key("netsuite", "ns-client", "cert-1", key.public_key())
    token = {
        "foreign-key": lambda: assertion(emu, rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        "lifetime-60-min": lambda: assertion(emu, key, lifetime=3600),
        "unknown-kid": lambda: assertion(emu, key, kid="cert-2"),
        "rs256": lambda: assertion(emu, key, alg="RS256"),
        "wrong-iss": lambda: assertion(emu, key, iss="someone-else"),
        "wrong-aud": lambda: assertion(emu, key, aud="https://example.com/token"),
        "expired": lambda: assertion(emu, key, iat=int(emu.clock()) - 600, exp=int(emu.clock()) - 10),
        "bad-scope": lambda: assertion(emu, key, scope="everything"),
        "not-a-jwt": lambda: "not.a.jwt",
    }[case]()
    status, body = await client_credentials(http, emu, token)
    assert status == 401 and body["error"] == "invalid_client", body
    assert emu.events("netsuite", "client_credentials") == 0
    # A good assertion still works right after.
    assert (await client_credentials(http, emu, assertion(emu, key)))[0] == 200


async def test_netsuite_requires_the_jwt_bearer_assertion_type(
    emu: Emulator, http: aiohttp.ClientSession, signing_keys: dict[str, Any]
) -> None:
    key = signing_keys["PS256"]
    emu.register_jwt_key("netsuite", "ns-client", "cert-1", key.public_key())
    status, body = await client_credentials(http, emu, assertion(emu, key), assertion_type="urn:other")
    assert (status, body["error"]) == (400, "invalid_request")


# ----- counters ---------------------------------------------------------------------------------------


async def test_counters_by_provider_and_endpoint(emu: Emulator, http: aiohttp.ClientSession) -> None:
    _, token = emu.issue_grant("quickbooks")
    await refresh(http, emu, "quickbooks", token)
    await refresh(http, emu, "quickbooks", token)
    async with http.post(emu.revoke_url("quickbooks"), json={"token": "nope"}, headers=basic(*CLIENT)):
        pass
    assert emu.calls("quickbooks") == 2
    assert emu.calls("quickbooks", "revoke") == 1
    assert emu.calls("xero") == 0
    counters = emu.counters()["quickbooks"]
    assert counters["calls"] == {"token": 2, "revoke": 1}
    assert counters["events"]["refresh"] == 1 and counters["events"]["invalid_grant"] == 1

    emu.reset_counters()
    assert emu.calls("quickbooks") == 0 and emu.refreshes("quickbooks") == 0 and emu.counters() == {}


async def test_the_request_log_has_each_data_api_request_from_arrival_to_answer(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    realm, tenant = "9341453908000000", "c2cc9b6e-9458-4c7d-93cc-f02b81b0594f"
    qb_token, _ = emu.issue_grant("quickbooks", accounts=[realm])
    xero_token, _ = emu.issue_grant("xero", accounts=[tenant])
    emu.set_latency("quickbooks", 0.3, endpoint="cdc")
    emu.set_api_limits("quickbooks", concurrent=2)
    since = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() - 3600))

    async def cdc() -> int:
        async with http.get(
            emu.url(f"/quickbooks/v3/company/{realm}/cdc"),
            params={"entities": "Invoice", "changedSince": since},
            headers={"Authorization": f"Bearer {qb_token}"},
        ) as resp:
            return resp.status

    calls = [asyncio.create_task(cdc()) for _ in range(3)]
    while len(emu.served("quickbooks", realm)) < 2:
        await asyncio.sleep(0.01)
    assert [r.ended for r in emu.served("quickbooks", realm)] == [None, None]  # in flight
    # The third was over the in-flight limit: refused before it was let in, so not logged.
    assert sorted(await asyncio.gather(*calls)) == [200, 200, 429]
    served = emu.served("quickbooks", realm)
    assert [(r.provider, r.account, r.endpoint) for r in served] == [(Provider.QUICKBOOKS, realm, "cdc")] * 2
    assert all(r.ended is not None and r.ended - r.started >= 0.29 for r in served)
    assert served[0].started <= served[1].started < (served[0].ended or 0)  # they overlapped

    headers = {"Authorization": f"Bearer {xero_token}", "xero-tenant-id": tenant}
    async with http.get(emu.url("/xero/api.xro/2.0/Invoices"), headers=headers) as resp:
        assert resp.status == 200
    assert [(r.account, r.endpoint) for r in emu.served("xero")] == [(tenant, "Invoices")]
    assert emu.served("quickbooks", "another-realm") == []
    emu.reset_counters()
    assert emu.served("quickbooks") == [] and emu.served("xero") == []


async def test_unknown_provider_is_refused_by_the_controls(emu: Emulator) -> None:
    with pytest.raises(ValueError):
        emu.set_latency("sap", 1)
    with pytest.raises(KeyError):
        emu.fail_next("custom", 1)
    with pytest.raises(ValueError):
        emu.issue_grant("xero", "not-registered")


# ----- standalone ---------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_standalone_module_serves_and_is_seedable(http: aiohttp.ClientSession) -> None:
    port = _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway.dev.emulator",
            "--port",
            str(port),
            "--client",
            "quickbooks=dev-app:dev-secret",
            "--grant",
            "quickbooks=dev-app:seed-refresh-token",
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                async with http.get(f"{base}/_emulator/health") as resp:
                    if resp.status == 200:
                        assert "quickbooks" in (await resp.json())["providers"]
                        break
            except aiohttp.ClientConnectionError:
                pass
            assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
            assert time.monotonic() < deadline, "the emulator did not come up"
            await asyncio.sleep(0.05)

        async with http.post(
            f"{base}/quickbooks/oauth/token",
            data={"grant_type": "refresh_token", "refresh_token": "seed-refresh-token"},
            headers=basic("dev-app", "dev-secret"),
        ) as resp:
            assert resp.status == 200
            assert (await resp.json())["refresh_token"] != "seed-refresh-token"

        async with http.post(
            f"{base}/_emulator/clients", json={"provider": "xero", "client_id": "x", "client_secret": "y"}
        ) as resp:
            assert resp.status == 204
        async with http.post(f"{base}/_emulator/grants", json={"provider": "xero"}) as resp:
            seeded = await resp.json()
        async with http.post(
            f"{base}/xero/oauth/token",
            data={"grant_type": "refresh_token", "refresh_token": seeded["refresh_token"]},
            headers=basic("x", "y"),
        ) as resp:
            assert resp.status == 200
        async with http.post(f"{base}/_emulator/grants", json={"provider": "nope"}) as resp:
            assert resp.status == 400
        async with http.get(f"{base}/_emulator/counters") as resp:
            counters = await resp.json()
        assert counters["quickbooks"]["events"]["refresh"] == 1
        assert counters["xero"]["calls"]["token"] == 1
    finally:
        process.terminate()
        out, err = process.communicate(timeout=10)
    assert process.returncode == 0, err.decode()
    assert f"{base}/quickbooks/oauth/token" in out.decode()
    assert f"{base}/xero/connections" in out.decode()
