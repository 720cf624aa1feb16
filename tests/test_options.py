"""Every option of train.py, evaluate.py, figures.py, ``python -m alexnet_np.data.prepare`` and
``python classify.py`` refuses nonsense
before anything runs, with one line ``error: ...`` naming the option, exit status 2, no
traceback, nothing written; and every sensible edge value still trains a step.

The nonsense table is generated from the parsers themselves: each option's ``type`` (an
``accepts`` record or a path check) gives its nonsense values (zero, negative, NaN,
infinity, too large, wrong type, unknown choice, empty), so a new option is tested as soon
as it is declared; an option without such a type must be listed in ``CHECKED_AT_RUN_TIME``
with the case that shows its check. The same records refuse the same values given in code
(``Config(...)``) and in a checkpoint. The cases run in-process (``main(argv)``); a few
run as real subprocesses to show "no traceback" end to end.
"""
import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import evaluate
import figures
import train
from alexnet_np import accepts, cli
import classify
from alexnet_np.data import prepare
from alexnet_np.train.checkpoint import write_atomic
from alexnet_np.config import DEMO, Config, ConfigError, flag

from test_train_errors import snapshot
from test_train_helpers import TINY_ARGS, make_tiny_cache

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = {"train.py": train, "evaluate.py": evaluate, "prepare": prepare, "figures.py": figures,
           "classify": classify}

# Options whose values only the run can judge (a folder's contents, a split's name), each
# with a run-time case in test_values_checked_at_run_time.
CHECKED_AT_RUN_TIME = {"train.py": {"--data"}, "evaluate.py": {"--data", "--split"},
                       "prepare": {"src", "--splits"}, "figures.py": {"--data", "--split"},
                       "classify": {"paths"}}


# --------------------------------------------------------------------------- the table

