"""`ledgerhook dev` keeps a key ring of its own (mode 0600, reused across restarts) unless one is
configured, and points connection webhook URLs at itself."""

import os
import stat
from pathlib import Path

import pytest

from gateway.dev.stack import ENCRYPTION_KEYS_FILE, DevOptions, dev_settings
from provider_auth.vault import KeyRing


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("LEDGERHOOK_"):
            monkeypatch.delenv(name)


def test_dev_makes_a_private_key_ring_and_reuses_it(tmp_path: Path) -> None:
    options = DevOptions(port=8123, data_dir=tmp_path / "state")
    first = dev_settings(options, "postgresql://dev", "127.0.0.1:9092")
    path = options.data_dir / ENCRYPTION_KEYS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert first.encryption_keys is not None
    ring = KeyRing.parse(first.encryption_keys.get_secret_value())
    sealed = ring.encrypt(b"verifier", b"aad")

    again = dev_settings(options, "postgresql://dev", "127.0.0.1:9092")
    assert again.encryption_keys is not None
    assert KeyRing.parse(again.encryption_keys.get_secret_value()).decrypt(sealed, b"aad") == b"verifier"
    assert first.public_base_url == "http://127.0.0.1:8123"


def test_a_configured_key_ring_and_public_url_win(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    configured = f"prod:{KeyRing.generate_key()}"
    monkeypatch.setenv("LEDGERHOOK_ENCRYPTION_KEYS", configured)
    monkeypatch.setenv("LEDGERHOOK_PUBLIC_BASE_URL", "https://tunnel.example.test")
    options = DevOptions(data_dir=tmp_path / "state")
    settings = dev_settings(options, "postgresql://dev", "127.0.0.1:9092")
    assert settings.encryption_keys is not None
    assert settings.encryption_keys.get_secret_value() == configured
    assert settings.public_base_url == "https://tunnel.example.test"
    assert not (options.data_dir / ENCRYPTION_KEYS_FILE).exists()
