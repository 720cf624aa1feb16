"""What --help says: plain text (no docstring ``code`` marks), the options each tool uses and no
others, and refusals of a positional argument that name it."""
import os
import subprocess
import sys

import pytest

from alexnet_np.paper import summary, trace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = [["train.py"], ["evaluate.py"], ["classify.py"], ["figures.py"], ["experiments.py"],
            ["-m", "alexnet_np.paper.summary"], ["-m", "alexnet_np.paper.trace"], ["-m", "alexnet_np.data.prepare"]]


def run(*args):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[-1])
def test_help_is_plain_text(command):
    done = run(*command, "--help")
    assert done.returncode == 0 and "usage:" in done.stdout
    assert "``" not in done.stdout


def options_of(main, capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    return {word.strip("[],") for word in capsys.readouterr().out.split() if word.startswith(("--", "[--"))}


def test_summary_and_trace_offer_only_the_fields_they_use(capsys):
    training = {"--lr", "--momentum", "--epochs", "--lr-patience", "--lr-drops", "--batch-size"}
    summary_options = options_of(summary.main, capsys)
    assert not training & summary_options and "--seed" not in summary_options
    assert {"--conv-channels", "--lrn-alpha-over-n", "--decay-biases", "--lighting-std"} <= summary_options
    trace_options = options_of(trace.main, capsys)
    assert not training & trace_options
    assert not {"--random-crop", "--flip", "--lighting-std", "--weight-decay"} & trace_options
    assert {"--batch", "--conv-channels", "--init-std", "--seed", "--image-size"} <= trace_options



def test_an_unknown_experiment_is_named_as_such():
    done = run("experiments.py", "lrnn")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == ["error: EXPERIMENT lrnn: one of lrn, pooling, towers, lighting, dropout, "
                                        "crops, flips, figure1, all"]
