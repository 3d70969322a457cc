"""Configuration from `LEDGERHOOK_*` environment variables, validated once at start.

Every `LEDGERHOOK_*` variable is read here and nowhere else. Each one is checked for its form and
its meaning (the key ring parses, the DSN is PostgreSQL's, URLs are http(s) with a host, the SASL
settings agree with each other), and every problem is reported in one `SettingsError`. The
processes' settings are listed in the README's configuration table (keep the two in step); the
client commands' few are in its command-line section.
"""

import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from pydantic import BeforeValidator, Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, NoDecode, SettingsConfigDict

from fanout.polling.budget import DEFAULT_LIMITS
from provider_auth.oauth.specs import SPECS
from provider_auth.providers import Provider
from provider_auth.vault import KeyRing
from provider_auth.webhooks.jwt_bearer import load_keys

ENV_PREFIX = "LEDGERHOOK_"
DEFAULT_POSTGRES_PORT = 5432
SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")
TLS_PROTOCOLS = ("SSL", "SASL_SSL")
# Kafka's own rule for topic names.
_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
# URL templates (provider_auth/oauth/specs.py): each placeholder with a stand-in of its shape, so the
# URL around it can be checked.
_PLACEHOLDER = re.compile(r"\{([A-Za-z_]+)\}")
_PLACEHOLDER_STAND_INS = {
    "account": "account",
    "accounts_server": "https://accounts.example",
    "api_domain": "https://api.example",
}
_URL_FIELDS = (
    "public_base_url",
    *(
        f"{provider}_{kind}"
        for provider in ("quickbooks", "xero", "zoho_books", "freshbooks", "netsuite", "sage_intacct")
        for kind in ("token_url", "api_base_url")
    ),
    "quickbooks_revoke_url",
)


