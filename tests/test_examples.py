"""The example outputs of README.md and docs/*.md are what the code prints (docs/examples.py):
every marked block is as the script wrote it, and the fast examples, rerun, print it again."""
import importlib.util
import os
import shutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("docs_examples", os.path.join(ROOT, "docs", "examples.py"))
examples = importlib.util.module_from_spec(spec)
spec.loader.exec_module(examples)


def test_every_block_is_as_the_script_wrote_it():
    assert examples.check_digests() == []


def test_the_fast_examples_print_what_the_documents_show(capsys):
    assert examples.main(["--check", "--fast"]) == 0, capsys.readouterr().out


def copy_docs(tmp_path):
    os.makedirs(tmp_path / "docs")
    for doc in examples.DOCS:
        shutil.copyfile(os.path.join(ROOT, doc), tmp_path / doc)


def test_a_block_edited_by_hand_fails_the_check(tmp_path):
    copy_docs(tmp_path)
    path = tmp_path / "docs" / "options.md"
    text = path.read_text()
    start, end, body, _ = examples.blocks(text)["options-errors"]
    assert "a probability in [0, 1)" in body
    path.write_text(text[:start] + body.replace("[0, 1)", "[0, 1]") + text[end:])
    problems = examples.check_digests(str(tmp_path))
    assert len(problems) == 1 and "options-errors was edited by hand" in problems[0], problems


def test_a_block_without_its_markers_or_example_is_named(tmp_path):
    copy_docs(tmp_path)
    path = tmp_path / "docs" / "options.md"
    text = path.read_text()
    path.write_text(text.replace("<!-- end example options-errors", "<!-- end example other-name"))
    assert any("options-errors has no end marker" in p for p in examples.check_digests(str(tmp_path)))
    path.write_text(text.replace("example options-errors", "example no-such-example"))
    problems = examples.check_digests(str(tmp_path))
    assert any("no-such-example is no example" in p for p in problems)
    assert any("no block for the example options-errors" in p for p in problems)


def test_timings_alone_may_change():
    a = "classified 2 images in 0.02 s (127.7 images/s, decoding included)\n| towers (§3.2) | x | 0.7 |"
    b = "classified 2 images in 0.05 s (40.1 images/s, decoding included)\n| towers (§3.2) | x | 1.4 |"
    assert examples.masked(a) == examples.masked(b)
    assert examples.masked("top-1 error 15.00% (45 of 300") != examples.masked("top-1 error 15.33% (46 of 300")
