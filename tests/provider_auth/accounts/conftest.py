"""Fixtures of the connection tests: a migrated database of their own per test."""

from collections.abc import AsyncIterator

import pytest

from tests.support import fresh_database


@pytest.fixture
async def database_url(postgres_url: str) -> AsyncIterator[str]:
    """A fresh, migrated database on the session's server: key rotation walks every connection, so no
    other test's secrets (under other keys) may be there."""
    async with fresh_database(postgres_url, "accounts", migrated=True) as url:
        yield url
