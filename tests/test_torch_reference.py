"""Our two-tower AlexNet against the same net built in PyTorch (conventions 9).

Compared: logits, loss, every parameter gradient (in our naming, tower by tower), and the
weights after a few SGD steps with momentum and weight decay. float64 to ~1e-10 relative;
float32 to 1e-4 of each tensor's largest magnitude. Dropout masks are read back from our
layers after a training forward (``reference_torch.masks_from``) and given to PyTorch, so
both nets drop the same units. On a mismatch the failure lists every tensor with its max
abs difference and the first few differing pairs (as llm.c's test does).

LRN uses a large alpha (0.5; k = 2) and weights ~ N(0, 0.2), so that the normalisation
really divides (checked: the scale s = k + coef * sum is well above k on average and varies
across the map) and the two conventions (alpha on the sum, or alpha / n) give visibly
different logits; both are compared.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from alexnet_np.config import Config                   # noqa: E402
from alexnet_np.nn.model import AlexNet                   # noqa: E402
from alexnet_np.nn.fast import PackedSGD                  # noqa: E402
from alexnet_np.interop import reference_torch as reference    # noqa: E402

SMALL = Config(num_classes=7, input_size=67, conv_channels=(8, 16, 24, 24, 16), fc_units=(32, 32),
               lrn_alpha=0.5, lrn_k=2.0, init_std=0.2, dtype="float64",
               lr=0.05, momentum=0.9, weight_decay=0.01, seed=3)
BATCH = 5            # odd on purpose
RTOL = {"float64": 1e-10, "float32": 1e-4}


def batch(config, n, seed=0):
    """Images (N, 3, S, S) ~ N(0, 1), labels (N,). With SMALL's init_std = 0.2 the signal
    reaches the logits through every layer (the biases of 1 do not swamp it)."""
    rng = np.random.default_rng(seed)
    S = config.input_size
    images = rng.standard_normal((n, 3, S, S)).astype(config.dtype)            # (N, 3, S, S)
    labels = rng.integers(0, config.num_classes, n)                            # (N,)
    return images, labels


def compare(pairs, rtol):
    """Assert ``|ours - theirs| <= rtol * max|theirs|`` for every (name, ours, theirs).

    On failure the message has one line per tensor (max abs diff, its relative size),
    and the first few differing entries of each failing tensor.
    """
    lines, failures = [], []
    for name, ours, theirs in pairs:
        ours, theirs = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
        assert ours.shape == theirs.shape, f"{name}: shape {ours.shape} != PyTorch {theirs.shape}"
        diff = np.abs(ours - theirs)
        scale = max(float(np.abs(theirs).max()), 1e-300)
        worst = float(diff.max())
        ok = worst <= rtol * scale
        lines.append(f"  {'ok ' if ok else 'BAD'} {name:18s} max|diff| {worst:.3e}  "
                     f"max|torch| {scale:.3e}  relative {worst / scale:.3e}")
        if not ok:
            bad = np.argwhere(diff > rtol * scale)[:5]
            failures.append(f"  {name}: first differing entries (index: ours, torch): " + ", ".join(
                f"{tuple(int(i) for i in idx)}: {ours[tuple(idx)]:.9g}, {theirs[tuple(idx)]:.9g}"
                for idx in bad))
    if failures:
        pytest.fail(f"disagreement with PyTorch beyond rtol {rtol:g} (relative to max|torch|):\n"
                    + "\n".join(lines) + "\n" + "\n".join(failures), pytrace=False)


def nets(config):
    """Our net and PyTorch's, with the same weights."""
    ours = AlexNet(config)
    return ours, reference.build(config, ours.state_dict())


def step_both(ours, theirs, images, labels, train):
    """Forward, loss and backward on both nets with the same dropout masks.

    Returns (our loss, PyTorch's loss, masks used or None)."""
    loss = ours.forward_loss(images, labels, train=train)
    ours.backward()
    masks = reference.masks_from(ours) if train else None
    theirs.zero_grad(set_to_none=True)
    their_loss = theirs.forward_loss(torch.from_numpy(images), torch.from_numpy(labels), train, masks)
    their_loss.backward()
    return float(loss), their_loss.item(), masks


def check_step(ours, theirs, images, labels, train, rtol):
    loss, their_loss, masks = step_both(ours, theirs, images, labels, train)
    grads = reference.gradients(theirs)
    pairs = [("loss", loss, their_loss),
             ("logits", ours.logits, theirs.logits.detach().numpy())]
    pairs += [(name, dw, grads[name]) for name, _, dw, _ in ours.parameters()]
    assert len(grads) == len(ours.parameters()) == 7 * ours.config.towers * 2 + 2
    compare(pairs, rtol)
    return masks


