"""Settings: parsing rules, error messages, and the README's table kept in step with the code."""

import os
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.settings import ENV_PREFIX, Settings, SettingsError, load_settings
from provider_auth.vault import KeyRing
from tests.paths import REPO_ROOT

README = REPO_ROOT / "README.md"
VALID = {
    "database_url": "postgresql://ledgerhook:pw@db.internal:5432/ledgerhook",
    "kafka_bootstrap_servers": "k:9092",
}


@pytest.fixture(autouse=True)
def _no_ledgerhook_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


def problems(**overrides: Any) -> dict[str, str]:
    """The settings named in the SettingsError for VALID with `overrides`, and the reason for each."""
    with pytest.raises(SettingsError) as caught:
        load_settings(**(VALID | overrides))
    head, *lines = str(caught.value).splitlines()
    assert head == "invalid configuration:"
    named = dict(line.strip().split(": ", 1) for line in lines)
    assert len(named) == len(lines), "one line per setting"
    return named


def pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


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
    monkeypatch.setenv("LEDGERHOOK_PORT", "seventy")
    monkeypatch.setenv("LEDGERHOOK_ACK_TIMEOUT_SECONDS", "-1")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    for name in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "PORT", "ACK_TIMEOUT_SECONDS"):
        assert f"LEDGERHOOK_{name}" in message
    assert "seventy" not in message


def test_log_level_is_case_insensitive() -> None:
    assert load_settings(**VALID, log_level="debug").log_level == "DEBUG"


# The key ring.


def test_a_key_ring_that_does_not_parse_is_named_without_its_key_material() -> None:
    key = KeyRing.generate_key()
    assert problems(encryption_keys=key) == {
        "LEDGERHOOK_ENCRYPTION_KEYS": "key 1: expected 'kid:base64key' (`ledgerhook keys generate` makes one)"
    }
    short = problems(encryption_keys=f"k1:{KeyRing.generate_key()},k2:c2hvcnQ=")
    assert short == {
        "LEDGERHOOK_ENCRYPTION_KEYS": "key 'k2' is 5 bytes after base64 decoding, AES-256 needs 32"
        " (`ledgerhook keys generate` makes one)"
    }
    with pytest.raises(SettingsError) as caught:
        load_settings(**VALID, encryption_keys=f"{key}:k1")  # swapped: the key where the id goes
    assert key not in str(caught.value) and key[:12] not in str(caught.value)


def test_a_good_key_ring_passes_and_a_blank_one_is_unset() -> None:
    ring = f"k2:{KeyRing.generate_key()}, k1:{KeyRing.generate_key()}"
    keys = load_settings(**VALID, encryption_keys=ring).encryption_keys
    assert keys is not None and keys.get_secret_value() == ring
    assert load_settings(**VALID, encryption_keys="  ").encryption_keys is None


# The database.


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        (
            "mysql://ledgerhook:pw@db:3306/ledgerhook",
            "must be a PostgreSQL DSN, postgresql://user:password@host:5432/database",
        ),
        ("db.internal:5432", "must be a PostgreSQL DSN, postgresql://user:password@host:5432/database"),
        (
            "postgresql://ledgerhook:pw@/ledgerhook",
            "names no host: add one (postgresql://user@host:5432/db) or ?host=/socket/dir",
        ),
        ("postgresql://ledgerhook@db:99999/ledgerhook", "has a port that is not a number from 1 to 65535"),
        (
            "postgresql://ledgerhook:p/w@db/ledgerhook",  # an unencoded `/` in the password
            "has a port that is not a number from 1 to 65535"
            " (percent-encode `/`, `@` or `:` in the password)",
        ),
    ],
)
def test_the_database_url_must_be_a_postgresql_dsn_with_a_host(url: str, reason: str) -> None:
    named = problems(database_url=url)
    assert named == {"LEDGERHOOK_DATABASE_URL": reason}
    assert "pw" not in reason and "p/w" not in reason


