"""Token refreshes as OpenTelemetry spans, against the provider emulator: a `token refresh` span per
refresh with a CLIENT `token request` child per call to the token endpoint, naming the provider,
grant and outcome (a refused grant marks both failed), never a token; the proactive refresher's
refreshes are traces of their own."""

from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode, Tracer

from gateway.dev.emulator import ManualClock
from gateway.settings import Settings
from provider_auth.oauth.client import TokenClient
from provider_auth.providers import Provider
from provider_auth.tokens import CredentialStore, ReauthRequired, TokenManager, TokenMetrics, TokenPolicy
from provider_auth.tokens.refresher import Refresher
from tests.provider_auth.tokens.token_support import (
    TokenStack,
    connection_events,
    emulator_apps,
    token_stack,
)

XERO = Provider.XERO


def in_memory() -> tuple[Tracer, InMemorySpanExporter]:
    """A tracer whose spans land in the returned exporter as they end."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("tests"), exporter


def traced_manager(stack: TokenStack, tracer: Tracer, **policy: Any) -> TokenManager:
    """A manager like the stack's (same database, broker, emulator and clock) with a tracer."""
    clock = stack.manager.clock
    return TokenManager(
        CredentialStore(stack.pool, stack.keyring),
        TokenClient(stack.http, timeout=2.0, clock=clock),
        emulator_apps(stack.emu),
        connection_events(stack.producer, stack.settings.topic_account_events),
        policy=TokenPolicy(**({"backoff_base": 0.05, "backoff_cap": 0.5} | policy)),
        metrics=TokenMetrics(),
        clock=clock,
        tracer=tracer,
    )


def named(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


def texts(spans: tuple[ReadableSpan, ...]) -> str:
    return " ".join(f"{key}={value!r}" for span in spans for key, value in (span.attributes or {}).items())


async def test_a_refresh_is_a_span_with_its_token_request_and_never_a_token(stack: TokenStack) -> None:
    tracer, exporter = in_memory()
    manager = traced_manager(stack, tracer)
    connection_id, access, refresh = await stack.connect(XERO, expires_in=5, manager=manager)  # not fresh

    token = await manager.get_access_token(connection_id)
    assert token.token != access and stack.emu.refreshes(XERO) == 1
    spans = exporter.get_finished_spans()
    [refreshing] = named(spans, "token refresh")
    [calling] = named(spans, "token request")
    assert len(spans) == 2
    assert refreshing.parent is None  # nothing traced around it here
    assert calling.parent is not None and calling.parent.span_id == refreshing.context.span_id
    assert calling.kind is SpanKind.CLIENT and refreshing.kind is SpanKind.INTERNAL
    assert dict(refreshing.attributes or {}) == {
        "ledgerhook.grant_id": token.grant_id,
        "ledgerhook.refresh.proactive": False,
        "ledgerhook.provider": "xero",
        "ledgerhook.outcome": "refreshed",
    }
    assert dict(calling.attributes or {}) == {
        "ledgerhook.provider": "xero",
        "ledgerhook.grant_id": token.grant_id,
        "ledgerhook.grant_type": "refresh_token",
        "ledgerhook.outcome": "success",
    }
    assert refreshing.status.status_code is StatusCode.UNSET
    for secret in (access, refresh, token.token):
        assert secret not in texts(spans)

    # The customer revoked the app: the provider refuses the grant, and the spans say so.
    exporter.clear()
    assert stack.emu.revoke(XERO, token.token)
    try:
        await manager.refused(connection_id, token.token)
    except ReauthRequired:
        pass
    else:
        raise AssertionError("a revoked grant still refreshed")
    spans = exporter.get_finished_spans()
    refreshes = named(spans, "token refresh")
    calls = named(spans, "token request")
    assert refreshes and calls
    assert {dict(span.attributes or {})["ledgerhook.outcome"] for span in refreshes} == {"needs_reauth"}
    assert {dict(span.attributes or {})["ledgerhook.outcome"] for span in calls} == {"invalid_grant"}
    assert {span.status.status_code for span in spans} == {StatusCode.ERROR}
    for call in calls:  # each call is inside the refresh that made it
        assert call.parent is not None
        assert call.parent.span_id in {span.context.span_id for span in refreshes}


async def test_the_refresher_s_refreshes_are_spans_of_their_own(token_settings: Settings) -> None:
    clock = ManualClock()
    tracer, exporter = in_memory()
    async with token_stack(token_settings, clock=clock) as stack:
        manager = traced_manager(stack, tracer)
        await stack.connect(XERO, expires_in=30 * 60, manager=manager)
        clock.advance(3600)  # long past due
        assert await Refresher(manager).run_once() == {"refreshed": 1}
    [refreshing] = named(exporter.get_finished_spans(), "token refresh")
    assert refreshing.parent is None
    attributes = dict(refreshing.attributes or {})
    assert attributes["ledgerhook.refresh.proactive"] is True
    assert attributes["ledgerhook.outcome"] == "refreshed"
