"""The command line's parser against the things it lists by hand."""

import argparse
import subprocess
import sys

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


def test_every_dev_flag_has_help_and_shows_its_default() -> None:
    dev = next(
        action.choices["dev"]
        for action in build_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    flags = [action for action in dev._actions if action.option_strings and action.dest != "help"]
    assert {action.dest for action in flags} >= {"host", "port", "kafka_port", "data_dir", "log_level"}
    for action in flags:
        assert action.help, action.dest
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "dev", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and result.stderr == ""
    text = " ".join(result.stdout.split())  # argparse wraps lines
    assert "Connections survive a restart" in text and "topics are in memory" in text
    for shown in (
        "(default: 127.0.0.1)",
        "(default: 8000)",
        "(default: 9092)",
        "(default: .ledgerhook)",
        "(default: warning)",
        "(default: 8900)",
    ):
        assert shown in text, shown
