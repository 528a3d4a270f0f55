"""The environment is described in three places; they must agree."""

import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def pins(requirements: list[str]) -> dict[str, str]:
    """{"torch": "2.13.0", ...} from `name==version` lines; anything else is an error."""
    out = {}
    for req in requirements:
        name, sep, version = req.partition("==")
        assert sep and version.strip(), f"not pinned with ==: {req!r}"
        out[name.strip().lower()] = version.strip()
    return out


def pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return pins(project["dependencies"] + project["optional-dependencies"]["dev"])


def conda_pip_section() -> list[str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    assert "python=3.11" in deps and "pip" in deps
    (pip,) = [d["pip"] for d in deps if isinstance(d, dict) and "pip" in d]
    return pip


def test_environment_yml_pins_what_pyproject_pins():
    pip = conda_pip_section()
    assert "-e .[dev]" in pip
    requirements = [r for r in pip if not r.startswith("-")]  # options and the editable install
    assert pins(requirements) == pyproject_pins()


def test_constraints_pin_torch_like_pyproject():
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    constraints = pins([s for s in lines if s.strip() and not s.startswith("#")])
    assert constraints["torch"] == "2.13.0" == pyproject_pins()["torch"]


@pytest.mark.parametrize("path", ["lab/runs/x/config.json", "lab/data/world/a.jsonl", "lab/lab.db"])
def test_gitignore_keeps_the_workspace_out_of_git(path):
    check = subprocess.run(["git", "check-ignore", "--no-index", "-q", path], cwd=ROOT, check=False)
    assert check.returncode == 0, f".gitignore does not ignore {path}"


def test_recipes_are_not_ignored():
    check = subprocess.run(
        ["git", "check-ignore", "--no-index", "-q", "lab/recipes/tiny.yaml"], cwd=ROOT, check=False
    )
    assert check.returncode == 1