@pytest.mark.parametrize(
    "url",
    [
        "postgres://ledgerhook:pw@db.internal/ledgerhook",
        "postgresql://ledgerhook@db1:5432,db2:5433/ledgerhook?sslmode=require",
        "postgresql://postgres:@/postgres?host=/run/postgresql",
        "postgresql://ledgerhook@[::1]:5432/ledgerhook",
        "postgresql://ledgerhook:p%2Fw@db/ledgerhook",
    ],
)
def test_postgresql_dsns_of_every_form_pass(url: str) -> None:
    assert load_settings(**(VALID | {"database_url": url})).database_url.get_secret_value() == url


# URLs.


@pytest.mark.parametrize(
    ("field", "url", "reason"),
    [
        ("public_base_url", "gateway.example.com", "must be an http:// or https:// URL with a host"),
        ("public_base_url", "ftp://gateway.example.com", "must be an http:// or https:// URL with a host"),
        ("xero_token_url", "https://", "must be an http:// or https:// URL with a host"),
        (
            "quickbooks_api_base_url",
            "https://api.example.com:70000",
            "has a port that is not a number from 1 to 65535",
        ),
        ("sage_intacct_token_url", "https://api.example.com/a b", "must be a URL without spaces"),
        (
            "netsuite_token_url",
            "https://{acount}.suitetalk.api.netsuite.com/token",
            "has an unknown placeholder {acount};"
            " URL templates may use {account}, {accounts_server} and {api_domain}",
        ),
        (
            "quickbooks_revoke_url",
            "developer.api.intuit.com/revoke",
            "must be an http:// or https:// URL with a host",
        ),
    ],
)
def test_urls_must_be_http_with_a_host(field: str, url: str, reason: str) -> None:
    assert problems(**{field: url}) == {f"LEDGERHOOK_{field.upper()}": reason}


def test_the_default_url_templates_and_emulator_urls_pass() -> None:
    defaults = load_settings(**VALID)
    assert defaults.netsuite_token_url.startswith("https://{account}.")
    assert defaults.zoho_books_token_url.startswith("{accounts_server}/")
    assert defaults.zoho_books_api_base_url.startswith("{api_domain}/")
    emulated = load_settings(
        **VALID,
        zoho_books_token_url="http://127.0.0.1:8900/zoho-books/oauth/token",
        netsuite_api_base_url="http://localhost:8900/netsuite",
        public_base_url=" https://tunnel.example.test ",
        quickbooks_revoke_url="",
    )
    assert emulated.public_base_url == "https://tunnel.example.test"
    assert emulated.quickbooks_revoke_url == ""


# Kafka.


@pytest.mark.parametrize(
    ("servers", "reason"),
    [
        ("kafka", "entry 1: expected host:port"),
        ("kafka-0:9092,kafka-1", "entry 2: expected host:port"),
        ("kafka:99999", "entry 1: the port must be a number from 1 to 65535"),
        ("kafka:ninety", "entry 1: the port must be a number from 1 to 65535"),
        ("PLAINTEXT://kafka:9092", "entry 1: expected host:port, without a scheme or spaces"),
        ("kafka-0:9092,,kafka-1:9092", "entry 2 is empty; expected host:port,host:port"),
        ("", "entry 1 is empty; expected host:port,host:port"),
    ],
)
def test_bootstrap_servers_are_host_port_pairs(servers: str, reason: str) -> None:
    assert problems(kafka_bootstrap_servers=servers) == {"LEDGERHOOK_KAFKA_BOOTSTRAP_SERVERS": reason}


def test_bootstrap_servers_of_every_form_pass() -> None:
    servers = load_settings(
        **(VALID | {"kafka_bootstrap_servers": " kafka-0:9092, [::1]:9093,10.0.0.7:19092,"})
    )
    assert servers.kafka_bootstrap_servers == "kafka-0:9092,[::1]:9093,10.0.0.7:19092"


