"""What `ledgerhook dev` prints once it is ready: where everything is, and commands to paste."""

from typing import TYPE_CHECKING

from gateway.dev.secrets import DEV_SECRETS
from gateway.settings import ENV_PREFIX, Settings, environment_values

if TYPE_CHECKING:
    from gateway.dev.stack import DevOptions


def banner(settings: Settings, options: "DevOptions") -> str:
    """What the developer needs to start using the stack."""
    base = f"http://{options.host}:{options.port}"
    secrets = DEV_SECRETS | {
        name: value for name, value in environment_values().items() if name in DEV_SECRETS
    }
    return "\n".join(
        [
            "",
            "Ledgerhook dev stack is up.",
            f"  gateway       {base}  (webhooks at {base}/webhooks/<provider>)",
            f"  health        {base}/livez  {base}/readyz  {base}/metrics",
            f"  admin API     {base}/admin/v1  (Bearer token below; docs/admin-api.md)",
            f"  kafka         {settings.kafka_bootstrap_servers}  (Tansu, in memory)",
            f"  postgres      {settings.database_url.get_secret_value()}",
            f"  data dir      {options.data_dir}",
            "  dev secrets (override with LEDGERHOOK_* variables):",
            *(f"    {ENV_PREFIX}{name.upper()}={value}" for name, value in secrets.items()),
            "",
            "Try, in another terminal:",
            f"  ledgerhook send-sample quickbooks --url {base}",
            f"  ledgerhook connections add --tenant acme --provider custom --account acct-1 --url {base}",
            f"  ledgerhook tail {settings.topic_raw} --bootstrap {settings.kafka_bootstrap_servers}",
            f"  ledgerhook tail {settings.topic_changes} --bootstrap {settings.kafka_bootstrap_servers}"
            f"  (the fan-out worker runs in this process; unroutable: {settings.topic_quarantine})",
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
    realm = "9341453908000000"  # the QuickBooks company of `send-sample`
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
        '  (the invoice, data.origin "poll", within seconds)',
        "",
    ]