def _split_commas(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


# Comma-separated in the environment (`a,b,c`), several active at once for rotation.
SecretList = Annotated[tuple[SecretStr, ...], NoDecode, BeforeValidator(_split_commas)]


class SettingsError(Exception):
    """One message naming every missing or invalid setting; never echoes a value."""


def database_addresses(dsn: str) -> tuple[str, ...]:
    """Where a PostgreSQL DSN points: `host:port` or a socket path per host, for messages.

    Raises ValueError (naming no part of the DSN) unless it is `postgresql://` or `postgres://`
    with a host, in the authority or as `?host=` (a socket directory when it starts with `/`).
    """
    parts = urlsplit(dsn.strip())
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError("must be a PostgreSQL DSN, postgresql://user:password@host:5432/database")
    query = parse_qs(parts.query)
    # As asyncpg reads it: hosts and ports from the authority, else from the query.
    authority = parts.netloc.rpartition("@")[2]
    specs = [spec for spec in authority.split(",") if spec] if authority else []
    if specs:
        hosts_ports = [_split_host_port(spec) for spec in specs]
    else:
        hosts = [h for value in query.get("host", []) for h in value.split(",") if h]
        ports = [p for value in query.get("port", []) for p in value.split(",") if p]
        hosts_ports = [(host, ports[min(i, len(ports) - 1)] if ports else "") for i, host in enumerate(hosts)]
    if not hosts_ports:
        raise ValueError("names no host: add one (postgresql://user@host:5432/db) or ?host=/socket/dir")
    addresses: list[str] = []
    for host, port_text in hosts_ports:
        port = _port_number(port_text or str(DEFAULT_POSTGRES_PORT))
        if port is None:
            # Digits out of range are a port; anything else is most likely a password cut in two.
            hint = "" if port_text.isdigit() else " (percent-encode `/`, `@` or `:` in the password)"
            raise ValueError(f"has a port that is not a number from 1 to 65535{hint}")
        host = unquote(host)
        addresses.append(f"{host}/.s.PGSQL.{port}" if host.startswith("/") else f"{host}:{port}")
    return tuple(addresses)


def bootstrap_addresses(servers: str) -> tuple[str, ...]:
    """The `host:port` entries of a bootstrap servers list; ValueError naming the bad entry's position."""
    entries = [entry.strip() for entry in servers.split(",")]
    addresses: list[str] = []
    for position, entry in enumerate(entries, start=1):
        if not entry:
            if position == len(entries) and addresses:
                continue  # a trailing comma
            raise ValueError(f"entry {position} is empty; expected host:port,host:port")
        if "/" in entry or any(c.isspace() for c in entry):
            raise ValueError(f"entry {position}: expected host:port, without a scheme or spaces")
        host, port_text = _split_host_port(entry)
        if not host or not port_text:
            raise ValueError(f"entry {position}: expected host:port")
        if _port_number(port_text) is None:
            raise ValueError(f"entry {position}: the port must be a number from 1 to 65535")
        addresses.append(entry)
    return tuple(addresses)


def _split_host_port(spec: str) -> tuple[str, str]:
    """`host:port`, `host`, `[v6]:port` or `[v6]` -> (host, port text, empty when absent)."""
    if spec.startswith("["):
        host, _, rest = spec[1:].partition("]")
        return host, rest.removeprefix(":")
    host, _, port = spec.partition(":")
    return host, port


def _port_number(text: str) -> int | None:
    return int(text) if text.isdigit() and 1 <= int(text) <= 65535 else None


def _check_url(value: str) -> str:
    unknown = sorted(set(_PLACEHOLDER.findall(value)) - set(_PLACEHOLDER_STAND_INS))
    if unknown:
        raise ValueError(
            f"has an unknown placeholder {{{unknown[0]}}}; URL templates may use {{account}},"
            " {accounts_server} and {api_domain}"
        )
    url = _PLACEHOLDER.sub(lambda match: _PLACEHOLDER_STAND_INS[match.group(1)], value)
    if any(c.isspace() for c in url):
        raise ValueError("must be a URL without spaces")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise ValueError("has a port that is not a number from 1 to 65535")
    return value


class KafkaSettings(BaseSettings):
    """The Kafka part of the configuration; enough for `ledgerhook tail`."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092", description="Kafka bootstrap servers, `host:port,...`."
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, validate_default=True
    )
    kafka_sasl_username: str | None = Field(None, validate_default=True)
    kafka_sasl_password: SecretStr | None = Field(None, validate_default=True)
    kafka_ssl_cafile: Path | None = None
    kafka_idempotent_producer: bool = Field(
        True, description="Idempotent producer; switch off only for brokers without it (the dev broker)."
    )
    kafka_client_id: str = Field("ledgerhook", min_length=1)

    # Topics.
    topic_raw: str = "ledgerhook.webhooks.raw"
    topic_changes: str = "ledgerhook.changes"
    topic_account_events: str = "ledgerhook.account-events"
    topic_quarantine: str = "ledgerhook.quarantine"
    topic_partitions: int = Field(6, ge=1, le=10_000, description="Partitions for topics Ledgerhook creates.")
    topic_replication_factor: int = Field(1, ge=1, le=32_767)

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _bootstrap_servers(cls, value: str) -> str:
        return ",".join(bootstrap_addresses(value))

    # The SASL and TLS settings are checked against the ones before them (validated first), so a
    # setting that would be silently ignored, or a missing half of a login, is named at start.
    @field_validator("kafka_sasl_mechanism")
    @classmethod
    def _mechanism_fits_protocol(cls, value: str | None, info: ValidationInfo) -> str | None:
        protocol = info.data.get("kafka_security_protocol")
        if protocol is None:
            return value  # the protocol itself is invalid and reported
        if value is None and protocol in SASL_PROTOCOLS:
            raise ValueError(f"is required with LEDGERHOOK_KAFKA_SECURITY_PROTOCOL={protocol}")
        if value is not None and protocol not in SASL_PROTOCOLS:
            raise ValueError(
                f"is set, but LEDGERHOOK_KAFKA_SECURITY_PROTOCOL is {protocol}:"
                " use SASL_SSL or SASL_PLAINTEXT"
            )
        return value

    @field_validator("kafka_sasl_username", "kafka_sasl_password")
    @classmethod
    def _login_fits_mechanism(cls, value: Any, info: ValidationInfo) -> Any:
        if "kafka_sasl_mechanism" not in info.data:
            return value  # the mechanism is invalid and reported
        given = value.get_secret_value() if isinstance(value, SecretStr) else value
        if info.data["kafka_sasl_mechanism"] is not None and not given:
            raise ValueError("is required with LEDGERHOOK_KAFKA_SASL_MECHANISM")
        if info.data["kafka_sasl_mechanism"] is None and given:
            raise ValueError("is set, but LEDGERHOOK_KAFKA_SASL_MECHANISM is not")
        return value if given else None

    @field_validator("kafka_ssl_cafile")
    @classmethod
    def _cafile_exists(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        if not value.is_file():
            raise ValueError("is not a file that exists")
        protocol = info.data.get("kafka_security_protocol")
        if protocol is not None and protocol not in TLS_PROTOCOLS:
            raise ValueError(
                f"is set, but LEDGERHOOK_KAFKA_SECURITY_PROTOCOL is {protocol}: use SSL or SASL_SSL"
            )
        return value

    @field_validator("topic_raw", "topic_changes", "topic_account_events", "topic_quarantine")
    @classmethod
    def _topic_name(cls, value: str) -> str:
        if not _TOPIC_NAME.fullmatch(value) or value in (".", ".."):
            raise ValueError("must be 1 to 249 of the characters A-Z a-z 0-9 . _ -")
        return value


class Settings(KafkaSettings):
    """Everything a Ledgerhook process reads from its environment."""

    database_url: SecretStr = Field(description="PostgreSQL DSN (PostgreSQL 14 or newer).")
    kafka_bootstrap_servers: str = Field(description="Kafka bootstrap servers, `host:port,...`.")

    # Ingress.
    max_body_bytes: int = Field(
        1_048_576, gt=0, le=67_108_864, description="Largest webhook body accepted (413 above)."
    )
    # Providers give up on a delivery within seconds: QuickBooks after 3, Xero after 5
    # (docs/providers.md, QuickBooks Online and Xero).
    ack_timeout_seconds: float = Field(
        2.0, gt=0, le=60, description="How long a delivery waits for the broker's ack before a 503."
    )
    retry_after_seconds: int = Field(5, ge=0, le=3600, description="`Retry-After` sent with a 503.")
    quickbooks_verifier_tokens: SecretList = Field(
        (), description="QuickBooks webhook verifier tokens, comma-separated (several for rotation)."
    )
    xero_webhook_keys: SecretList = Field((), description="Xero webhook keys, comma-separated.")

    # Connections of the gateway's server, webhooks and admin API alike (gateway/runtime/http_protocol.py).
    # A provider gives up within seconds (QuickBooks 3, Xero 5: docs/providers.md, QuickBooks Online
    # and Xero): a head or a body still arriving after these bounds is no provider's delivery.
    header_timeout_seconds: float = Field(
        5.0,
        gt=0,
        le=300,
        description="A request's line and headers must arrive within this time of the connection"
        " opening, or of their first byte on a kept-alive connection (408 after).",
    )
    body_timeout_seconds: float = Field(
        10.0,
        gt=0,
        le=600,
        description="A request's body must arrive within this time of its headers (408 after; nothing"
        " of it is stored).",
    )
    keep_alive_seconds: int = Field(
        # Longer than typical load balancer idle timeouts, so the balancer closes first.
        75,
        ge=1,
        le=3600,
        description="A connection idle between requests is closed after this long.",
    )
    max_header_bytes: int = Field(
        32_768,
        ge=1024,
        le=1_048_576,
        description="Largest request line and headers, in bytes (431 above).",
    )
    max_header_count: int = Field(
        100, ge=10, le=10_000, description="Most headers a request may have (431 above)."
    )
    max_in_flight: int = Field(
        1000,
        ge=1,
        le=100_000,
        description="Requests one gateway process serves at once; more get 503 with `Retry-After`, before"
        " their body is read (`/livez`, `/readyz` and `/metrics` excepted).",
    )

    # Admin API and connections.
    admin_tokens: SecretList = Field((), description="Bearer tokens for `/admin/v1`, comma-separated.")
    encryption_keys: SecretStr | None = Field(
        None, description="Key ring for secrets at rest, `kid:base64key,...` (first encrypts, all decrypt)."
    )
    public_base_url: str = Field(
        "http://localhost:8000", description="Base URL providers reach the gateway at, for webhook URLs."
    )
    audit_retention_days: float = Field(
        365.0,
        gt=0,
        le=3650,
        description="How long the audit trail (admin changes and the token lifecycle) is kept.",
    )

    # The web console (gateway/console), served under /console.
    console_enabled: bool = Field(False, description="Serve the web console under `/console`.")
    console_session_seconds: int = Field(
        1800,
        ge=10,
        le=86_400,
        description="How long a console sign-in lasts; after it the admin token is asked for again.",
    )
    console_session_key: SecretStr | None = Field(
        None,
        description="Key that signs console session cookies (32+ characters); set the same one on every"
        " gateway replica. Unset: a random key per process (sessions end when it restarts).",
    )

    # Per-connection webhook endpoints.
    connection_cache_seconds: float = Field(
        3.0, ge=0, le=3600, description="Seconds connection lookups are reused by the gateway and the worker."
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
    worker_group_id: str = Field(
        "ledgerhook-fanout", min_length=1, description="Consumer group of the fan-out worker."
    )
    worker_batch_size: int = Field(500, ge=1, le=100_000, description="Raw records taken per poll.")
    dedupe_retention_days: float = Field(
        7.0, gt=0, le=365, description="How long published event ids are remembered."
    )
    worker_port: int = Field(
        9000, ge=1, le=65535, description="Port of `ledgerhook worker`'s /livez, /readyz and /metrics."
    )
    worker_session_timeout_ms: int = Field(
        10_000,
        ge=1000,
        le=3_600_000,
        description="Group session timeout: a silent worker loses its partitions after it.",
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
        "PS256", validate_default=True, description="Signing algorithm of the NetSuite assertion."
    )
    netsuite_jwt_scope: str = Field("rest_webservices", description="NetSuite M2M scopes, comma-separated.")
    sage_intacct_client_id: str | None = Field(None, description="Sage Intacct app client id.")
    sage_intacct_client_secret: SecretStr | None = Field(None, description="Sage Intacct app client secret.")
    sage_intacct_token_url: str = Field(SPECS[Provider.SAGE_INTACCT].oauth_endpoint, description="Token URL.")
    sage_intacct_api_base_url: str = Field(SPECS[Provider.SAGE_INTACCT].api_base_url, description="API base.")
    # Below the shortest access token lifetime, Xero's 30 minutes (docs/providers.md, Xero): at or
    # above it, every Xero token would be refreshed on every use.
    token_refresh_skew_seconds: float = Field(
        300.0, ge=0, lt=1800, description="Access tokens handed out stay valid at least this long."
    )
    token_refresh_window_seconds: float = Field(
        600.0, ge=0, le=86_400, description="The refresher renews tokens this long before they expire."
    )
    token_refresh_jitter_seconds: float = Field(
        120.0, ge=0, le=3600, description="Up to this much earlier again, at random, so expiries spread out."
    )
    token_request_timeout_seconds: float = Field(
        15.0, gt=0, le=300, description="Bound on one call to a provider's token endpoint."
    )
    token_refresh_interval_seconds: float = Field(
        15.0, gt=0, le=3600, description="Pause between refresher passes."
    )
    token_refresh_batch_size: int = Field(
        100, ge=1, le=10_000, description="Grants the refresher leases at a time."
    )
    token_refresh_concurrency: int = Field(
        4, ge=1, le=256, description="Refreshes one worker runs at once (each holds a database connection)."
    )
    token_max_transient_failures: int = Field(
        5, ge=1, le=1000, description="Failed attempts after expiry before `refresh_unavailable` is reported."
    )
    token_cache_seconds: float = Field(
        30.0,
        ge=0,
        le=3600,
        description="How long a process serves a fresh token from memory before re-reading.",
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
        300, ge=1, le=86_400, description="Accounts of providers without webhooks are polled this often."
    )
    sweep_interval_seconds: int = Field(
        3600,
        ge=1,
        le=7 * 86_400,
        description="Accounts of providers with webhooks (QuickBooks, Xero) are swept this often.",
    )
    poll_concurrency: int = Field(8, ge=1, le=1000, description="Accounts one worker polls at once.")
    poll_lease_seconds: float = Field(
        120.0,
        gt=0,
        le=3600,
        description="A poll's lease on its account, renewed every third of it while it runs.",
    )
    poll_sync_seconds: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="How often the polled accounts are brought in line with the connections.",
    )

    # Process.
    host: str = Field("0.0.0.0", min_length=1)
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(1, ge=1, le=256)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    shutdown_drain_seconds: float = Field(
        5.0,
        ge=0,
        le=600,
        description="After SIGTERM, how long `/readyz` answers 503 before the listener closes.",
    )
    shutdown_timeout_seconds: float = Field(
        20.0, gt=0, le=3600, description="Bound on waiting for in-flight requests at shutdown."
    )
    startup_timeout_seconds: float = Field(
        30.0,
        ge=0,
        le=600,
        description="How long `serve`, `worker` and `migrate` keep trying to reach PostgreSQL and the"
        " broker before they give up (exit 3), so a process started a moment before its database does"
        " not crash-loop; a refused login fails at once; 0 tries once.",
    )

    @field_validator("database_url")
    @classmethod
    def _postgres_dsn(cls, value: SecretStr) -> SecretStr:
        database_addresses(value.get_secret_value())
        return value

    @field_validator("encryption_keys")
    @classmethod
    def _key_ring_parses(cls, value: SecretStr | None) -> SecretStr | None:
        # Parsed here so a bad ring stops the process at start; KeyRing's messages carry no key material.
        if value is None or not value.get_secret_value().strip():
            return None
        try:
            KeyRing.parse(value.get_secret_value())
        except ValueError as exc:
            raise ValueError(f"{exc} (`ledgerhook keys generate` makes one)") from None
        return value

    @field_validator("console_session_key")
    @classmethod
    def _session_key_length(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters (e.g. the output of `openssl rand -hex 32`)")
        return value

    @field_validator("admin_tokens", mode="before")
    @classmethod
    def _admin_token_entries(cls, value: Any) -> Any:
        # A token is sent as `Authorization: Bearer <token>`: one word, and `a,,b` is a typo. Each
        # entry is `<role>:<name>:<token>` or a bare token; the names must differ, as the audit
        # trail tells principals apart by them. No message repeats a token.
        if isinstance(value, str) and value.strip():
            entries = value.split(",")
        elif isinstance(value, list | tuple):
            entries = [
                str(entry.get_secret_value() if isinstance(entry, SecretStr) else entry) for entry in value
            ]
        else:
            return value
        # Imported here: the admin package imports these settings.
        from gateway.admin.roles import parse_token_entry

        taken: dict[str, int] = {}
        for position, entry in enumerate(entries, start=1):
            if not entry.strip():
                raise ValueError(f"entry {position} is empty")
            if any(c.isspace() for c in entry.strip()):
                raise ValueError(
                    f"entry {position} contains whitespace; set the token alone, without `Bearer`"
                )
            principal, _ = parse_token_entry(position, entry)
            if principal.name in taken:
                raise ValueError(
                    f"entries {taken[principal.name]} and {position} are both named {principal.name!r};"
                    " give each token its own name"
                )
            taken[principal.name] = position
        return value

    @field_validator(*_URL_FIELDS)
    @classmethod
    def _http_url(cls, value: str, info: ValidationInfo) -> str:
        value = value.strip()
        if info.field_name == "quickbooks_revoke_url" and not value:
            return value  # empty: the provider's own endpoint (provider_auth/oauth/specs.py)
        return _check_url(value)

    @field_validator("netsuite_jwt_private_key")
    @classmethod
    def _netsuite_key_loads(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        _private_key(value)
        if not info.data.get("netsuite_jwt_key_id"):
            raise ValueError("needs LEDGERHOOK_NETSUITE_JWT_KEY_ID too (the certificate id)")
        return value

    @field_validator("netsuite_jwt_algorithm")
    @classmethod
    def _netsuite_key_fits_algorithm(cls, value: str, info: ValidationInfo) -> str:
        key = info.data.get("netsuite_jwt_private_key")
        if key is not None:
            wanted = rsa.RSAPrivateKey if value.startswith("PS") else ec.EllipticCurvePrivateKey
            if not isinstance(_private_key(key), wanted):
                kind = "an RSA" if wanted is rsa.RSAPrivateKey else "an EC"
                raise ValueError(f"{value} needs {kind} key in LEDGERHOOK_NETSUITE_JWT_PRIVATE_KEY")
        return value

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

    def fallback_admin_token(self) -> str | None:
        """`LEDGERHOOK_ADMIN_TOKEN`, else the token of the first `LEDGERHOOK_ADMIN_TOKENS` entry (the
        part after `<role>:<name>:`), else None."""
        if self.admin_token is not None:
            return self.admin_token.get_secret_value()
        if not self.admin_tokens:
            return None
        # Imported here: the admin package imports these settings.
        from gateway.admin.roles import TokenEntryError, parse_token_entry

        entry = self.admin_tokens[0].get_secret_value()
        try:
            return parse_token_entry(1, entry)[1]
        except TokenEntryError:
            return entry.strip()  # the gateway refuses it with a 401 that says so


def _private_key(value: SecretStr) -> object:
    """The private key of a PEM setting; ValueError without any of the key in the message."""
    try:
        return load_pem_private_key(value.get_secret_value().strip().encode(), password=None)
    except (ValueError, TypeError):
        raise ValueError("is not an unencrypted PEM private key") from None


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
        if error["type"] == "missing":
            reason = "is required but not set"
        elif error["type"] == "value_error":
            reason = str(error["ctx"]["error"])  # our own validators' words, without "Value error, "
        else:
            reason = error["msg"]
        lines.append(f"  {ENV_PREFIX}{field.upper()}: {reason}")
    return "invalid configuration:\n" + "\n".join(lines)


def secret_values(secrets: tuple[SecretStr, ...]) -> list[str]:
    """The plain values of a secret list, for handing to a signature scheme."""
    return [s.get_secret_value() for s in secrets]
