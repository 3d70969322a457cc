"""What `ledgerhook dev` prints once it is ready: where everything is, and commands to paste."""

from typing import TYPE_CHECKING

from gateway.dev.samples import SAMPLE_QUICKBOOKS_REALM
from gateway.dev.secrets import DEV_SECRETS
from gateway.settings import ENV_PREFIX, Settings, environment_values

if TYPE_CHECKING:
    from gateway.dev.stack import DevOptions

FROM_ENVIRONMENT = "(from your environment)"  # shown for a secret the environment sets, not its value


def banner(settings: Settings, options: "DevOptions") -> str:
    """What the developer needs to start using the stack: where everything is, and commands that work
    as printed, in order (a `# ...` tail is a shell comment, so each line pastes as it is)."""
    base = f"http://{options.host}:{options.port}"
    bootstrap = settings.kafka_bootstrap_servers
    # The settings among the dev secrets (connection secrets are not settings). Only the values dev
    # chose are printed: one the operator set is theirs, and a terminal's scrollback is no place for it.
    configured = environment_values()
    secrets = {
        name: FROM_ENVIRONMENT if name in configured else value
        for name, value in DEV_SECRETS.items()
        if name in Settings.model_fields
    }
    custom_secret = DEV_SECRETS["custom_webhook_secret"]
    return "\n".join(
        [
            "",
            "Ledgerhook dev stack is up.",
            f"  gateway       {base}  (webhooks at {base}/webhooks/<provider>)",
            f"  health        {base}/livez  {base}/readyz  {base}/metrics",
            f"  admin API     {base}/admin/v1  (Bearer token below; docs/admin-api.md)",
            *console_lines(settings, base),
            f"  kafka         {bootstrap}  (Tansu, in memory)",
            f"  postgres      {settings.database_url.get_secret_value()}",
            f"  data dir      {options.data_dir}",
            "  dev secrets (override with LEDGERHOOK_* variables):",
            *(f"    {ENV_PREFIX}{name.upper()}={value}" for name, value in secrets.items()),
            "",
            "Try, in other terminals (tail keeps following):",
            f"  ledgerhook tail {settings.topic_changes} --bootstrap {bootstrap}"
            f"  # unroutable deliveries: {settings.topic_quarantine}",
            f"  ledgerhook connections add --tenant acme --provider custom --account acct-1"
            f" --secret {custom_secret} --url {base}",
            f"  ledgerhook send-sample custom --account acct-1 --url {base}"
            "  # also xero, zoho-books, freshbooks, netsuite, sage-intacct",
            f"  ledgerhook send-sample quickbooks --url {base}  # no connection for its company yet",
            "  ledgerhook connections add --tenant acme --provider quickbooks"
            f" --account {SAMPLE_QUICKBOOKS_REALM} --url {base}",
            f"  ledgerhook redrive --url {base}  # the quarantined sample, now routed to acme",
            "",
            "Ctrl-C stops everything.",
            "",
        ]
    )


def emulator_banner_lines(emulator_url: str | None, gateway_url: str, settings: Settings) -> list[str]:
    """What `dev` prints about the emulator: where it is, how to try a refresh and a revocation, and
    how to see a changed record polled onto the changes topic."""
    if emulator_url is None:
        return []
    realm = SAMPLE_QUICKBOOKS_REALM
    bootstrap = settings.kafka_bootstrap_servers
    return [
        "OAuth tokens (--emulator; docs/tokens.md):",
        f"  emulator      {emulator_url}  (every provider's token endpoint; access tokens live 3 min)",
        "  seed a grant, hand it over for a connection, revoke it, watch the account events:",
        f'  curl -s -X POST {emulator_url}/_emulator/grants -d \'{{"provider": "xero"}}\'',
        f"  curl -s -X PUT -H 'authorization: Bearer <admin token>' {gateway_url}/admin/v1/connections/<id>"
        '/credentials -d \'{"access_token": "...", "refresh_token": "...", "expires_in": 180}\'',
        f"  curl -s -X POST {emulator_url}/_emulator/revoke"
        ' -d \'{"provider": "xero", "token": "<refresh token>"}\'',
        f"  ledgerhook tail {settings.topic_account_events} --bootstrap {bootstrap}",
        "",
        f"Polling (--emulator; docs/emulator.md): accounts polled every {settings.poll_interval_seconds} s,"
        f" swept every {settings.sweep_interval_seconds} s (QuickBooks, Xero):",
        f"  ledgerhook emulator connect quickbooks --tenant acme --account {realm} --url {gateway_url}"
        f" --emulator-url {emulator_url}",
        f"  ledgerhook emulator change quickbooks invoice --account {realm} --emulator-url {emulator_url}",
        f"  ledgerhook tail {settings.topic_changes} --bootstrap {bootstrap}"
        '  # the invoice, data.origin "poll", within seconds',
        "",
    ]


def console_lines(settings: Settings, base: str) -> list[str]:
    """Where the web console is, when it is on (docs/console.md)."""
    if not settings.console_enabled:
        return []
    return [f"  console       {base}/console/  (sign in with a token of LEDGERHOOK_ADMIN_TOKENS, below)"]
