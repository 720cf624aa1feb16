"""Named configurations (``train.py --preset NAME``): each is the configuration it names, its
help says what it sets, options given beside it change single values, and a resume keeps the
run's own configuration."""
import json
import os

import pytest

import train
from alexnet_np.config import DEMO, PRESETS, Config, one_tower_comparison

from test_train_helpers import make_tiny_cache


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return make_tiny_cache(str(tmp_path_factory.mktemp("presets")))


def test_presets_are_the_configurations_they_name():
    assert PRESETS["paper"][0] == Config() and PRESETS["demo"][0] == DEMO
    assert PRESETS["one-tower"][0] == one_tower_comparison(Config())


def test_help_lists_every_preset_with_what_it_sets(capsys):
    with pytest.raises(SystemExit):
        train.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())     # the help, its line breaks undone
    assert "The defaults shown below are the paper's, used with --data." in text
    for name in PRESETS:
        assert f"{name} " in text.split("presets (--preset NAME):")[1]
    assert ("sets --num-classes 10, --input-size 67, --conv-channels 32,64,96,96,64, --fc-units 256,256, "
            "--lrn-alpha-over-n, --init-std 0.05, --batch-size 64, --epochs 30, --image-size 76") in text
    assert "sets --towers 1, --conv-channels 48,128,192,192,256" in text


def test_a_preset_on_your_data_with_an_option_beside_it(cache, tmp_path, capsys):
    out = str(tmp_path / "run")
    assert train.main(["--data", cache, "--preset", "demo", "--batch-size", "10", "--out", out, "--max-steps", "1",
                       "--device", "cpu", "--no-progress", "--no-figures"]) == 0
    assert "configuration: the demo preset with the options given" in capsys.readouterr().out
    with open(os.path.join(out, "config.json")) as f:
        saved = Config.from_dict(json.load(f))
    # The demo's net, the data's 4 classes, and the batch given beside the preset.
    assert saved == DEMO.replace(num_classes=4, batch_size=10)
    with pytest.raises(SystemExit) as refused:   # by the parser, before anything runs
        train.main(["--resume", out, "--preset", "paper"])
    assert refused.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: --preset is for a new run: --resume continues with the run's configuration (options given change "
        "single values)"]
