"""Each image copies one code directory and installs one set of requirements: the code must import nothing
else. The frontend image has only frontend/ and the base dependencies; the Triton image has only
triton_models/ and docker/triton_requirements.py's list (plus what NVIDIA's container provides)."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from packaging.requirements import Requirement

from tests.deploy.conftest import ROOT

# Provided by NVIDIA's Triton container itself, not by pip.
TRITON_PROVIDED = {"triton_python_backend_utils"}
# NVIDIA's TensorRT image (the export image's base) ships TensorRT's Python bindings.
TENSORRT_PROVIDED = {"tensorrt"}
# Imported only under a test session's coverage (guarded by an environment variable and ImportError).
TEST_ONLY = {"coverage"}


def imported_top_levels(package: str) -> dict[str, str]:
    """Top-level module -> first file importing it, for absolute imports in every module of `package`."""
    found: dict[str, str] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], str(path.relative_to(ROOT)))
    return found


def closure(requirements: list[str], no_deps: set[str] = frozenset()) -> set[str]:
    """Distributions installed by `requirements` and, transitively, by what they require (`no_deps`: the
    distributions alone)."""
    seen: set[str] = {re.sub(r"[-_.]+", "-", Requirement(r).name).lower() for r in no_deps}
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        if name in seen:
            continue
        seen.add(name)
        for sub in metadata.requires(req.name) or []:
            sub_req = Requirement(sub)
            if sub_req.marker is None or any(
                sub_req.marker.evaluate({"extra": extra}) for extra in (req.extras or {""})
            ):
                todo.append(sub_req)
    return seen


def importable(requirements: list[str], no_deps: set[str] = frozenset()) -> set[str]:
    """Top-level import names the installed `requirements` provide."""
    dists = closure(requirements, no_deps)
    return {
        module
        for module, providers in metadata.packages_distributions().items()
        if any(re.sub(r"[-_.]+", "-", p).lower() in dists for p in providers)
    }


def missing(package: str, requirements: list[str], extra: set[str] = frozenset(),
            no_deps: set[str] = frozenset()) -> dict[str, str]:
    allowed = importable(requirements, no_deps) | set(sys.stdlib_module_names) | {package, "__future__"} | extra
    return {m: f for m, f in imported_top_levels(package).items() if m not in allowed}


def project() -> dict:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def base_dependencies() -> list[str]:
    return project()["dependencies"]


def no_deps_installs(text: str) -> set[str]:
    """Requirements installed with `pip install ... --no-deps "<req>"` in a Makefile or Dockerfile."""
    found = set()
    for command in re.findall(r"pip install[^\n&]*--no-deps[^\n&]*", text.replace("\\\n", " ")):
        found |= {r.strip('"\'') for r in command.split() if re.match(r"^[\"']?[A-Za-z][\w.-]*[=<>]", r)}
    return found


# What the frontend may import from triton_models: the shared contract, copied into its image alone.
SHARED_CONTRACT = {"triton_models", "triton_models.contract"}


def test_frontend_imports_only_base_dependencies():
    assert missing("frontend", base_dependencies(), {"triton_models"}) == {}


def test_frontend_imports_only_the_contract_from_triton_models():
    imported = set()
    for path in (ROOT / "frontend").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("triton_models"):
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported |= {a.name for a in node.names if a.name.startswith("triton_models")}
    assert imported and imported <= SHARED_CONTRACT
    # The contract itself (and the package's __init__) import the standard library alone.
    tree = ast.parse((ROOT / "triton_models" / "contract.py").read_text())
    modules = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    modules |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    init = ast.parse((ROOT / "triton_models" / "__init__.py").read_text())
    modules |= {a.name.split(".")[0] for n in ast.walk(init) if isinstance(n, ast.Import) for a in n.names}
    assert modules <= set(sys.stdlib_module_names) | {"__future__", ""} | TEST_ONLY


def test_triton_models_import_only_the_triton_image_requirements():
    listed = subprocess.run([sys.executable, ROOT / "docker" / "triton_requirements.py", ROOT / "pyproject.toml"],
                            capture_output=True, text=True, check=True).stdout.split()
    assert missing("triton_models", listed, TRITON_PROVIDED | TEST_ONLY) == {}


def test_the_check_sees_an_undeclared_import():
    assert "onnxruntime" in missing("triton_models", ["numpy<2"], TRITON_PROVIDED)


def test_export_image_installs_what_make_install_does():
    """`make install` is what CI exports with; the export image must install the same --no-deps extras."""
    makefile = no_deps_installs((ROOT / "Makefile").read_text())
    dockerfile = no_deps_installs((ROOT / "docker" / "export.Dockerfile").read_text())
    assert makefile == dockerfile


def test_export_scripts_import_only_what_the_export_image_installs():
    extras = project()["optional-dependencies"]
    installed = [*base_dependencies(), *extras["triton"], *extras["export"]]
    no_deps = no_deps_installs((ROOT / "docker" / "export.Dockerfile").read_text())
    assert missing("export_scripts", installed, {"triton_models"} | TENSORRT_PROVIDED, no_deps) == {}


def copied_files(dockerfile: str, stage: int = -1) -> list[str]:
    """Repository paths an image's build stage COPYs from the context (not --from=...)."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "docker" / dockerfile).read_text())
    stages = re.split(r"^FROM ", text, flags=re.M)[1:]
    sources = []
    for line in stages[stage].splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            sources += line.split()[1:-1]
    return sources


@pytest.mark.parametrize(("dockerfile", "stage", "package"),
                         [("triton.Dockerfile", -1, "triton_models"), ("frontend.Dockerfile", 0, "frontend")])
def test_the_copied_files_build_the_package(dockerfile, stage, package, tmp_path):
    """`pip install .` in the image sees only what the image COPYs: the package must build from that alone
    and the wheel must hold every subpackage (a folder without __init__.py would be left out)."""
    for source in copied_files(dockerfile, stage):
        target = tmp_path / source
        if (ROOT / source).is_dir():
            shutil.copytree(ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / source, target)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", tmp_path / "dist", tmp_path], check=True, capture_output=True)
    [wheel] = (tmp_path / "dist").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        packaged = {Path(name).parent.as_posix() for name in archive.namelist() if name.endswith(".py")}
    expected = {p.parent.relative_to(ROOT).as_posix() for p in (ROOT / package).rglob("*.py")
                if "__pycache__" not in p.parts}
    assert expected and expected <= packaged
    shared = {"triton_models"} if package == "frontend" else set()  # the contract, nothing else of it
    assert {p.split("/")[0] for p in packaged} == {package} | shared