def number_nonsense(number):
    """Command-line texts a ``Number`` must refuse, from its own bounds."""
    values = ["abc", "", "nan", "inf", "-inf"]
    if number.kind is int:
        values += ["1.5", "1e3"]
    if number.low is not None:
        values.append(str(number.low) if number.low_open else str(number.low - 1))
        values.append(str(number.low - 1000))
    if number.high is not None:
        values.append(str(number.high) if number.high_open else str(number.high + 1))
        values.append("1e9")                                                   # too large
    if number.odd:
        values.append(str(max(2, (number.low or 0) + 1) // 2 * 2))            # an even number in range
    return values


def nonsense(kind, tmp):
    """[(value text, words the error line must hold besides the option)] for an argparse ``type``."""
    if isinstance(kind, accepts.Number):
        return [(v, [kind.describe()]) for v in number_nonsense(kind)]
    if isinstance(kind, accepts.Choice):
        return [(v, [kind.describe()]) for v in ("nonsense", "", kind.options[0].upper())]
    if isinstance(kind, accepts.Several):
        each = [v for v in number_nonsense(kind.each) if v and "," not in v]
        good = str(kind.each.low if kind.each.low is not None else 1)
        wrong_count = [",".join([good] * (kind.count + 1))] if kind.count else []
        return [(v, [kind.describe()]) for v in ["", ",", "a,b", *each, *wrong_count]]
    missing = os.path.join(tmp, "missing", "x")
    if kind is cli.existing_file:
        return [(missing, ["no such file"]), (tmp, ["not a folder"])]
    if kind is cli.existing_path:
        return [(missing, ["no such file or folder"])]
    if kind is cli.folder_to_write:
        return [(os.path.join(tmp, "a-file"), ["a file of that name exists"])]
    if kind is cli.output_file:
        return [(tmp, ["not a folder"]), (missing, ["does not exist"])]
    return None


def options(parser):
    """{option or positional name: action} of a parser, help excluded."""
    found = {}
    for action in parser._actions:          # argparse keeps no public list of its actions
        if isinstance(action, argparse._HelpAction):
            continue
        found[action.option_strings[0] if action.option_strings else action.dest] = action
    return found


def base_argv(script, tmp):
    """Arguments that parse: prepare's two positionals, classify's one (never used: parsing stops first)."""
    return {"prepare": [tmp, os.path.join(tmp, "never-made")], "classify": [tmp]}.get(script, [])


def table(tmp):
    """[(script, option, argv, words)] for every option of the scripts."""
    rows = []
    for script, module in SCRIPTS.items():
        for name, action in options(module.build_parser()).items():
            if action.nargs == 0:     # flags: --x / --no-x take no value
                rows.append((script, name, [f"{name}=yes"], ["ignored explicit argument", "yes"]))
                continue
            cases = nonsense(action.type, tmp)
            if cases is None:
                assert name in CHECKED_AT_RUN_TIME[script], (
                    f"{script} {name}: no checked type (alexnet_np.accepts / cli) and no run-time case")
                continue
            for value, words in cases:
                if action.option_strings:
                    argv = base_argv(script, tmp) + [f"{name}={value}"]
                else:                   # prepare's positionals: src stays, the one tested changes
                    argv = [tmp, value] if name == "dst" else [value, os.path.join(tmp, "never-made")]
                rows.append((script, name, argv, words + [value or "''"]))   # the value given, shown
    return rows


@pytest.fixture
def empty_cwd(tmp_path, monkeypatch):
    """An empty current folder (runs/ and data_cache/ would appear here) with one file in it."""
    folder = tmp_path / "cwd"
    folder.mkdir()
    monkeypatch.chdir(folder)
    (folder / "a-file").write_text("not a folder\n")
    return str(folder)


def refused(module, argv, capsys):
    """Run ``module.main(argv)`` expecting a refusal; the one error line."""
    try:
        status = module.main(argv)
    except SystemExit as stop:      # refused by the parser
        status = stop.code
    captured = capsys.readouterr()
    assert status == 2, (argv, captured.err)
    assert "Traceback" not in captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), (argv, captured.err)
    return lines[0]


def test_every_option_refuses_nonsense_with_one_line_naming_it(empty_cwd, capsys):
    rows = table(empty_cwd)
    covered = {(script, name) for script, name, _, _ in rows}
    for script, module in SCRIPTS.items():       # the table reaches every option of every parser
        for name in options(module.build_parser()):
            assert (script, name) in covered or name in CHECKED_AT_RUN_TIME[script], (script, name)
    assert len(rows) > 200
    for script, name, argv, words in rows:
        line = refused(SCRIPTS[script], argv, capsys)
        assert name in line, (argv, line)
        for word in words:
            assert word in line, (argv, line)
    assert sorted(os.listdir(empty_cwd)) == ["a-file"]       # no runs/, no data_cache/


def test_the_issues_examples(empty_cwd, capsys):
    """The values of the issue, each refused with the option, its value and what is allowed."""
    cases = {
        "--batch-size 0": "--batch-size 0: a whole number >= 1",
        "--dtype int8": "--dtype int8: one of float32, float64",
        "--lr -1": "--lr -1: a finite number > 0",
        "--momentum 1.5": "--momentum 1.5: a number in [0, 1)",
        "--momentum -0.5": "--momentum -0.5: a number in [0, 1)",
        "--weight-decay -1": "--weight-decay -1: a finite number >= 0",
        "--dropout 1": "--dropout 1: a probability in [0, 1)",
        "--dropout 1.5": "--dropout 1.5: a probability in [0, 1)",
        "--epochs -3": "--epochs -3: a whole number >= 1",
        "--lr-drops -1": "--lr-drops -1: a whole number >= 0",
        "--image-size 0": "--image-size 0: a whole number >= 1",
        "--image-size 10": "--image-size 10: at least --input-size 67",          # the demo's crop
        "--init-std -0.01": "--init-std -0.01: a finite number > 0",
        "--fc-units 0,0": "--fc-units 0,0: 2 values separated by commas, each a whole number >= 1",
        "--seed -5": "--seed -5: a whole number >= 0",
    }
    for argv, expected in cases.items():
        line = refused(train, argv.split() + ["--device", "cpu"], capsys)
        assert line.startswith("error: " + expected), line
    assert sorted(os.listdir(empty_cwd)) == ["a-file"]


def test_relations_between_values_are_refused_before_anything_runs(empty_cwd, capsys):
    """Each names the option and the other value it must agree with."""
    cases = [(["--conv-channels", "15,32,32,32,32"], ["--conv-channels 15,32,32,32,32", "divide", "--towers 2"]),
             (["--towers", "3"], ["--conv-channels 32,64,96,96,64", "--towers 3"]),
             (["--fc-units", "255,255"], ["--fc-units 255,255", "--towers 2"]),
             (["--input-size", "224", "--image-size", "256"], ["--input-size 224", "195 and 227"]),
             (["--input-size", "99"], ["--image-size 76", "--input-size 99"]),
             (["--gpus", "0,1,2"], ["--gpus 0,1,2", "one GPU id per tower (2 towers)"])]
    for argv, words in cases:
        line = refused(train, argv + ["--device", "cpu", "--no-progress"], capsys)
        for word in words:
            assert word in line, line
    assert sorted(os.listdir(empty_cwd)) == ["a-file"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("options"))
    cache = make_tiny_cache(root)
    out = os.path.join(root, "run")
    assert train.main(["--data", cache, "--out", out, *TINY_ARGS, "--max-steps", "1", "--no-figures"]) == 0
    return {"root": root, "cache": cache, "out": out, "checkpoint": os.path.join(out, "last.npz")}


def test_values_checked_at_run_time(tiny_run, empty_cwd, capsys):
    """Options only the run can judge (CHECKED_AT_RUN_TIME) and relations with the data."""
    cache, ckpt, out = tiny_run["cache"], tiny_run["checkpoint"], tiny_run["out"]
    before = snapshot(out)
    line = refused(train, ["--data", os.path.join(empty_cwd, "nowhere"), "--device", "cpu"], capsys)
    assert "--data" in line and "no such folder" in line
    line = refused(train, ["--data", cache, *TINY_ARGS, "--batch-size", "61"], capsys)
    assert "--batch-size 61: at most the 60 training images" in line
    one_class = os.path.join(tiny_run["root"], "one-class")
    for split in ("train", "val"):
        shutil.copytree(os.path.join(tiny_run["root"], "images", split, "red"), os.path.join(one_class, split, "red"))
    one_cache = prepare.prepare(one_class, one_class + "-cache", image_size=76, workers=1, progress=False,
                                print_fn=lambda *a: None)
    line = refused(train, ["--data", one_cache, *TINY_ARGS], capsys)
    assert "has 1 class" in line and "at least 2" in line
    direct = os.path.join(tiny_run["root"], "one-class-direct")   # the folder itself: refused before preparing
    line = refused(train, ["--data", one_class, "--cache", direct, *TINY_ARGS], capsys)
    assert "has 1 class" in line and "at least 2" in line and not os.path.exists(direct)
    line = refused(evaluate, ["--checkpoint", ckpt, "--data", os.path.join(empty_cwd, "nowhere")], capsys)
    assert "--data" in line and "no such folder" in line
    line = refused(evaluate, ["--checkpoint", ckpt, "--split", "test", "--device", "cpu", "--no-progress"], capsys)
    assert "--split test: one of the splits" in line and "train, val" in line
    line = refused(evaluate, ["--checkpoint", ckpt, "--gpus", "0,1,2", "--device", "cpu"], capsys)
    assert "--gpus 0,1,2" in line
    line = refused(figures, ["--checkpoint", ckpt, "--data", os.path.join(empty_cwd, "nowhere")], capsys)
    assert "--data" in line and "no such folder" in line
    line = refused(figures, ["--checkpoint", ckpt, "--split", "test", "--device", "cpu", "--no-progress"], capsys)
    assert "--split test: one of the splits" in line
    line = refused(prepare, [os.path.join(empty_cwd, "nowhere"), os.path.join(empty_cwd, "dst")], capsys)
    assert "nowhere" in line and "does not exist" in line
    images = os.path.join(tiny_run["root"], "images")
    line = refused(prepare, [images, os.path.join(empty_cwd, "dst"), "--splits", "train", "test"], capsys)
    assert "test" in line and "missing" in line
    line = refused(classify, [images, "--checkpoint", ckpt, "--figure", os.path.join(empty_cwd, "sheet.txt")], capsys)
    assert "--figure" in line and "sheet.txt" in line
    assert classify.main([os.path.join(empty_cwd, "nowhere"), "--checkpoint", ckpt, "--device", "cpu"]) == 1
    assert capsys.readouterr().err.strip() == f"error: {os.path.join(empty_cwd, 'nowhere')}: no such file or folder"
    assert snapshot(out) == before
    assert sorted(os.listdir(empty_cwd)) == ["a-file"]


def test_a_checkpoint_with_a_value_out_of_range_is_refused(tiny_run, tmp_path, capsys):
    with np.load(tiny_run["checkpoint"]) as z:
        arrays = {name: z[name] for name in z.files}
    meta = json.loads(arrays["meta"].tobytes())
    meta["config"]["dropout"] = 1.5
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    bad = str(tmp_path / "bad.npz")
    write_atomic(bad, arrays)
    line = refused(train, ["--resume", bad], capsys)
    assert "bad.npz" in line and "--dropout 1.5: a probability in [0, 1)" in line
    line = refused(evaluate, ["--checkpoint", bad, "--device", "cpu"], capsys)
    assert "--dropout 1.5" in line
    assert sorted(os.listdir(tmp_path)) == ["bad.npz"]


# --------------------------------------------------------------------------- in code

def code_nonsense(kind):
    """Python values a Config field declared with ``kind`` must refuse."""
    if isinstance(kind, accepts.Flag):
        return ["yes", 1, None]
    if isinstance(kind, accepts.Choice):
        return ["nonsense", 1, None]
    if isinstance(kind, accepts.Several):
        good = kind.each.low if kind.each.low is not None else 2
        return [(good,) * (kind.count + 1), (0,) * kind.count, "96,256", None]
    values = [float("nan"), float("inf"), "1", True, None]
    if kind.kind is int:
        values.append(1.5)
    if kind.low is not None:
        values.append(kind.low if kind.low_open else kind.low - 1)
    if kind.high is not None:
        values.append(kind.high if kind.high_open else kind.high + 1)
    return values


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(Config)])
def test_config_refuses_in_code_what_the_command_line_refuses(field):
    kind = Config.__dataclass_fields__[field].metadata["accepts"]
    assert kind.allows(getattr(Config(), field)) and kind.allows(getattr(DEMO, field))
    for value in code_nonsense(kind):
        with pytest.raises(ConfigError) as error:
            Config(**{field: value})
        assert str(error.value).startswith(f"{flag(field)} "), str(error.value)
        assert kind.describe() in str(error.value)
        with pytest.raises(ConfigError):
            Config.from_dict(dict(Config().to_dict(), **{field: value}))


