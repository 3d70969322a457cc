"""Where the repository's own files are, for tests that read docs, the chart or the README."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = REPO_ROOT / "docs" / "schemas"
