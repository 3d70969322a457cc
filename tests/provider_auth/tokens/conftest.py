"""Fixtures of the token tests: a database of their own per test, a key ring, a token stack."""

from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.settings import Settings
from provider_auth.vault import KeyRing
from tests.provider_auth.tokens.token_support import TokenStack, token_stack


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
