"""Fixtures of the fan-out worker tests: a gateway on loopback and the worker's infrastructure."""

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.runtime.infra import open_infrastructure
from gateway.settings import Settings
from provider_auth.accounts.store import ConnectionStore
from tests.fanout.pipeline.pipeline_support import PipelineStack
from tests.support import running_gateway


@pytest.fixture
def settings(settings_factory: Any) -> Settings:
    """This test's topics and a consumer group of its own (a killed member must not hold it up)."""
    return settings_factory(  # type: ignore[no-any-return]
        worker_group_id=f"fanout-{uuid.uuid4().hex[:8]}",
        worker_session_timeout_ms=1000,  # the dev broker holds a join for half the session timeout
    )


@pytest.fixture
async def stack(settings: Settings) -> AsyncIterator[PipelineStack]:
    """Gateway serving real HTTP, plus a pool and producer of the test's own (as the worker has)."""
    async with running_gateway(settings) as gateway, open_infrastructure(settings) as infra:
        yield PipelineStack(settings, gateway, infra)


@pytest.fixture
def store(stack: PipelineStack) -> ConnectionStore:
    """Connections, registered straight in PostgreSQL."""
    return ConnectionStore(stack.infra.pool, keyring=None)
