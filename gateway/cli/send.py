"""`ledgerhook send-sample <provider>`: sign a realistic sample delivery and post it to a gateway.

QuickBooks and Xero samples go to the shared endpoint, signed with the first of
`LEDGERHOOK_QUICKBOOKS_VERIFIER_TOKENS` / `LEDGERHOOK_XERO_WEBHOOK_KEYS`, else the dev stack's. The
other providers post to a connection's own URL: the connection is `--connection`, else the one
active connection of the provider (narrowed by `--account`) found through the admin API; the
sample carries its account and is signed with `--secret`, else the dev stack's secret for the
provider (gateway/dev/secrets.py). A FreshBooks connection without a verifier takes the
`callback.verify` handshake first; Sage Intacct samples carry a JWT signed with `dev`'s key from
`--data-dir`. So a sample sent to `ledgerhook dev` passes as it is.
"""

import argparse
import asyncio
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from pydantic import SecretStr

from gateway.cli.admin_client import AdminClient, AdminError, admin_client, unreachable_reason
from gateway.dev import samples
from gateway.dev.secrets import DEV_CONNECTION_SECRETS, DEV_SECRETS
from gateway.ingress.delivery import DELIVERY_ID_HEADER
from gateway.settings import ClientSettings
from provider_auth.providers import Provider
from provider_auth.webhooks.registry import check_secret


class SampleError(Exception):
    """A sample that cannot be sent, with what to do about it; `code` is the exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class SampleOptions:
    """What to send, and where: the flags of `send-sample`."""

    provider: Provider
    base_url: str = "http://127.0.0.1:8000"
    account: str | None = None
    legacy: bool = False
    connection_id: str | None = None
    secret: str | None = None
    data_dir: Path = Path(".ledgerhook")


@dataclass(frozen=True)
class SampleResult:
    """What the gateway answered to one post."""

    status: int
    delivery_id: str | None
    url: str
    what: str | None = None  # said before the delivery id, e.g. the FreshBooks handshake

    def describe(self) -> str:
        """`POST <url> -> <status> (delivery <id>)`."""
        notes = [note for note in (self.what, self.delivery_id and f"delivery {self.delivery_id}") if note]
        return f"POST {self.url} -> {self.status}" + (f" ({', '.join(notes)})" if notes else "")


def run_send_sample(args: argparse.Namespace) -> int:
    """Post one sample (after the FreshBooks handshake when needed), print each answer; 0 only when
    every answer is 200."""
    options = SampleOptions(
        provider=Provider(args.provider),
        base_url=args.url,
        account=args.account,
        legacy=args.legacy,
        connection_id=args.connection,
        secret=args.secret,
        data_dir=Path(args.data_dir),
    )
    try:
        results = asyncio.run(send_sample(options))
    except SampleError as exc:
        print(f"ledgerhook send-sample: {exc}", file=sys.stderr)
        return exc.code
    except AdminError as exc:
        print(f"ledgerhook send-sample: {exc.describe()}", file=sys.stderr)
        return 1
    except (OSError, aiohttp.ClientError, TimeoutError) as exc:
        print(
            f"ledgerhook send-sample: cannot reach {args.url} ({unreachable_reason(exc)});"
            " is the gateway running? (--url)",
            file=sys.stderr,
        )
        return 1
    for result in results:
        print(result.describe())
    return 0 if all(result.status == 200 for result in results) else 1


async def send_sample(options: SampleOptions) -> list[SampleResult]:
    """Post a signed sample to a running gateway; the answers, the sample's last."""
    base = options.base_url.rstrip("/")
    provider = options.provider
    if provider is Provider.SAGE_INTACCT and options.secret is not None:
        raise SampleError(
            "sage-intacct deliveries carry a JWT signed with dev's key: --secret does not apply", 2
        )
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        if provider.shared_endpoint:
            account = options.account
            if options.connection_id is not None:
                async with admin_client(base) as client:
                    account = (await find_connection(client, options))["provider_account_id"]
            sample = shared_sample(provider, account, options.legacy, options.secret)
            return [await post(session, f"{base}/webhooks/{provider.value}", sample)]

        # What it signs with first: a wrong secret or a missing key is said before any lookup.
        key = signing_key(options)
        async with admin_client(base) as client:
            connection = await find_connection(client, options)
        url = f"{base}/webhooks/{provider.value}/{connection['id']}"
        account = str(connection["provider_account_id"])
        results = []
        if provider is Provider.FRESHBOOKS and not connection["has_webhook_secret"]:
            # The connection learns its verifier from the handshake, as from FreshBooks itself.
            handshake = samples.freshbooks_verify(key, str(random.randint(100_000, 999_999)), account)
            answered = await post(session, url, samples.unsigned_form(handshake), "callback.verify handshake")
            results.append(answered)
            if answered.status != 200:
                return results
        elif provider is not Provider.SAGE_INTACCT and not connection["has_webhook_secret"]:
            raise SampleError(
                f"connection {connection['id']} has no webhook secret, so its webhook_url answers 404; "
                f"give it one (PATCH /admin/v1/connections/{connection['id']} with"
                ' {"webhook_secret": "..."}, docs/admin-api.md) and sign with the same (--secret)'
            )
        results.append(await post(session, url, connection_sample(provider, account, key)))
        return results


