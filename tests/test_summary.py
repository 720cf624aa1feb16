"""The model summary: the paper's figures, and agreement with the model actually built."""
import os
import subprocess
import sys

from alexnet_np.config import Config
from alexnet_np.nn.model import AlexNet
from alexnet_np.paper.summary import format_summary, layer_table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_summary_of_the_paper_configuration():
    text = format_summary(Config())
    assert "60,965,224" in text
    assert "290,400" in text and "253,440" in text and "misprint" in text
    for choice in ("input size", "LRN", "dropout", "weight decay", "PCA lighting", "mean"):
        assert choice in text


def test_summary_counts_agree_with_the_built_model():
    small = Config(num_classes=7, input_size=67, conv_channels=(8, 16, 24, 24, 16), fc_units=(32, 32))
    assert sum(row[3] for row in layer_table(small)) == AlexNet(small).num_parameters()


def test_summary_command_line():
    out = subprocess.run([sys.executable, "-m", "alexnet_np.paper.summary", "--input-size", "67",
                          "--num-classes", "10"], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert "input 3x67x67" in out and "10 classes" in out
    bad = subprocess.run([sys.executable, "-m", "alexnet_np.paper.summary", "--input-size", "224"], cwd=ROOT,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "224" in bad.stderr and "Traceback" not in bad.stderr
