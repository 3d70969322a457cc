"""Fixtures of the token tests: a database of their own per test, a key ring, a token stack."""

import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from gateway.settings import Settings
from provider_auth.vault import KeyRing
from tests.provider_auth.tokens.token_support import TokenStack, token_stack


@pytest.fixture
async def database_url(postgres_url: str) -> AsyncIterator[str]:
    """A fresh database on the session's server: the refresher and key rotation see every row, so
    no other test's grants (under other keys) may be there."""
    name = f"tokens_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    parts = urlsplit(postgres_url)
    yield urlunsplit(parts._replace(path=f"/{name}"))
    admin = await asyncpg.connect(postgres_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
def token_settings(settings_factory: Any, database_url: str) -> Settings:
    """Test settings with a key ring, on the test's own database."""
    settings: Settings = settings_factory(
        database_url=database_url, encryption_keys=f"k1:{KeyRing.generate_key()}"
    )
    return settings


@pytest.fixture
async def stack(token_settings: Settings) -> AsyncIterator[TokenStack]:
    """A token manager against a fresh emulator (real clock)."""
    async with token_stack(token_settings) as running:
        yield running
