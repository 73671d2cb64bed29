"""Every third-party package that code imports is named in the install files that put it there.

A package installed by hand makes the tests pass on one machine and fail on a new
user's (it happened: ``hypothesis``). These tests read the imports with ``ast``,
map each module to the distribution that provides it
(``importlib.metadata.packages_distributions()``), and require that distribution
to be named, directly, by what the README's commands install:

* tests/ and benchmarks/: ``requirements-dev.txt`` (the README's test command),
  following its ``-e ./runtime[extras]`` lines into those pyproject files;
* each distribution's own code: its pyproject (dependencies and extras) and
  those of the svdh distributions it depends on.

Imports that are optional by construction are exempt: inside ``try`` with an
``except ImportError`` (or ``ModuleNotFoundError``), and ``pytest.importorskip``.
"""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROJECTS = ("runtime", "exporter", "trainer")
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?")


def normalise(name: str) -> str:
    """PEP 503 form of a distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _project(folder: Path) -> dict:
    return tomllib.loads((folder / "pyproject.toml").read_text(encoding="utf-8"))["project"]


SVDH_FOLDERS = {normalise(_project(REPO / name)["name"]): REPO / name for name in PROJECTS}


def _requirement(text: str) -> tuple[str, set[str]]:
    found = _NAME.match(text)
    assert found, f"cannot read requirement {text!r}"
    extras = {normalise(e) for e in (found.group(2) or "").split(",") if e.strip()}
    return normalise(found.group(1)), extras


def names_installed_by_project(folder: Path, extras: set[str], seen: set[str] | None = None) -> set[str]:
    """Distributions a pyproject names in its dependencies and the given extras, following svdh ones."""
    seen = set() if seen is None else seen
    project = _project(folder)
    key = f"{folder}:{sorted(extras)}"
    if key in seen:
        return set()
    seen.add(key)
    optional = {normalise(k): v for k, v in project.get("optional-dependencies", {}).items()}
    lines = list(project.get("dependencies", []))
    for extra in extras:
        lines += optional.get(extra, [])
    named: set[str] = set()
    for line in lines:
        name, wanted = _requirement(line)
        named.add(name)
        if name in SVDH_FOLDERS:
            named |= names_installed_by_project(SVDH_FOLDERS[name], wanted, seen)
    return named


def names_installed_by_requirements(path: Path) -> set[str]:
    """Distributions a requirements file names, following ``-r`` files and local ``-e ./project[extras]``."""
    named: set[str] = set()
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith(("-r ", "--requirement ")):
            named |= names_installed_by_requirements(path.parent / line.split(None, 1)[1])
            continue
        if line.startswith(("-e ", "--editable ")):
            line = line.split(None, 1)[1]
        if line.startswith((".", "/")):
            target, _, extras = line.partition("[")
            wanted = {normalise(e) for e in extras.rstrip("]").split(",") if e.strip()}
            folder = (path.parent / target).resolve()
            named |= {normalise(_project(folder)["name"])} | names_installed_by_project(folder, wanted)
            continue
        if line.startswith("-"):
            continue  # pip options (--index-url, --constraint, ...)
        named.add(_requirement(line)[0])
    return named


def _optional_imports(tree: ast.AST) -> set[int]:
    """ids of import nodes guarded by ``except ImportError`` / ``ModuleNotFoundError``."""
    guarded: set[int] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Try):
            continue
        caught = set()
        for handler in node.handlers:
            kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
            caught |= {k.id for k in kinds if isinstance(k, ast.Name)}
        if caught & {"ImportError", "ModuleNotFoundError"}:
            guarded |= {id(inner) for stmt in node.body for inner in ast.walk(stmt)}
    return guarded


def imported_modules(path: Path) -> set[str]:
    """Absolute modules a file imports, except optional ones."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    optional = _optional_imports(tree)
    modules: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in optional:
            continue
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    return modules


_PACKAGES = metadata.packages_distributions()


def distribution_of(module: str) -> str | None:
    """The installed distribution that provides ``module`` (None when none does)."""
    parts = module.split(".")
    candidates = _PACKAGES.get(parts[0], [])
    if len(set(candidates)) > 1 and len(parts) > 1:  # a namespace package (google.protobuf, ...)
        prefix = "/".join(parts[:2])
        for name in candidates:
            files = metadata.distribution(name).files or []
            if any(str(f).startswith((prefix + "/", prefix + ".")) for f in files):
                return normalise(name)
    return normalise(candidates[0]) if candidates else None


HOSTED_MODULES = {"triton_python_backend_utils"}  # exist only inside their host: Triton's Python stub


def unlisted_imports(files: list[Path], named: set[str], local: set[str]) -> list[str]:
    """'file: module (distribution)' for every third-party import not named in the install files."""
    problems = []
    for file in files:
        for module in sorted(imported_modules(file)):
            top = module.split(".")[0]
            if top in sys.stdlib_module_names or top in local or top.startswith("svdh_") or top in HOSTED_MODULES:
                continue
            distribution = distribution_of(module)
            if distribution is None:
                problems.append(f"{file.relative_to(REPO)}: {module} (no installed distribution provides it)")
            elif distribution not in named:
                problems.append(f"{file.relative_to(REPO)}: {module} (distribution {distribution})")
    return problems


def test_requirements_file_names_what_it_installs_through_the_projects() -> None:
    named = names_installed_by_requirements(REPO / "requirements-dev.txt")
    assert {"svdh-runtime", "svdh-exporter", "svdh-trainer", "pynetdicom", "torch", "hypothesis"} <= named
    assert "cuda-python" not in named, "the runtime's tensorrt extra is not part of the test install"


def test_an_unlisted_import_is_found(tmp_path: Path) -> None:
    probe = REPO / "tests" / f"_probe_{tmp_path.name}.py"  # must lie under the repository for relative paths
    probe.write_text(
        "import json\nimport numpy\nimport yaml\nfrom google.protobuf import text_format\n"
        "try:\n    import tensorrt\nexcept ImportError:\n    tensorrt = None\n",
        encoding="utf-8",
    )
    try:
        problems = unlisted_imports([probe], named={"numpy"}, local=set())
    finally:
        probe.unlink()
    assert [p.split(": ", 1)[1] for p in problems] == [
        "google.protobuf (distribution protobuf)",
        "yaml (distribution pyyaml)",
    ]


@pytest.mark.parametrize("folder", ["tests", "benchmarks"])
def test_every_import_of_tests_and_benchmarks_is_installed_by_the_readme_test_command(folder: str) -> None:
    named = names_installed_by_requirements(REPO / "requirements-dev.txt")
    files = sorted((REPO / folder).rglob("*.py"))
    local = {p.stem for d in ("tests", "benchmarks") for p in (REPO / d).glob("*.py")}
    problems = unlisted_imports(files, named, local)
    assert not problems, "imported but not named in requirements-dev.txt (or the projects it installs):\n" + "\n".join(
        problems
    )


@pytest.mark.parametrize("project", PROJECTS)
def test_every_import_of_a_distribution_is_named_in_its_own_pyproject(project: str) -> None:
    folder = REPO / project
    optional = _project(folder).get("optional-dependencies", {})
    named = names_installed_by_project(folder, {normalise(e) for e in optional})
    problems = unlisted_imports(sorted((folder / "src").rglob("*.py")), named, local=set())
    assert not problems, f"imported but not named in {project}/pyproject.toml:\n" + "\n".join(problems)