def test_accepts_records():
    assert accepts.PROBABILITY.allows(0) and not accepts.PROBABILITY.allows(1)
    assert accepts.POSITIVE.allows(1e-30) and not accepts.POSITIVE.allows(0.0)
    assert not accepts.POSITIVE_INT.allows(True) and not accepts.POSITIVE_INT.allows(2.0)
    assert accepts.POSITIVE_INT.allows(np.int64(3)) and accepts.POSITIVE.allows(3)
    assert accepts.Several(accepts.POSITIVE_INT, 2)("4, 6") == (4, 6)
    assert accepts.Several(accepts.NON_NEGATIVE_INT)("0") == (0,)
    assert accepts.Number(int, low=1, odd=True).allows(5) and not accepts.Number(int, low=1, odd=True).allows(4)
    with pytest.raises(argparse.ArgumentTypeError, match=r"^1\.5: a probability in \[0, 1\)$"):
        accepts.PROBABILITY("1.5")
    with pytest.raises(argparse.ArgumentTypeError, match=r"^'': a whole number >= 1$"):
        accepts.POSITIVE_INT("")


def test_help_shows_what_each_option_accepts():
    for script, module in SCRIPTS.items():
        parser = module.build_parser()
        text = " ".join(parser.format_help().split())
        for name, action in options(parser).items():
            if isinstance(action.type, accepts.Accepts):
                assert f"[{action.type.describe()}]" in text, (script, name)
    text = " ".join(train.build_parser().format_help().split())
    for words in ("--dropout X (default 0.5) [a probability in [0, 1)]",
                  "--image-size N (default 256; at least --input-size)",
                  "--conv-channels N,N,N,N,N (default 96,256,384,384,256; each divisible by --towers)"):
        assert words in text, words