def test_sasl_settings_must_agree_with_each_other(tmp_path: Path) -> None:
    assert problems(kafka_security_protocol="SASL_SSL") == {
        "LEDGERHOOK_KAFKA_SASL_MECHANISM": "is required with LEDGERHOOK_KAFKA_SECURITY_PROTOCOL=SASL_SSL"
    }
    assert problems(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512") == {
        "LEDGERHOOK_KAFKA_SASL_USERNAME": "is required with LEDGERHOOK_KAFKA_SASL_MECHANISM",
        "LEDGERHOOK_KAFKA_SASL_PASSWORD": "is required with LEDGERHOOK_KAFKA_SASL_MECHANISM",
    }
    assert problems(kafka_sasl_mechanism="PLAIN", kafka_sasl_username="u", kafka_sasl_password="hunter2") == {
        "LEDGERHOOK_KAFKA_SASL_MECHANISM": "is set, but LEDGERHOOK_KAFKA_SECURITY_PROTOCOL is PLAINTEXT:"
        " use SASL_SSL or SASL_PLAINTEXT"
    }
    assert problems(kafka_sasl_username="u", kafka_sasl_password="hunter2") == {
        "LEDGERHOOK_KAFKA_SASL_USERNAME": "is set, but LEDGERHOOK_KAFKA_SASL_MECHANISM is not",
        "LEDGERHOOK_KAFKA_SASL_PASSWORD": "is set, but LEDGERHOOK_KAFKA_SASL_MECHANISM is not",
    }
    complete = load_settings(
        **VALID,
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="SCRAM-SHA-256",
        kafka_sasl_username="ledgerhook",
        kafka_sasl_password="hunter2",
    )
    assert complete.kafka_sasl_password is not None and "hunter2" not in repr(complete)


def test_the_ssl_cafile_must_exist_and_be_used(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-ca.pem"
    assert problems(kafka_security_protocol="SSL", kafka_ssl_cafile=str(missing)) == {
        "LEDGERHOOK_KAFKA_SSL_CAFILE": "is not a file that exists"
    }
    cafile = tmp_path / "ca.pem"
    cafile.write_text("-----BEGIN CERTIFICATE-----\n")
    assert problems(kafka_ssl_cafile=str(cafile)) == {
        "LEDGERHOOK_KAFKA_SSL_CAFILE": "is set, but LEDGERHOOK_KAFKA_SECURITY_PROTOCOL is PLAINTEXT:"
        " use SSL or SASL_SSL"
    }
    assert (
        load_settings(**VALID, kafka_security_protocol="SSL", kafka_ssl_cafile=str(cafile)).kafka_ssl_cafile
        == cafile
    )


def test_topic_names_follow_kafkas_rule() -> None:
    assert problems(topic_raw="webhooks raw", topic_changes="x" * 250, topic_quarantine="..") == {
        f"LEDGERHOOK_{name}": "must be 1 to 249 of the characters A-Z a-z 0-9 . _ -"
        for name in ("TOPIC_RAW", "TOPIC_CHANGES", "TOPIC_QUARANTINE")
    }


# Admin tokens.


def test_admin_tokens_are_whole_words() -> None:
    assert problems(admin_tokens="token-one,,token-two") == {"LEDGERHOOK_ADMIN_TOKENS": "entry 2 is empty"}
    assert problems(admin_tokens="Bearer token-one") == {
        "LEDGERHOOK_ADMIN_TOKENS": "entry 1 contains whitespace; set the token alone, without `Bearer`"
    }
    tokens = load_settings(**VALID, admin_tokens=" token-one , token-two ").admin_tokens
    assert [t.get_secret_value() for t in tokens] == ["token-one", "token-two"]
    assert load_settings(**VALID, admin_tokens=" ").admin_tokens == ()  # the admin API off


# Numbers.


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("startup_timeout_seconds", -1, "Input should be greater than or equal to 0"),
        ("startup_timeout_seconds", 601, "Input should be less than or equal to 600"),
        ("token_refresh_skew_seconds", 1800, "Input should be less than 1800"),
        ("workers", 0, "Input should be greater than or equal to 1"),
        ("ack_timeout_seconds", 120, "Input should be less than or equal to 60"),
        ("max_body_bytes", 1 << 30, "Input should be less than or equal to 67108864"),
        ("dedupe_retention_days", 3650, "Input should be less than or equal to 365"),
        ("poll_interval_seconds", 0, "Input should be greater than or equal to 1"),
    ],
)
def test_numbers_are_in_range(field: str, value: float, reason: str) -> None:
    assert problems(**{field: value}) == {f"LEDGERHOOK_{field.upper()}": reason}


