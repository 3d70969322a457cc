"""A dev-only signing key for Sage Intacct's Bearer JWT webhooks, kept in `dev`'s data folder."""

from pathlib import Path
from typing import Any


def dev_sage_intacct_settings(data_dir: Path) -> dict[str, Any]:
    """Settings that make `dev` accept Sage Intacct webhooks signed with its dev key."""
    return {}
