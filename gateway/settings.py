"""Configuration from `LEDGERHOOK_*` environment variables, validated once at start.

Every `LEDGERHOOK_*` variable is read here and nowhere else. The processes' settings are listed in
the README's configuration table (keep the two in step); the client commands' few are in its
command-line section.
"""

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, NoDecode, SettingsConfigDict

from fanout.polling.budget import DEFAULT_LIMITS
from provider_auth.oauth.specs import SPECS
from provider_auth.providers import Provider
from provider_auth.webhooks.jwt_bearer import load_keys

ENV_PREFIX = "LEDGERHOOK_"


def _split_commas(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


# Comma-separated in the environment (`a,b,c`), several active at once for rotation.
SecretList = Annotated[tuple[SecretStr, ...], NoDecode, BeforeValidator(_split_commas)]


class SettingsError(Exception):
    """One message naming every missing or invalid setting; never echoes a value."""


class KafkaSettings(BaseSettings):
    """The Kafka part of the configuration; enough for `ledgerhook tail`."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092", description="Kafka bootstrap servers, `host:port,...`."
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_idempotent_producer: bool = Field(
        True, description="Idempotent producer; switch off only for brokers without it (the dev broker)."
    )
    kafka_client_id: str = "ledgerhook"

    # Topics.
    topic_raw: str = "ledgerhook.webhooks.raw"
    topic_changes: str = "ledgerhook.changes"
    topic_account_events: str = "ledgerhook.account-events"
    topic_quarantine: str = "ledgerhook.quarantine"
    topic_partitions: int = Field(6, ge=1, description="Partitions for topics Ledgerhook creates.")
    topic_replication_factor: int = Field(1, ge=1)


class Settings(KafkaSettings):
    """Everything a Ledgerhook process reads from its environment."""

    database_url: SecretStr = Field(description="PostgreSQL DSN (PostgreSQL 14 or newer).")
    kafka_bootstrap_servers: str = Field(description="Kafka bootstrap servers, `host:port,...`.")

    # Ingress.
    max_body_bytes: int = Field(1_048_576, gt=0, description="Largest webhook body accepted (413 above).")
    ack_timeout_seconds: float = Field(
        2.0, gt=0, description="How long a delivery waits for the broker's ack before a 503."
    )
    retry_after_seconds: int = Field(5, ge=0, description="`Retry-After` sent with a 503.")
    quickbooks_verifier_tokens: SecretList = Field(
        (), description="QuickBooks webhook verifier tokens, comma-separated (several for rotation)."
    )
    xero_webhook_keys: SecretList = Field((), description="Xero webhook keys, comma-separated.")

    # Admin API and connections.
    admin_tokens: SecretList = Field((), description="Bearer tokens for `/admin/v1`, comma-separated.")
    encryption_keys: SecretStr | None = Field(
        None, description="Key ring for secrets at rest, `kid:base64key,...` (first encrypts, all decrypt)."
    )
    public_base_url: str = Field(
        "http://localhost:8000", description="Base URL providers reach the gateway at, for webhook URLs."
    )

    # Per-connection webhook endpoints.
    connection_cache_seconds: float = Field(
        3.0, ge=0, description="Seconds connection lookups are reused by the gateway and the worker."
    )
    reconcile_webhooks: bool = Field(
        True, description="Reconcile webhook events by record version, as polled events always are."
    )
    sage_intacct_jwt_keys: str | None = Field(
        None, description="Public keys for Sage Intacct's Bearer JWT: JWKS JSON, JSON list of PEM, or PEM."
    )
    sage_intacct_jwt_issuer: str | None = Field(None, description="Required `iss` of Sage Intacct JWTs.")
    sage_intacct_jwt_audience: str | None = Field(None, description="Required `aud` of Sage Intacct JWTs.")

    # Fan-out worker.
    worker_group_id: str = Field("ledgerhook-fanout", description="Consumer group of the fan-out worker.")
    worker_batch_size: int = Field(500, ge=1, description="Raw records taken per poll.")
    dedupe_retention_days: float = Field(
        7.0, gt=0, description="How long published event ids are remembered."
    )
    worker_port: int = Field(
        9000, ge=1, le=65535, description="Port of `ledgerhook worker`'s /livez, /readyz and /metrics."
    )
    worker_session_timeout_ms: int = Field(
        10_000, ge=1000, description="Group session timeout: a silent worker loses its partitions after it."
    )

    # OAuth tokens (provider_auth, docs/tokens.md). Per provider: Ledgerhook's app at the provider
    # (client id and secret) and where its token, API and revocation endpoints are: production by
    # default, or a sandbox or the provider emulator. `{account}` (NetSuite) and `{accounts_server}`,
    # `{api_domain}` (Zoho data centre) are filled in per connection.
    quickbooks_client_id: str | None = Field(None, description="QuickBooks app client id.")
    quickbooks_client_secret: SecretStr | None = Field(None, description="QuickBooks app client secret.")
    quickbooks_token_url: str = Field(SPECS[Provider.QUICKBOOKS].oauth_endpoint, description="Token URL.")
    quickbooks_api_base_url: str = Field(SPECS[Provider.QUICKBOOKS].api_base_url, description="API base.")
    quickbooks_revoke_url: str = Field(
        SPECS[Provider.QUICKBOOKS].revoke_endpoint or "", description="QuickBooks token revocation URL."
    )
    xero_client_id: str | None = Field(None, description="Xero app client id.")
    xero_client_secret: SecretStr | None = Field(None, description="Xero app client secret.")
    xero_token_url: str = Field(SPECS[Provider.XERO].oauth_endpoint, description="Token URL.")
    xero_api_base_url: str = Field(SPECS[Provider.XERO].api_base_url, description="API base (connections).")
    zoho_books_client_id: str | None = Field(None, description="Zoho app client id.")
    zoho_books_client_secret: SecretStr | None = Field(None, description="Zoho app client secret.")
    zoho_books_token_url: str = Field(SPECS[Provider.ZOHO_BOOKS].oauth_endpoint, description="Token URL.")
    zoho_books_api_base_url: str = Field(SPECS[Provider.ZOHO_BOOKS].api_base_url, description="API base.")
    freshbooks_client_id: str | None = Field(None, description="FreshBooks app client id.")
    freshbooks_client_secret: SecretStr | None = Field(None, description="FreshBooks app client secret.")
    freshbooks_token_url: str = Field(SPECS[Provider.FRESHBOOKS].oauth_endpoint, description="Token URL.")
    freshbooks_api_base_url: str = Field(SPECS[Provider.FRESHBOOKS].api_base_url, description="API base.")
    netsuite_client_id: str | None = Field(None, description="NetSuite integration client id.")
    netsuite_client_secret: SecretStr | None = Field(None, description="NetSuite integration client secret.")
    netsuite_token_url: str = Field(SPECS[Provider.NETSUITE].oauth_endpoint, description="Token URL.")
    netsuite_api_base_url: str = Field(SPECS[Provider.NETSUITE].api_base_url, description="API base.")
    netsuite_jwt_key_id: str | None = Field(None, description="NetSuite M2M certificate id (JWT `kid`).")
    netsuite_jwt_private_key: SecretStr | None = Field(
        None, description="NetSuite M2M private key (PEM) that signs client-credentials assertions."
    )
    netsuite_jwt_algorithm: Literal["PS256", "PS384", "PS512", "ES256", "ES384", "ES512"] = Field(
        "PS256", description="Signing algorithm of the NetSuite assertion."
    )
    netsuite_jwt_scope: str = Field("rest_webservices", description="NetSuite M2M scopes, comma-separated.")
    sage_intacct_client_id: str | None = Field(None, description="Sage Intacct app client id.")
    sage_intacct_client_secret: SecretStr | None = Field(None, description="Sage Intacct app client secret.")
    sage_intacct_token_url: str = Field(SPECS[Provider.SAGE_INTACCT].oauth_endpoint, description="Token URL.")
    sage_intacct_api_base_url: str = Field(SPECS[Provider.SAGE_INTACCT].api_base_url, description="API base.")
    token_refresh_skew_seconds: float = Field(
        300.0, ge=0, description="Access tokens handed out stay valid at least this long."
    )
    token_refresh_window_seconds: float = Field(
        600.0, ge=0, description="The refresher renews tokens this long before they expire."
    )
    token_refresh_jitter_seconds: float = Field(
        120.0, ge=0, description="Up to this much earlier again, at random, so expiries spread out."
    )
    token_request_timeout_seconds: float = Field(
        15.0, gt=0, description="Bound on one call to a provider's token endpoint."
    )
    token_refresh_interval_seconds: float = Field(15.0, gt=0, description="Pause between refresher passes.")
    token_refresh_batch_size: int = Field(100, ge=1, description="Grants the refresher leases at a time.")
    token_refresh_concurrency: int = Field(
        4, ge=1, description="Refreshes one worker runs at once (each holds a database connection)."
    )
    token_max_transient_failures: int = Field(
        5, ge=1, description="Failed attempts after expiry before `refresh_unavailable` is reported."
    )
    token_cache_seconds: float = Field(
        30.0, ge=0, description="How long a process serves a fresh token from memory before re-reading."
    )

    # Rate budgets (fanout/polling/budget.py): per provider account unless named per app; the
    # defaults are the documented limits (docs/providers.md), unset means no such limit.
    quickbooks_requests_per_minute: int | None = Field(
        DEFAULT_LIMITS[Provider.QUICKBOOKS].requests_per_minute, ge=1, description="Per realm."
    )
    quickbooks_concurrency: int | None = Field(
        DEFAULT_LIMITS[Provider.QUICKBOOKS].concurrency, ge=1, description="In flight per realm."
    )
    xero_requests_per_minute: int | None = Field(
        DEFAULT_LIMITS[Provider.XERO].requests_per_minute, ge=1, description="Per tenant."
    )
    xero_concurrency: int | None = Field(
        DEFAULT_LIMITS[Provider.XERO].concurrency, ge=1, description="In flight per tenant."
    )
    xero_requests_per_day: int | None = Field(
        DEFAULT_LIMITS[Provider.XERO].requests_per_day, ge=1, description="Per tenant, any 24 hours."
    )
    xero_app_requests_per_minute: int | None = Field(
        DEFAULT_LIMITS[Provider.XERO].app_requests_per_minute, ge=1, description="Per app, all tenants."
    )
    zoho_books_requests_per_minute: int | None = Field(
        DEFAULT_LIMITS[Provider.ZOHO_BOOKS].requests_per_minute, ge=1, description="Per organization."
    )
    zoho_books_concurrency: int | None = Field(
        DEFAULT_LIMITS[Provider.ZOHO_BOOKS].concurrency, ge=1, description="In flight per organization."
    )
    netsuite_requests_per_minute: int | None = Field(
        DEFAULT_LIMITS[Provider.NETSUITE].requests_per_minute, ge=1, description="Per account."
    )
    netsuite_concurrency: int | None = Field(
        DEFAULT_LIMITS[Provider.NETSUITE].concurrency, ge=1, description="In flight per account."
    )
    sage_intacct_requests_per_minute: int | None = Field(
        DEFAULT_LIMITS[Provider.SAGE_INTACCT].requests_per_minute, ge=1, description="Per company."
    )
    sage_intacct_concurrency: int | None = Field(
        DEFAULT_LIMITS[Provider.SAGE_INTACCT].concurrency, ge=1, description="In flight per company."
    )
    freshbooks_requests_per_minute: int | None = Field(
        DEFAULT_LIMITS[Provider.FRESHBOOKS].requests_per_minute, ge=1, description="Per account."
    )
    freshbooks_concurrency: int | None = Field(
        DEFAULT_LIMITS[Provider.FRESHBOOKS].concurrency, ge=1, description="In flight per account."
    )

    # Change polling (fanout/polling/poller.py), in the worker when LEDGERHOOK_ENCRYPTION_KEYS is set.
    poll_interval_seconds: int = Field(
        300, ge=1, description="Accounts of providers without webhooks are polled this often."
    )
    sweep_interval_seconds: int = Field(
        3600, ge=1, description="Accounts of providers with webhooks (QuickBooks, Xero) are swept this often."
    )
    poll_concurrency: int = Field(8, ge=1, description="Accounts one worker polls at once.")
    poll_lease_seconds: float = Field(
        120.0, gt=0, description="A poll's lease on its account, renewed every third of it while it runs."
    )
    poll_sync_seconds: float = Field(
        30.0, gt=0, description="How often the polled accounts are brought in line with the connections."
    )

    # Process.
    host: str = "0.0.0.0"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(1, ge=1)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    shutdown_drain_seconds: float = Field(
        5.0, ge=0, description="After SIGTERM, how long `/readyz` answers 503 before the listener closes."
    )
    shutdown_timeout_seconds: float = Field(
        20.0, gt=0, description="Bound on waiting for in-flight requests at shutdown."
    )

    @field_validator("sage_intacct_jwt_keys")
    @classmethod
    def _jwt_keys_load(cls, value: str | None) -> str | None:
        # Fail at start, not at the first delivery; the messages never carry key material.
        if value is not None and value.strip():
            load_keys(value)
            return value
        return None

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class ClientSettings(BaseSettings):
    """What the client commands (`connections`, `credentials`, `send-sample`) read: where the
    gateway's admin API is, the token to call it with, and the secrets to sign samples with."""

    # An empty variable counts as unset, as for every fallback the commands document.
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", frozen=True, env_ignore_empty=True
    )

    admin_url: str = "http://127.0.0.1:8000"
    admin_token: SecretStr | None = None
    admin_tokens: SecretList = ()
    quickbooks_verifier_tokens: SecretList = ()
    xero_webhook_keys: SecretList = ()

    @field_validator("admin_token", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        return (value.strip() or None) if isinstance(value, str) else value


def environment_values() -> dict[str, Any]:
    """The settings the environment sets, by field name, as written there (not validated)."""
    return EnvSettingsSource(Settings)()


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment (overrides win), or SettingsError naming every problem."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError(describe_errors(exc)) from None


def describe_errors(exc: ValidationError) -> str:
    """`LEDGERHOOK_X: reason` lines for a validation error, without the offending values."""
    lines = []
    for error in exc.errors(include_input=False, include_url=False):
        field = str(error["loc"][0]) if error["loc"] else "?"
        reason = "is required but not set" if error["type"] == "missing" else error["msg"]
        lines.append(f"  {ENV_PREFIX}{field.upper()}: {reason}")
    return "invalid configuration:\n" + "\n".join(lines)


def secret_values(secrets: tuple[SecretStr, ...]) -> list[str]:
    """The plain values of a secret list, for handing to a signature scheme."""
    return [s.get_secret_value() for s in secrets]