def test_the_startup_timeout_defaults_to_half_a_minute() -> None:
    assert load_settings(**VALID).startup_timeout_seconds == 30
    assert load_settings(**VALID, startup_timeout_seconds=0).startup_timeout_seconds == 0


# NetSuite's machine-to-machine key.


def test_the_netsuite_key_must_load_and_fit_the_algorithm() -> None:
    rsa_key = pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    ec_key = pem(ec.generate_private_key(ec.SECP256R1()))
    assert problems(netsuite_jwt_key_id="cert-1", netsuite_jwt_private_key="not a key") == {
        "LEDGERHOOK_NETSUITE_JWT_PRIVATE_KEY": "is not an unencrypted PEM private key"
    }
    assert problems(netsuite_jwt_private_key=rsa_key) == {
        "LEDGERHOOK_NETSUITE_JWT_PRIVATE_KEY": "needs LEDGERHOOK_NETSUITE_JWT_KEY_ID too (the certificate id)"
    }
    named = problems(netsuite_jwt_key_id="cert-1", netsuite_jwt_private_key=ec_key)  # PS256 by default
    assert named == {
        "LEDGERHOOK_NETSUITE_JWT_ALGORITHM": "PS256 needs an RSA key in LEDGERHOOK_NETSUITE_JWT_PRIVATE_KEY"
    }
    assert "PRIVATE KEY" not in str(named)
    for algorithm, key in (("PS256", rsa_key), ("ES256", ec_key)):
        settings = load_settings(
            **VALID,
            netsuite_jwt_key_id="cert-1",
            netsuite_jwt_private_key=key,
            netsuite_jwt_algorithm=algorithm,
        )
        assert settings.netsuite_jwt_algorithm == algorithm


# All together.


def test_everything_invalid_is_reported_in_one_message(monkeypatch: pytest.MonkeyPatch) -> None:
    secret_key = KeyRing.generate_key()
    environment = {
        "DATABASE_URL": "mysql://ledgerhook:db-pass-77@db:3306/ledgerhook",
        "KAFKA_BOOTSTRAP_SERVERS": "kafka-0",
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "ENCRYPTION_KEYS": secret_key,
        "ADMIN_TOKENS": "admin-token-1,,admin-token-2",
        "PUBLIC_BASE_URL": "gateway.example.com",
        "XERO_TOKEN_URL": "identity.xero.com/connect/token",
        "STARTUP_TIMEOUT_SECONDS": "-5",
        "WORKERS": "many",
    }
    for name, value in environment.items():
        monkeypatch.setenv(f"LEDGERHOOK_{name}", value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    lines = message.splitlines()[1:]
    named = {line.split(":")[0].strip() for line in lines}
    assert len(named) == len(lines)
    wanted = {f"LEDGERHOOK_{name}" for name in environment} - {"LEDGERHOOK_KAFKA_SECURITY_PROTOCOL"}
    assert named == wanted | {"LEDGERHOOK_KAFKA_SASL_MECHANISM"}
    for secret in ("db-pass-77", secret_key, "admin-token-1", "kafka-0", "gateway.example.com", "many"):
        assert secret not in message
