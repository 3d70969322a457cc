"""The command line's parser against the things it lists by hand."""

from fanout.quarantine import Reason
from gateway.cli.main import REDRIVE_REASONS, SAMPLE_PROVIDERS, build_parser
from provider_auth.providers import Provider


def test_redrive_offers_every_quarantine_reason() -> None:
    assert sorted(REDRIVE_REASONS) == sorted(reason.value for reason in Reason)


def test_redrive_takes_the_paused_reason() -> None:
    args = build_parser().parse_args(["redrive", "--reason", "paused"])
    assert args.reason == "paused"


def test_send_sample_offers_every_provider() -> None:
    # Every provider has a webhook scheme (provider_auth/webhooks/registry.py), so every one a sample.
    assert sorted(SAMPLE_PROVIDERS) == sorted(provider.value for provider in Provider)
    args = build_parser().parse_args(["send-sample", "sage-intacct", "--connection", "c-1"])
    assert (args.connection, args.data_dir, args.secret) == ("c-1", ".ledgerhook", None)


def test_redrive_takes_the_gateway_url_and_no_settings() -> None:
    args = build_parser().parse_args(["redrive", "--url", "http://127.0.0.1:9999"])
    assert (args.url, args.reason, args.delivery_id) == ("http://127.0.0.1:9999", None, None)
