"""python -m alexnet_np.paper.trace (issue 9): the table on the demo configuration, and --break
reaching the right layer with its real input (a stand-in debugger)."""
import numpy as np
import pytest
from PIL import Image

from alexnet_np.paper import trace
from alexnet_np.nn.backend import Device
from alexnet_np.config import DEMO
from alexnet_np.data.loader import Cache, eval_batches
from alexnet_np.nn.model import AlexNet, layer_sizes
from alexnet_np.data.prepare import prepare

BATCH = 3


@pytest.fixture(scope="module")
def demo_sized_cache(tmp_path_factory):
    """10 classes (as the demo), 10 training and 10 validation images of DEMO.image_size."""
    src = tmp_path_factory.mktemp("trace_src")
    rng = np.random.default_rng(0)
    size = DEMO.image_size
    for split in ("train", "val"):
        for label in range(10):
            (src / split / f"c{label}").mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(src / split / f"c{label}" / "0.png")
    dst = tmp_path_factory.mktemp("trace_cache") / "cache"
    return prepare(str(src), str(dst), image_size=size, workers=1, progress=False, print_fn=lambda *a: None)


class StandIn:
    """Records where the debugger was asked to stop, then runs the call (as pdb's 'c')."""

    def __init__(self):
        self.calls = []

    def runcall(self, method, *args):
        self.calls.append((method, args))
        return method(*args)


