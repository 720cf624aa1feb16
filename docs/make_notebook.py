"""Run the annotated notebook and write it with its outputs: ``python docs/make_notebook.py``.

The cells are written once, in ``docs/annotated_alexnet.py`` (Jupytext's "percent" format:
plain Python, readable in a review); this script turns them into a notebook, runs it from
``docs/`` in a fresh Python kernel (nbclient), and writes ``docs/annotated_alexnet.ipynb``
with every output, pictures included, so that it reads on GitHub without running. A cell that
raises stops it with the cell and the error, and nothing is written. ``--fast`` sets
``ANNOTATED_ALEXNET_FAST=1`` (a few training steps, as the tests run it) and writes nothing
unless ``--out`` is given. The tests (``tests/test_notebook.py``) check that the committed
notebook holds exactly the cells of the source, run, and run it again in the fast mode.

    python docs/make_notebook.py                    # the committed notebook, full run
    python docs/make_notebook.py --fast --out /tmp/annotated.ipynb
"""
import argparse
import contextlib
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "annotated_alexnet.py")
NOTEBOOK = os.path.join(HERE, "annotated_alexnet.ipynb")


def read_source(path=SOURCE):
    """The notebook of the cells in ``path`` (Jupytext percent format), without outputs."""
    try:
        import jupytext
    except ImportError:
        sys.exit("the notebook needs jupytext and nbclient: pip install -e \".[dev]\"")
    return jupytext.read(path)


@contextlib.contextmanager
def environment(changes):
    """``os.environ`` with ``changes`` (None: removed) while inside; the kernel inherits it."""
    old = {name: os.environ.get(name) for name in changes}
    try:
        _set(changes)
        yield
    finally:
        _set(old)


def _set(values):
    """Set each variable of ``values`` in ``os.environ``; None removes it."""
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def execute(notebook, env=None, timeout=900, cwd=HERE):
    """Run every cell of ``notebook`` in order, in place, in a new kernel started in ``cwd``
    with ``env`` added to the environment. Raises nbclient's ``CellExecutionError`` (the cell
    and the traceback) at the first error."""
    from nbclient import NotebookClient
    with environment(env or {}):
        NotebookClient(notebook, timeout=timeout, kernel_name="python3", record_timing=False,
                       resources={"metadata": {"path": cwd}}).execute()
    return notebook


def write(notebook, path):
    """Write ``notebook`` to ``path`` whole or not at all (a temporary file, then a rename)."""
    import nbformat
    temporary = path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as f:
        nbformat.write(notebook, f)
    os.replace(temporary, path)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python docs/make_notebook.py", description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="a few training steps only (ANNOTATED_ALEXNET_FAST=1)")
    parser.add_argument("--out", help=f"where to write the notebook (default {os.path.relpath(NOTEBOOK)}; "
                                      "with --fast, nothing unless given)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    notebook = execute(read_source(), {"ANNOTATED_ALEXNET_FAST": "1" if args.fast else None})
    out = args.out or (None if args.fast else NOTEBOOK)
    if out:
        write(notebook, out)
    print(f"ran {os.path.relpath(SOURCE)} in {time.perf_counter() - started:.0f} s"
          + (f"; wrote {os.path.relpath(out)}" if out else ""))


if __name__ == "__main__":
    main()
