"""Imports point one way: gateway -> fanout -> provider_auth (docs/architecture.md, "Where things live").

Every module of the three packages is parsed with `ast`, imports inside functions included:
- `gateway` may import `fanout` and `provider_auth`, `fanout` may import `provider_auth`, and
  `provider_auth` imports nothing of ours;
- none of them imports `tests` or `bench`;
- the command-line client modules (they only talk HTTP or Kafka) do not import the server side
  (`gateway.runtime`, `gateway.app`, `gateway.dev.stack`) when they are loaded, so client commands
  start fast; importing it inside a function, for a command that needs it, is allowed.
"""

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.paths import REPO_ROOT

PACKAGES = ("gateway", "fanout", "provider_auth")
# What each package may import of ours (besides the standard library and third parties).
ALLOWED = {
    "gateway": frozenset({"gateway", "fanout", "provider_auth"}),
    "fanout": frozenset({"fanout", "provider_auth"}),
    "provider_auth": frozenset({"provider_auth"}),
}
OURS = frozenset({*PACKAGES, "tests", "bench"})
CLIENT_MODULES = frozenset(
    f"gateway.cli.{name}" for name in ("admin_client", "connections", "send", "tail", "credentials")
)
SERVER_SIDE = ("gateway.runtime", "gateway.app", "gateway.dev.stack")


@dataclass(frozen=True, slots=True)
class Import:
    """One module an import statement (or `importlib.import_module("...")`) may load."""

    target: str
    line: int
    at_load: bool  # runs when the importing module is loaded (not inside a function)


def module_name(path: Path, root: Path = REPO_ROOT) -> str:
    """`gateway/cli/send.py` -> `gateway.cli.send`; a package's `__init__.py` -> the package."""
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The absolute module of a (possibly relative) `from ... import`."""
    if level == 0:
        return name or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - (level - 1)] if level > 1 else package
    return ".".join([*base, name] if name else base)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(source: str, module: str, is_package: bool = False) -> list[Import]:
    """Every module `source` (the text of `module`) may import, with its line and when it runs."""
    found: list[Import] = []

    def visit(node: ast.AST, at_load: bool) -> None:
        if isinstance(node, ast.Import):
            found.extend(Import(alias.name, node.lineno, at_load) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, is_package, node.level, node.module)
            found.append(Import(base, node.lineno, at_load))
            # `from gateway import app` loads the submodule gateway.app.
            found.extend(Import(f"{base}.{alias.name}", node.lineno, at_load) for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append(Import(node.args[0].value, node.lineno, at_load))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            at_load = False
        for child in ast.iter_child_nodes(node):
            # `if TYPE_CHECKING:` blocks are for the type checker only: they never run.
            inside = at_load and not (isinstance(node, ast.If) and _is_type_checking(node.test))
            visit(child, inside)

    visit(ast.parse(source), True)
    return found


def _server_side(target: str) -> bool:
    return any(target == prefix or target.startswith(prefix + ".") for prefix in SERVER_SIDE)


def violations(label: str, module: str, source: str, is_package: bool = False) -> list[str]:
    """Every import of `module` that breaks a rule above, as `file:line: what and why`."""
    package = module.split(".")[0]
    problems: dict[int, str] = {}  # one per line: `from x import y` also names x.y
    for found in imports(source, module, is_package):
        top = found.target.split(".")[0]
        where = f"{label}:{found.line}: {module} imports {found.target}"
        if found.line in problems:
            continue
        if top in ("tests", "bench"):
            problems[found.line] = f"{where} (the packages never import {top})"
        elif top in OURS and top not in ALLOWED[package]:
            allowed = ", ".join(sorted(ALLOWED[package] - {package})) or "nothing of ours"
            problems[found.line] = f"{where} ({package} may import {allowed})"
        elif module in CLIENT_MODULES and found.at_load and _server_side(found.target):
            problems[found.line] = f"{where} when loaded (client modules load the server side in functions)"
    return list(problems.values())


def package_modules(root: Path = REPO_ROOT) -> Iterator[Path]:
    """Every Python file of the three packages."""
    for package in PACKAGES:
        yield from sorted(path for path in (root / package).rglob("*.py") if "__pycache__" not in path.parts)


def test_the_packages_import_in_one_direction_only() -> None:
    files = list(package_modules())
    assert len(files) > 50  # the walk found the packages
    problems = [
        problem
        for path in files
        for problem in violations(
            str(path.relative_to(REPO_ROOT)),
            module_name(path),
            path.read_text(encoding="utf-8"),
            path.name == "__init__.py",
        )
    ]
    assert not problems, "imports against the layering:\n" + "\n".join(problems)


def test_the_client_modules_exist() -> None:
    # The rule below would hold vacuously for modules that were renamed away.
    present = {module_name(path) for path in package_modules()}
    assert CLIENT_MODULES & present, "none of the command-line client modules was found"


# The checker itself, on planted violations.


@pytest.mark.parametrize(
    ("module", "source", "line", "expected"),
    [
        ("provider_auth.vault", "import fanout.raw\n", 1, "provider_auth may import nothing of ours"),
        ("provider_auth.ids", "def f():\n    from gateway import settings\n", 2, "imports gateway"),
        ("fanout.raw", "from gateway.settings import Settings\n", 1, "fanout may import provider_auth"),
        ("fanout.dedupe", "import tests.support\n", 1, "never import tests"),
        ("gateway.app", "def run():\n    import bench.ingest\n", 2, "never import bench"),
        ("gateway.cli.send", "from gateway.dev.stack import DEV_SECRETS\n", 1, "dev.stack when loaded"),
        ("gateway.cli.tail", "from ..runtime.kafka import options\n", 1, "imports gateway.runtime.kafka"),
        ("gateway.cli.tail", "from gateway import app\n", 1, "imports gateway.app when loaded"),
        (
            "gateway.cli.credentials",
            "import importlib\n\nimportlib.import_module('gateway.runtime')\n",
            3,
            "imports gateway.runtime when loaded",
        ),
    ],
)
def test_a_planted_violation_is_reported_with_file_and_line(
    module: str, source: str, line: int, expected: str
) -> None:
    found = violations("planted.py", module, source)

    assert found, "the planted violation was not found"
    assert found[0].startswith(f"planted.py:{line}: {module} imports "), found
    assert expected in found[0], found


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("gateway.app", "from fanout.raw import header\nfrom provider_auth.vault import KeyRing\n"),
        ("fanout.raw", "from provider_auth.providers import Provider\nimport orjson\n"),
        ("provider_auth.vault", "from .providers import Provider\nimport cryptography\n"),
        # A client command that needs the server side imports it when it runs.
        ("gateway.cli.send", "def run():\n    from gateway.dev.stack import DEV_SECRETS\n"),
        ("gateway.cli.tail", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import gateway.app\n"),
        # Not a client module: the dispatcher may import what it likes of gateway.
        ("gateway.cli.main", "from gateway.runtime import server\n"),
    ],
)
def test_allowed_imports_pass(module: str, source: str) -> None:
    assert violations("planted.py", module, source) == []


def test_relative_imports_resolve_from_the_module_or_package() -> None:
    assert [i.target for i in imports("from . import core\n", "gateway.dev.emulator.app")] == [
        "gateway.dev.emulator",
        "gateway.dev.emulator.core",
    ]
    assert imports("from .core import x\n", "gateway.dev.emulator", is_package=True)[0].target == (
        "gateway.dev.emulator.core"
    )
    assert imports("from ..settings import S\n", "gateway.cli.tail")[0].target == "gateway.settings"
