"""docs/providers.md: one section per provider, and every `(docs/providers.md, <section>)` citation in
the code and the docs names a section that exists."""

import re
from pathlib import Path

from provider_auth.providers import Provider
from tests.paths import REPO_ROOT

PROVIDERS_MD = REPO_ROOT / "docs" / "providers.md"
SECTIONS = (
    "QuickBooks Online",
    "Xero",
    "NetSuite",
    "Sage Intacct",
    "Zoho Books",
    "FreshBooks",
    "Generic sources",
)
CITATION = re.compile(r"docs/providers\.md, ([^)\n;:.,`\"]+)")


def sections(markdown: str) -> list[str]:
    """The `## ` headings of a markdown text, in order."""
    return [line[3:].strip() for line in markdown.splitlines() if line.startswith("## ")]


def citations(text: str) -> list[str]:
    """The sections cited as `docs/providers.md, <section>` (or `<a> and <b>`), comments unwrapped."""
    flat = re.sub(r"\s*\n\s*(#\s*)?", " ", text)
    return [name.strip() for match in CITATION.finditer(flat) for name in match.group(1).split(" and ")]


def citing_files() -> list[Path]:
    """Every Python and markdown file of the repository's own code, tests, benchmarks and docs."""
    roots = ("gateway", "fanout", "provider_auth", "tests", "bench", "docs")
    files = [path for root in roots for path in (REPO_ROOT / root).rglob("*.py")]
    files += [path for root in roots for path in (REPO_ROOT / root).rglob("*.md")]
    # This file's own examples are not citations.
    return [path for path in [*files, REPO_ROOT / "README.md"] if path != Path(__file__).resolve()]


def test_one_section_per_provider_in_order() -> None:
    assert sections(PROVIDERS_MD.read_text(encoding="utf-8")) == list(SECTIONS)
    # Every provider slug is covered: custom sources by "Generic sources".
    assert len(SECTIONS) == len(Provider)


def test_every_citation_names_an_existing_section() -> None:
    found = {
        (str(path.relative_to(REPO_ROOT)), name)
        for path in citing_files()
        for name in citations(path.read_text(encoding="utf-8"))
    }
    assert len(found) > 10  # the code does cite the page
    unknown = sorted(f"{path}: {name!r}" for path, name in found if name not in SECTIONS)
    assert not unknown, "citations of docs/providers.md naming no section:\n" + "\n".join(unknown)


def test_citations_are_read_across_wrapped_comments() -> None:
    text = "x = 1  # (docs/providers.md, Zoho\n    # Books), (docs/providers.md, QuickBooks Online and Xero)"
    assert citations(text) == ["Zoho Books", "QuickBooks Online", "Xero"]


def test_no_citation_of_notes_outside_the_repository() -> None:
    stale = [
        str(path.relative_to(REPO_ROOT))
        for path in citing_files()
        if "PROVIDERS.md" in path.read_text(encoding="utf-8")
    ]
    assert not stale, "cite docs/providers.md instead of PROVIDERS.md: " + ", ".join(stale)
