"""Fixtures of the change poller's tests: a token stack on a database of the test's own."""

from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.settings import Settings
from provider_auth.vault import KeyRing
from tests.provider_auth.tokens.token_support import TokenStack, token_stack


@pytest.fixture
async def stack(settings_factory: Any, database_url: str) -> AsyncIterator[TokenStack]:
    """A token manager against a fresh emulator, on the test's database and topics."""
    settings: Settings = settings_factory(
        database_url=database_url, encryption_keys=f"k1:{KeyRing.generate_key()}"
    )
    async with token_stack(settings) as running:
        yield running