@pytest.mark.parametrize("alpha_over_n", [False, True], ids=["alpha", "alpha/n"])
@pytest.mark.parametrize("inverted", [False, True], ids=["paper-dropout", "inverted-dropout"])
@pytest.mark.parametrize("train", [False, True], ids=["test", "train"])
def test_logits_loss_gradients_float64(alpha_over_n, inverted, train):
    config = SMALL.replace(lrn_alpha_over_n=alpha_over_n, dropout_inverted=inverted)
    ours, theirs = nets(config)
    images, labels = batch(config, BATCH)
    masks = check_step(ours, theirs, images, labels, train, RTOL["float64"])
    # The comparison exercises what it claims: LRN really divides (s = k + coef * sum is
    # well above k on average and varies across the map), ...
    for tower in ours.towers:
        for lrn in (tower.conv1_to_pool2[2], tower.conv1_to_pool2[6]):
            scale = lrn.scale(lrn.x, np.empty_like(lrn.x))
            assert float(scale.mean()) > 1.5 * config.lrn_k
            assert float(scale.max()) > 1.5 * float(scale.min())
    # ... and at training time some units are dropped and some kept, in every tower.
    if train:
        for m in masks.values():
            assert 0.2 < float((m.numpy() == 0).mean()) < 0.8


@pytest.mark.parametrize("change", [{"activation": "tanh"}, {"pool_size": 2, "pool_stride": 2},
                                    {"lrn": False}, {"towers": 1, "conv_channels": (4, 8, 12, 12, 16)}],
                         ids=["tanh", "pool-2-2", "no-lrn", "one-tower"])
def test_the_papers_switches_agree_with_pytorch(change):
    """Each switch of experiments.py (§3.1-3.4) built both ways: logits, loss, every gradient."""
    config = SMALL.replace(**change)
    ours, theirs = nets(config)
    images, labels = batch(config, BATCH)
    check_step(ours, theirs, images, labels, True, RTOL["float64"])
    if "towers" in change:
        assert len(ours.towers) == 1 and ours.crossings() == {"conv3": 0, "fc6": 0, "fc7": 0, "fc8": 0}


def test_lrn_convention_matters():
    """The two LRN conventions give different logits: the tests above tell them apart."""
    images, labels = batch(SMALL, BATCH)
    ours, _ = nets(SMALL.replace(lrn_alpha_over_n=False))
    _, theirs = nets(SMALL.replace(lrn_alpha_over_n=True))
    logits = ours.forward(images)
    with torch.no_grad():
        their_logits = theirs(torch.from_numpy(images)).numpy()
    assert np.abs(logits - their_logits).max() > 1e-2 * np.abs(their_logits).max()


@pytest.mark.parametrize("inverted", [False, True], ids=["paper-dropout", "inverted-dropout"])
def test_logits_loss_gradients_float32(inverted):
    config = SMALL.replace(dtype="float32", dropout_inverted=inverted, lrn_alpha_over_n=inverted)
    ours, theirs = nets(config)
    images, labels = batch(config, BATCH)
    for train in (False, True):
        check_step(ours, theirs, images, labels, train, RTOL["float32"])


@pytest.mark.parametrize("optimiser", ["paper", "torch.optim.SGD"])
@pytest.mark.parametrize("decay_biases", [False, True], ids=["biases-not-decayed", "biases-decayed"])
@pytest.mark.parametrize("inverted", [False, True], ids=["paper-dropout", "inverted-dropout"])
def test_sgd_steps_float64(optimiser, decay_biases, inverted):
    """Three training steps (dropout on, momentum, weight decay): the weights agree after each.

    torch.optim.SGD gives the paper's update as long as lr is constant (reference.torch_sgd)."""
    config = SMALL.replace(decay_biases=decay_biases, dropout_inverted=inverted)
    ours, theirs = nets(config)
    opt = PackedSGD(ours.parameters(), config.lr, config.momentum, config.weight_decay, config.decay_biases,
                    flat=ours.flat)
    assert len(opt.flat) == len(ours.flat) == 2    # the update as training runs it: over each device's flat arrays
    their_opt = (reference.PaperSGD(theirs, config) if optimiser == "paper"
                 else reference.torch_sgd(theirs, config))
    start = ours.state_dict()
    for step in range(3):
        images, labels = batch(config, BATCH, seed=10 + step)
        step_both(ours, theirs, images, labels, train=True)
        opt.step()
        their_opt.step()
        theirs_now = reference.weights(theirs)
        compare([(f"step{step + 1}.{name}", w, theirs_now[name]) for name, w in ours.state_dict().items()],
                RTOL["float64"])
    # The steps moved every weight by much more than the tolerance (not a comparison of
    # two untouched nets).
    moved = {name: np.abs(w - start[name]).max() / max(np.abs(start[name]).max(), 1e-12)
             for name, w in ours.state_dict().items() if name.endswith(".W")}
    assert min(moved.values()) > 1e-6, moved


def test_paper_config_float32():
    """The real paper configuration (227x227, 96-256-384-384-256, 4096, 1000) at batch 2,
    float32, training mode: logits, loss and every gradient within 1e-4 of max|torch|
    (the largest difference seen is 2e-6). About 10 s, mostly drawing 61M weights."""
    config = Config()
    ours, theirs = nets(config)
    rng = np.random.default_rng(0)
    images = (rng.standard_normal((2, 3, 227, 227)) * 50.0).astype(np.float32)  # (2, 3, 227, 227)
    labels = rng.integers(0, 1000, 2)
    check_step(ours, theirs, images, labels, train=True, rtol=RTOL["float32"])