def test_table_of_the_demo_configuration(demo_sized_cache, capsys):
    result = trace.main(["--data", demo_sized_cache, "--batch", str(BATCH)])
    out = capsys.readouterr().out
    rows = {(row["layer"], row["tower"]): row for row in result.rows}
    names = ["conv1", "relu1", "lrn1", "pool1", "conv2", "relu2", "lrn2", "pool2", "conv3", "relu3", "conv4",
             "relu4", "conv5", "relu5", "pool5", "flatten", "fc6", "relu6", "drop6", "fc7", "relu7", "drop7"]
    assert {(n, t) for n in names for t in "01"} | {(n, "-") for n in trace.CROSSINGS + ("fc8", "loss")} == set(rows)
    # Rows in the order the layers ran: stage 1 of both towers, then the first crossing.
    order = [(row["layer"], row["tower"]) for row in result.rows]
    assert order.index(("pool2", "1")) < order.index(("exchange3", "-")) < order.index(("conv3", "0"))
    s = layer_sizes(DEMO)
    assert rows[("conv1", "1")]["out"] == f"{DEMO.conv_channels[0] // 2}x{BATCH}x{s['conv1']}x{s['conv1']}"
    assert rows[("exchange3", "-")]["out"] == " + ".join([f"{DEMO.conv_channels[1]}x{BATCH}x{s['pool2']}x{s['pool2']}"] * 2)
    assert rows[("fc8", "-")]["out"] == f"{BATCH}x10"
    # The numbers are those of the net: the same net run untraced gives the same loss.
    model = AlexNet(DEMO, [Device()] * 2)
    images, labels = next(iter(eval_batches(Cache(demo_sized_cache), "val", DEMO, Device(), BATCH, threads=0)))
    assert float(model.forward_loss(images, labels, train=True)) == pytest.approx(rows[("loss", "-")]["out mean"])
    relu = rows[("relu3", "0")]
    assert 0 < relu["zeros %"] < 100 and 0 <= relu["dead %"] <= relu["zeros %"]
    assert "zeros %" not in rows[("conv3", "0")] and rows[("conv3", "0")]["grad std"] > 0
    assert rows[("pool1", "0")]["bytes"] == BATCH * (DEMO.conv_channels[0] // 2) * s["pool1"] ** 2 * 4
    assert "lrn1" in out and "exchange3 before conv3" in out


def test_break_stops_at_the_layer_with_its_real_input(demo_sized_cache, capsys):
    debugger = StandIn()
    result = trace.main(["--data", demo_sized_cache, "--batch", str(BATCH), "--break", "lrn1:1",
                         "--break-backward"], debugger=debugger)
    tower = result.model.towers[1]
    (forward, (x, train)), (backward, (dy,)) = debugger.calls
    assert forward.__self__ is tower.lrn1 and forward.__name__ == "forward" and train is True
    assert x is tower.lrn1.x and x is tower.relu1.y                # the real array, relu1's output
    assert x.shape == (DEMO.conv_channels[0] // 2, BATCH, 15, 15)
    assert backward.__self__ is tower.lrn1 and backward.__name__ == "backward" and dy.shape == x.shape
    assert "first line of lrn1.forward of tower 1" in capsys.readouterr().out
    # Without a tower: the first tower that runs it, once; forward only without --break-backward.
    debugger = StandIn()
    result = trace.main(["--data", demo_sized_cache, "--batch", str(BATCH), "--break", "conv3"], debugger=debugger)
    assert [m.__self__ for m, _ in debugger.calls] == [result.model.towers[0].conv3]


def test_real_pdb_continue_finishes_and_quit_is_one_line(demo_sized_cache, capsys):
    """pdb itself, fed its commands: 'c' goes on to the table; 'q', or the end of its input (a
    non-interactive run), stops the trace with one line and status 1, not a traceback
    (Bdb.runcall swallows the quit and returns None, which the trace used to take as the output)."""
    import io
    import pdb
    result = trace.main(["--data", demo_sized_cache, "--batch", str(BATCH), "--break", "lrn1:1", "--break-backward"],
                        debugger=pdb.Pdb(stdin=io.StringIO("p x.shape\nc\nc\n"), stdout=io.StringIO()))
    assert ("lrn1", 1, "backward") in result.stop.reached and "gather8" in capsys.readouterr().out
    for commands, where in [("q\n", "lrn1.forward of tower 1"), ("", "lrn1.forward of tower 1"),
                            ("c\n", "lrn1.backward of tower 1")]:
        with pytest.raises(SystemExit) as info:
            trace.main(["--data", demo_sized_cache, "--batch", str(BATCH), "--break", "lrn1:1", "--break-backward"],
                       debugger=pdb.Pdb(stdin=io.StringIO(commands), stdout=io.StringIO()))
        err = capsys.readouterr().err
        assert info.value.code == 1 and err == f"--break: quit in the debugger at {where}; the trace stopped there\n"


@pytest.mark.parametrize("stop,fragment", [("nosuch", "no such layer"), ("fc8:1", "no tower"),
                                           ("conv1:5", "towers 0..1"), ("conv1:x", "must be a number")])
def test_break_errors_are_one_line(demo_sized_cache, stop, fragment, capsys):
    with pytest.raises(SystemExit) as info:
        trace.main(["--data", demo_sized_cache, "--break", stop], debugger=StandIn())
    assert info.value.code == 2 and fragment in capsys.readouterr().err


def test_tanh_rows_report_saturation(demo_sized_cache):
    result = trace.main(["--data", demo_sized_cache, "--batch", str(BATCH), "--activation", "tanh", "--no-lrn"])
    rows = {(row["layer"], row["tower"]): row for row in result.rows}
    assert ("lrn1", "0") not in rows and rows[("relu1", "0")]["kind"] == "Tanh"
    assert "zeros %" not in rows[("relu1", "0")] and 0 <= rows[("relu1", "0")]["sat %"] <= 100
    tanh = result.model.towers[0].relu1
    assert rows[("relu1", "0")]["sat %"] == pytest.approx(100 * float((np.abs(tanh.y) > 0.99).mean()))


def test_the_trace_runs_the_plain_layers_and_fast_the_others(demo_sized_cache):
    # --break conv3 stops in the plain convolution, whose forward is the im2col and the GEMM
    from alexnet_np.nn import fast, layers
    debugger = StandIn()
    result = trace.main(["--data", demo_sized_cache, "--batch", str(BATCH), "--break", "conv3"], debugger=debugger)
    (forward, _), = debugger.calls
    assert type(forward.__self__) is layers.Conv2D and forward.__func__ is layers.Conv2D.forward
    assert not result.model.flat
    result = trace.main(["--data", demo_sized_cache, "--batch", str(BATCH), "--fast"])
    assert type(result.model.towers[0].conv3) is fast.FastConv2D
