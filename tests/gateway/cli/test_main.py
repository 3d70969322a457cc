"""The command line's parser against the things it lists by hand."""

from fanout.quarantine import Reason
from gateway.cli.main import REDRIVE_REASONS, build_parser


def test_redrive_offers_every_quarantine_reason() -> None:
    assert sorted(REDRIVE_REASONS) == sorted(reason.value for reason in Reason)


def test_redrive_takes_the_paused_reason() -> None:
    args = build_parser().parse_args(["redrive", "--reason", "paused"])
    assert args.reason == "paused"
