"""pyproject.toml and the requirements files say the same, and an installed package holds
every module and data file the code reads (pip install . copies only what is declared)."""
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pyproject():
    tomllib = pytest.importorskip("tomllib")   # Python 3.11+
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def requirements(name):
    """The requirements of one file, its -r includes followed."""
    found = set()
    with open(os.path.join(ROOT, name)) as f:
        for line in f:
            line = line.split("#")[0].strip()
            if line.startswith("-r "):
                found |= requirements(line[3:].strip())
            elif line:
                found.add(line)
    return found


def test_the_requirements_files_list_what_pyproject_lists():
    project = pyproject()["project"]
    runtime, extras = set(project["dependencies"]), project["optional-dependencies"]
    assert requirements("requirements.txt") == runtime
    assert requirements("requirements-mpi.txt") == runtime | set(extras["mpi"])
    assert requirements("requirements-dev.txt") == runtime | set(extras["dev"])
    assert set(extras["mpi"]) | set(extras["caffe"]) | set(extras["devkit"]) <= set(extras["dev"])


def test_every_folder_of_the_package_is_a_package_and_its_data_files_are_declared():
    tool = pyproject()["tool"]["setuptools"]
    assert tool["packages"]["find"]["include"] == ["alexnet_np", "alexnet_np.*"]
    declared = set(tool["package-data"]["alexnet_np"])
    data_files = set()
    for dirpath, dirnames, names in os.walk(os.path.join(ROOT, "alexnet_np")):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        rel = os.path.relpath(dirpath, os.path.join(ROOT, "alexnet_np"))
        assert "__init__.py" in names, f"alexnet_np/{rel} has no __init__.py: pip install . would leave it out"
        data_files |= {os.path.normpath(os.path.join(rel, n)).replace(os.sep, "/") for n in names
                       if not n.endswith(".py")}
    assert data_files == declared, "files the package reads at run time must be in [tool.setuptools.package-data]"
