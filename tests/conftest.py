"""Session-wide real infrastructure: embedded PostgreSQL and an embedded Kafka-compatible broker."""

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from gateway.dev.embedded import EmbeddedBroker, EmbeddedPostgres, free_port
from gateway.settings import Settings
from tests.support import RunningGateway, fresh_database, make_settings, running_gateway


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL server for the whole session."""
    server = EmbeddedPostgres(tmp_path_factory.mktemp("postgres") / "data", cleanup="delete")
    url = server.start()
    yield url
    server.stop()


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """A Tansu broker for the whole session (tests that stop a broker start their own)."""
    instance = EmbeddedBroker(free_port(), log_path=tmp_path_factory.mktemp("broker") / "broker.log")
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture
def settings(postgres_url: str, broker: EmbeddedBroker) -> Settings:
    """Settings pointing at the session's infrastructure, with topics of this test's own."""
    return make_settings(postgres_url, broker.bootstrap)


@pytest.fixture
def settings_factory(postgres_url: str, broker: EmbeddedBroker) -> Any:
    """Build settings for the session's infrastructure with overrides."""

    def build(**overrides: Any) -> Settings:
        database_url = overrides.pop("database_url", postgres_url)
        return make_settings(database_url, broker.bootstrap, **overrides)

    return build


@pytest.fixture
async def gateway(settings: Settings) -> AsyncIterator[RunningGateway]:
    """A gateway serving real HTTP on loopback, with this test's settings."""
    async with running_gateway(settings) as running:
        yield running


@pytest.fixture
async def database_url(postgres_url: str) -> AsyncIterator[str]:
    """A database of the test's own, for tests whose subject reads whole tables (the poller syncs
    every connection there is, the refresher every grant)."""
    async with fresh_database(postgres_url, "own") as url:
        yield url
