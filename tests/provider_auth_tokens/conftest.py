"""Fixtures of the token tests: a key ring and a token stack on the session's real infrastructure."""

from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.settings import Settings
from provider_auth.vault import KeyRing
from tests.provider_auth_tokens.support import Stack, token_stack


@pytest.fixture
def token_settings(settings_factory: Any) -> Settings:
    """Test settings with a key ring."""
    settings: Settings = settings_factory(encryption_keys=f"k1:{KeyRing.generate_key()}")
    return settings


@pytest.fixture
async def stack(token_settings: Settings) -> AsyncIterator[Stack]:
    """A token manager against a fresh emulator (real clock)."""
    async with token_stack(token_settings) as running:
        yield running