async def find_connection(client: AdminClient, options: SampleOptions) -> dict[str, Any]:
    """`--connection`, else the one active connection of the provider (of `--account` if given)."""
    provider = options.provider.value
    if options.connection_id is not None:
        connection = await client.get(options.connection_id)
        if connection["provider"] != provider:
            raise SampleError(
                f"connection {options.connection_id} is a {connection['provider']} connection, not {provider}"
            )
        return connection
    found: list[dict[str, Any]] = []
    async for page in client.pages(provider=provider, status="active"):
        found.extend(c for c in page if options.account in (None, c["provider_account_id"]))
    if len(found) == 1:
        return found[0]
    of_account = f" for account {options.account}" if options.account else ""
    if not found:
        raise SampleError(
            f"no active {provider} connection{of_account} at {client.base_url}; create one: "
            + create_command(options)
        )
    listed = ", ".join(f"{c['id']} ({c['tenant_id']}, account {c['provider_account_id']})" for c in found[:5])
    listed += ", ..." if len(found) > 5 else ""
    raise SampleError(
        f"{len(found)} active {provider} connections{of_account}: {listed}; "
        "choose one with --connection ID or --account ACCOUNT"
    )


def create_command(options: SampleOptions) -> str:
    """The `connections add` line that makes a connection this command can post to."""
    provider = options.provider.value
    secret = ""
    # FreshBooks gets its verifier from the handshake; Sage Intacct takes no secret.
    if options.provider in (Provider.ZOHO_BOOKS, Provider.NETSUITE, Provider.CUSTOM):
        own = options.secret is not None  # never echoed: `-` reads it from standard input
        secret = " --secret " + ("-" if own else DEV_SECRETS[DEV_CONNECTION_SECRETS[provider]])
    return (
        f"ledgerhook connections add --tenant acme --provider {provider}"
        f" --account {options.account or '<account>'}{secret} --url {options.base_url}"
    )


def shared_sample(
    provider: Provider, account: str | None, legacy: bool = False, secret: str | None = None
) -> samples.SignedSample:
    """A QuickBooks or Xero sample, signed with `secret`, else the configured or dev app secret."""
    settings = ClientSettings()
    if provider is Provider.QUICKBOOKS:
        realm = account or samples.SAMPLE_QUICKBOOKS_REALM
        body = samples.quickbooks_legacy(realm) if legacy else samples.quickbooks_cloudevents(realm)
        token = secret or _first(settings.quickbooks_verifier_tokens, "quickbooks_verifier_tokens")
        return samples.signed_quickbooks(body, token)
    if provider is Provider.XERO:
        body = samples.xero_events(account or samples.SAMPLE_XERO_TENANT)
        key = secret or _first(settings.xero_webhook_keys, "xero_webhook_keys")
        return samples.signed_xero(body, key)
    raise SampleError(f"{provider.value} posts to a connection's own URL, not a shared endpoint")


def connection_sample(provider: Provider, account: str, key: str) -> samples.SignedSample:
    """A sample for a per-connection provider, carrying `account`, signed with `key` (see
    `signing_key`) as the provider signs."""
    if provider is Provider.SAGE_INTACCT:
        return samples.signed_bearer(samples.sage_intacct_event(account), key)
    if provider is Provider.ZOHO_BOOKS:
        return samples.signed_zoho(samples.zoho_books_event(account), key)
    if provider is Provider.FRESHBOOKS:
        return samples.signed_freshbooks(samples.freshbooks_event(account), key)
    body = samples.standard_event(account, netsuite=provider is Provider.NETSUITE)
    return samples.signed_standard(body, key)


def signing_key(options: SampleOptions) -> str:
    """What a per-connection sample is signed with: for Sage Intacct a JWT signed with `dev`'s key
    from `--data-dir`; else `--secret`, checked against the provider's form, or the dev stack's
    secret for the provider."""
    if options.provider is Provider.SAGE_INTACCT:
        # Imported here: only this provider needs the key handling.
        from gateway.dev.jwt_key import DevKeyMissing, dev_sage_intacct_token

        try:
            return dev_sage_intacct_token(options.data_dir)
        except DevKeyMissing:
            raise SampleError(
                f"no dev Sage Intacct key in {options.data_dir}: "
                "start ledgerhook dev first, or pass --data-dir"
            ) from None
    if options.secret is None:
        return DEV_SECRETS[DEV_CONNECTION_SECRETS[options.provider.value]]
    try:
        check_secret(options.provider, options.secret)
    except ValueError as exc:
        raise SampleError(f"--secret: {exc}", code=2) from None
    return options.secret


def _first(configured: tuple[SecretStr, ...], name: str) -> str:
    return configured[0].get_secret_value() if configured else DEV_SECRETS[name]


async def post(
    session: aiohttp.ClientSession, url: str, sample: samples.SignedSample, what: str | None = None
) -> SampleResult:
    """Post one signed sample; the gateway's answer."""
    async with session.post(url, data=sample.body, headers=sample.headers) as response:
        return SampleResult(response.status, response.headers.get(DELIVERY_ID_HEADER), url, what)
