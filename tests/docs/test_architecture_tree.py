"""docs/architecture.md, "Where things live": every folder and file the tree names exists."""

import re
from pathlib import Path

from tests.paths import REPO_ROOT

ARCHITECTURE = REPO_ROOT / "docs" / "architecture.md"
# A folder (`ingress/`) or a file (`endpoint.py`, `events.md`) named on its own, not a path.
NAME = re.compile(r"[a-z][a-z0-9_-]*(/|\.py|\.md)")


def tree_block(markdown: str) -> list[str]:
    """The lines of the code block of the "Where things live" section."""
    section = markdown.split("## Where things live", 1)[1].split("\n## ", 1)[0]
    return section.split("```", 2)[1].strip("\n").splitlines()


def named_paths(lines: list[str]) -> list[tuple[int, Path]]:
    """(line number in the block, path) for every name, resolved against the folder it is listed in.

    A line at column 0 starts a top-level folder; at column 2 a sub-folder (when its first word is
    one) or files of the top-level folder; deeper lines continue the line above.
    """
    found: list[tuple[int, Path]] = []
    top = here = Path()
    for number, line in enumerate(lines, start=1):
        indent = len(line) - len(line.lstrip(" "))
        words = [word.strip("(),`:") for word in line.split()]
        names = [word for word in words if NAME.fullmatch(word)]
        if indent == 0:
            top = here = Path(words[0])
            found.append((number, top))
            names = names[1:]
        elif indent == 2 and words[0].endswith("/"):
            here = top / words[0]
            found.append((number, here))
            names = names[1:]
        elif indent == 2:
            here = top
        found.extend((number, here / name) for name in names)
    return found


def test_the_tree_names_only_what_exists() -> None:
    lines = tree_block(ARCHITECTURE.read_text(encoding="utf-8"))
    paths = named_paths(lines)
    assert len(paths) > 40  # the block was found and read
    missing = [f"line {n} of the block: {path}" for n, path in paths if not (REPO_ROOT / path).exists()]
    assert not missing, "docs/architecture.md names paths that do not exist:\n" + "\n".join(missing)


def test_every_package_folder_is_in_the_tree() -> None:
    named = {path for _, path in named_paths(tree_block(ARCHITECTURE.read_text(encoding="utf-8")))}
    folders = {
        Path(package) / child.name
        for package in ("gateway", "fanout", "provider_auth")
        for child in (REPO_ROOT / package).iterdir()
        if child.is_dir() and child.name != "__pycache__"
    }
    assert folders - named == set(), "folders missing from docs/architecture.md"


def test_names_resolve_against_their_folder() -> None:
    block = [
        "gateway/   edges",
        "  app.py settings.py   the app",
        "  ingress/   endpoint.py (Ingress),",
        "             body.py",
        "docs/      events.md",
    ]
    assert [str(path) for _, path in named_paths(block)] == [
        "gateway",
        "gateway/app.py",
        "gateway/settings.py",
        "gateway/ingress",
        "gateway/ingress/endpoint.py",
        "gateway/ingress/body.py",
        "docs",
        "docs/events.md",
    ]
