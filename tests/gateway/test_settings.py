"""Settings: parsing rules, error messages, and the README's table kept in step with the code."""

import pytest

from gateway.settings import ENV_PREFIX, Settings, SettingsError, load_settings
from tests.paths import REPO_ROOT

README = REPO_ROOT / "README.md"


def test_every_setting_is_documented_in_the_readme() -> None:
    text = README.read_text()
    for name in Settings.model_fields:
        assert f"`{ENV_PREFIX}{name.upper()}`" in text, name


def test_secret_lists_are_comma_separated_and_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEDGERHOOK_QUICKBOOKS_VERIFIER_TOKENS", " old-token , new-token ,")
    settings = load_settings(database_url="postgresql://x", kafka_bootstrap_servers="k:9092")
    assert [s.get_secret_value() for s in settings.quickbooks_verifier_tokens] == ["old-token", "new-token"]
    assert "old-token" not in repr(settings) and "postgresql://x" not in repr(settings)


def test_errors_name_each_setting_without_values(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(__import__("os").environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    monkeypatch.setenv("LEDGERHOOK_PORT", "seventy")
    monkeypatch.setenv("LEDGERHOOK_ACK_TIMEOUT_SECONDS", "-1")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    for name in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "PORT", "ACK_TIMEOUT_SECONDS"):
        assert f"LEDGERHOOK_{name}" in message
    assert "seventy" not in message


def test_log_level_is_case_insensitive() -> None:
    assert (
        load_settings(database_url="d", kafka_bootstrap_servers="k", log_level="debug").log_level == "DEBUG"
    )
