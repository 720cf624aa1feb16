"""The annotated notebook (docs/annotated_alexnet.py, committed with its outputs as
docs/annotated_alexnet.ipynb): the committed notebook is its source's cells, run; and the
source runs without an error, in its fast mode (a few training steps), with the real photos
of ../shared/data where they are and with the demo's pictures where they are not."""
import importlib.util
import os

import pytest

pytest.importorskip("jupytext", reason="the notebook tests need the dev extra: pip install -e \".[dev]\"")
pytest.importorskip("nbclient", reason="the notebook tests need the dev extra: pip install -e \".[dev]\"")
import nbformat  # noqa: E402  (nbclient's dependency)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("make_notebook", os.path.join(ROOT, "docs", "make_notebook.py"))
make_notebook = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_notebook)


def cells(notebook):
    return [(cell.cell_type, cell.source.strip()) for cell in notebook.cells]


def outputs(cell, kind=None):
    return [o for o in cell.get("outputs", []) if kind is None or o.get("output_type") == kind]


def text(notebook):
    return "".join(o.get("text", "") for cell in notebook.cells for o in outputs(cell, "stream"))


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """One folder for the data the runs make (the demo set is made once)."""
    return str(tmp_path_factory.mktemp("annotated"))


def test_the_committed_notebook_is_its_source_run_in_full():
    committed = nbformat.read(make_notebook.NOTEBOOK, as_version=4)
    assert cells(committed) == cells(make_notebook.read_source()), \
        "docs/annotated_alexnet.ipynb is not docs/annotated_alexnet.py: run python docs/make_notebook.py"
    code = [cell for cell in committed.cells if cell.cell_type == "code"]
    assert all(cell.execution_count for cell in code), "a cell was not run"
    assert not any(outputs(cell, "error") for cell in code)
    pictures = sum("image/png" in o.get("data", {}) for cell in code for o in outputs(cell))
    assert pictures >= 12, f"{pictures} pictures"
    assert "fast mode False" in text(committed), "the committed notebook must be the full run, not the fast one"


def test_the_notebook_runs(work):
    notebook = make_notebook.execute(make_notebook.read_source(),
                                     {"ANNOTATED_ALEXNET_FAST": "1", "ANNOTATED_ALEXNET_WORK": work})
    printed = text(notebook)
    assert "this notebook ran in" in printed and "fast mode True" in printed
    photos = os.path.join(ROOT, "..", "shared", "data", "imagenet-sample")
    if os.path.isdir(photos):
        assert "real photos: 87 ImageNet samples" in printed


def test_without_the_photos_it_says_so_and_uses_the_demo_pictures(work):
    notebook = make_notebook.read_source()
    sections = [i for i, cell in enumerate(notebook.cells) if cell.source.startswith("## §5")]
    notebook.cells = notebook.cells[:sections[0]]    # §2 to §4.2: where the photo is used
    absent = os.path.join(work, "no-such-folder")
    make_notebook.execute(notebook, {"ANNOTATED_ALEXNET_FAST": "1", "ANNOTATED_ALEXNET_WORK": work,
                                     "ANNOTATED_ALEXNET_PHOTOS": absent})
    assert f"{absent} is absent: using the built-in demo data set's generated pictures" in text(notebook)
