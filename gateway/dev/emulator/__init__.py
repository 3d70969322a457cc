"""A local stand-in for the accounting providers' APIs, for tests, benchmarks and the dev stack.

Start one with `async with Emulator() as emu:` (see app.py) or `python -m gateway.dev.emulator`; it
is what `ledgerhook dev --emulator` runs (docs/tokens.md, "Trying it locally").
"""

from .app import Emulator, build_app
from .profiles import PROFILES, ProviderProfile, emulated_providers, profile
from .state import (
    AccessToken,
    Clock,
    EmulatorState,
    GrantInfo,
    IssuedGrant,
    ManualClock,
    ProviderConfig,
    ServedRequest,
)

__all__ = [
    "PROFILES",
    "AccessToken",
    "Clock",
    "Emulator",
    "EmulatorState",
    "GrantInfo",
    "IssuedGrant",
    "ManualClock",
    "ProviderConfig",
    "ProviderProfile",
    "ServedRequest",
    "build_app",
    "emulated_providers",
    "profile",
]