# --------------------------------------------------------------------------- edge values run

def test_sensible_edge_values_still_train_a_step(tiny_run, tmp_path):
    """The smallest and largest values each option allows: one step each, in three runs."""
    cache = tiny_run["cache"]
    edges = [
        ["--batch-size", "1", "--dropout", "0", "--lr-drops", "0", "--momentum", "0", "--weight-decay", "0",
         "--lighting-std", "0", "--lrn-alpha", "0", "--lrn-beta", "0", "--lrn-size", "1", "--epochs", "1",
         "--lr-patience", "1", "--checkpoint-every", "0", "--threads", "0", "--log-every", "1",
         "--stall-steps", "0", "--eval-batch-size", "0", "--neighbour-pool", "0", "--seed", "0",
         "--gpus", "0", "--num-classes", "4", "--image-size", "76"],
        ["--towers", "1", "--dtype", "float64", "--mean", "channel", "--no-flip", "--dropout", "0.999",
         "--momentum", "0.999", "--lrn-k", "1e-9", "--init-std", "1e-9", "--lr", "1e-12", "--lrn-size", "99",
         "--batch-size", "60", "--eval-batch-size", "1", "--lr-steps", "1", "--gpus", "0", "--workers", "1"],
        ["--conv-channels", "2,2,2,2,2", "--fc-units", "2,2", "--dropout-inverted", "--decay-biases",
         "--lrn-alpha-over-n", "--seed", str(2 ** 64), "--max-steps", "0", "--epochs", "1", "--threads", "1",
         "--keep-epochs", "--no-figures", "--cache", str(tmp_path / "unused"), "--gpus", "0,0"],
    ]
    for n, extra in enumerate(edges):
        out = str(tmp_path / f"edge{n}")
        argv = ["--data", cache, "--out", out, *TINY_ARGS, "--max-steps", "1", *extra]
        assert train.main(argv) == 0, extra
        assert os.path.isfile(os.path.join(out, "last.npz"))
        records = [json.loads(r) for r in open(os.path.join(out, "log.jsonl"))]
        assert any(r["kind"] == "step" for r in records) or any(r["kind"] == "epoch" for r in records)
    line_args = ["--checkpoint", os.path.join(str(tmp_path / "edge0"), "last.npz"), "--batch-size", "1",
                 "--neighbour-pool", "0", "--gpus", "0", "--device", "cpu", "--no-progress",
                 "--json", str(tmp_path / "e.json"), "--predictions", str(tmp_path / "p.csv")]
    assert evaluate.main(line_args) == 0
    assert json.load(open(tmp_path / "e.json"))["images"] == 20
    dst = str(tmp_path / "tiny-8")
    assert prepare.main([os.path.join(tiny_run["root"], "images"), dst, "--image-size", "1", "--workers", "1",
                         "--checkpoint-seconds", "0", "--no-progress"]) == 0
    assert np.load(os.path.join(dst, "train_images.npy"), mmap_mode="r").shape[1:] == (1, 1, 3)


# --------------------------------------------------------------------------- end to end

@pytest.mark.parametrize("command", [
    [sys.executable, "train.py", "--batch-size", "0"],
    [sys.executable, "train.py", "--dtype", "int8"],
    [sys.executable, "train.py", "--input-size", "224", "--image-size", "256", "--device", "cpu"],
    [sys.executable, "evaluate.py", "--batch-size", "nan"],
    [sys.executable, "-m", "alexnet_np.data.prepare", "SRC", "DST", "--workers", "0"],
])
def test_no_traceback_end_to_end(command, tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT)
    command = [os.path.join(ROOT, c) if c.endswith(".py") else c for c in command]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stdout == "" and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --"), done.stderr
    assert os.listdir(tmp_path) == []
