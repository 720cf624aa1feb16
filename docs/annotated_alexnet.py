# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The Annotated AlexNet
#
# Krizhevsky, Sutskever and Hinton, *ImageNet Classification with Deep Convolutional Neural
# Networks* (NIPS 2012), read section by section beside the code of this repository that
# implements it, and run: every layer is the plain class from `alexnet_np/nn/layers.py`, printed
# here next to its equation, fed a real photograph, drawn, and its gradient checked against
# finite differences. Nothing is hidden in a framework: the arrays are NumPy's (or CuPy's on a
# GPU), and each step runs in seconds on a laptop's CPU.
#
# The order is the paper's: §2 the data, §3 the network (§3.1 ReLU, §3.2 two GPUs, §3.3 local
# response normalisation, §3.4 overlapping pooling), §4 the fight against overfitting (§4.1
# augmentation, §4.2 dropout), §5 learning, §6 results. The README's table "Where the paper
# lives in the code" maps the same sections to files, for reading the code on its own.
#
# This page is `docs/annotated_alexnet.ipynb`, kept with its outputs so that it reads without
# running; its source is `docs/annotated_alexnet.py` (the same cells as plain Python, for
# review), and `python docs/make_notebook.py` runs it and writes the notebook again
# ([tests.md](tests.md), "The annotated notebook"). To run it yourself: `pip install -e ".[dev]"`,
# then open the notebook in Jupyter or VS Code.

# %% [markdown]
# ## Setting up
#
# One variable chooses the device: `"cpu"` (NumPy) or `"gpu"` (CuPy: tower 0 on GPU 0, tower 1
# on GPU 1, or both on one GPU). Nothing else changes. The environment variables are for the
# test suite: `ANNOTATED_ALEXNET_FAST=1` shortens the two training runs (§3.1 and §6) to a few
# steps, `ANNOTATED_ALEXNET_WORK` says where data and the run go (default: `data_cache/` and
# `runs/` of the repository, as `train.py` uses), `ANNOTATED_ALEXNET_PHOTOS` where the real
# photos are.

# %%
import os

device = os.environ.get("ANNOTATED_ALEXNET_DEVICE", "cpu")    # "cpu" or "gpu"
FAST = os.environ.get("ANNOTATED_ALEXNET_FAST") == "1"        # a few steps of training only (the tests)

# %%
import inspect
import sys
import time

import numpy as np
import matplotlib.pyplot as plt
from IPython.display import Markdown, display

started = time.perf_counter()
ROOT = os.path.abspath(os.getcwd())           # the repository: the folder that holds alexnet_np/
while not os.path.isdir(os.path.join(ROOT, "alexnet_np")) and os.path.dirname(ROOT) != ROOT:
    ROOT = os.path.dirname(ROOT)
sys.path.insert(0, ROOT)                      # the package as it is in this checkout
WORK = os.environ.get("ANNOTATED_ALEXNET_WORK")
DATA_DIR = os.path.join(WORK, "data") if WORK else os.path.join(ROOT, "data_cache")
RUN_DIR = os.path.join(WORK, "run") if WORK else os.path.join(ROOT, "runs", "annotated")
PHOTOS = os.environ.get("ANNOTATED_ALEXNET_PHOTOS",
                        os.path.join(ROOT, "..", "shared", "data", "imagenet-sample"))

from alexnet_np.nn.backend import tower_devices

devices = tower_devices(device, 2)            # one per tower (§3.2)
dev = devices[0]
xp, host = dev.xp, dev.to_host                # the array module, and the way back to NumPy
rng = np.random.default_rng(0)                # every random draw of this page comes from here

plt.rcParams.update({"figure.dpi": 80, "figure.figsize": (10, 3.2), "font.size": 10,
                     "axes.titlesize": 10, "image.interpolation": "nearest"})


def show(images, titles=(), rows=1, size=2.4, suptitle=None, cmap=None, vmax=None):
    """Draw images (H, W, 3) uint8 or (H, W) floats side by side (floats on one scale, 0..vmax,
    when vmax is given)."""
    columns = -(-len(images) // rows)
    fig, axes = plt.subplots(rows, columns, figsize=(size * columns, size * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, title in zip(axes.ravel(), images, list(titles) + [""] * len(images)):
        ax.imshow(image, cmap=cmap, vmin=None if vmax is None else 0, vmax=vmax)
        ax.set_title(title)
    if suptitle:
        fig.suptitle(suptitle)
    plt.tight_layout()
    plt.show()


def source(obj):
    """The source of a class or function of the package, printed as it is in the file."""
    print(f"# {inspect.getsourcefile(obj).replace(ROOT + os.sep, '')}")
    print(inspect.getsource(obj))


print(f"device: {device}, towers on {[d.name for d in devices]}; fast mode: {FAST}")

# %% [markdown]
# ## §2 The data
#
# ImageNet's photographs come in every size. The paper brings each to a fixed 256x256: scale it
# so that its *shorter* side is 256 pixels, then keep the central 256x256 square. No other
# preprocessing is done, except that the mean over the training set of each pixel (a mean
# *image*) is subtracted: the network sees raw RGB values, centred.
#
# Here the photos are a few ImageNet samples (one photo each of 87 classes) from `../shared/data`
# beside the repository. A fresh clone does not have them: the notebook then uses the built-in
# demo data set (pictures of shapes the package generates, `alexnet_np/data/demo.py`) instead,
# and says so. `prepare` is the project's one-time preprocessing (`alexnet_np/data/prepare.py`):
# it stores every image as §2 asks and computes the mean image and the colour statistics §4.1
# needs.

# %%
from PIL import Image

from alexnet_np.config import Config, DEMO
from alexnet_np.data.demo import Demo
from alexnet_np.data.loader import Cache
from alexnet_np.data.prepare import load_image, prepare, resize_box

if os.path.isdir(PHOTOS):
    photos = Cache(prepare(PHOTOS, os.path.join(DATA_DIR, "annotated-photos-256"), image_size=256,
                           splits=["sample"], progress=False, print_fn=lambda *a: None))
    split = "sample"
    print(f"real photos: {len(photos.split(split))} ImageNet samples from {os.path.normpath(PHOTOS)}")
else:
    photos = Cache(prepare(Demo(os.path.join(DATA_DIR, "demo-data")), os.path.join(DATA_DIR, "annotated-demo-256"),
                           image_size=256, splits=["val"], progress=False, print_fn=lambda *a: None))
    split = "val"
    print(f"{os.path.normpath(PHOTOS)} is absent: using the built-in demo data set's generated pictures "
          f"({len(photos.split(split))} of them) instead of real photos")

paths = photos.split(split).paths
wanted = [i for i, p in enumerate(paths) if "African_hunting_dog" in p]   # a photo wider than tall
index = wanted[0] if wanted else 0
path = paths[index]
original = Image.open(path).convert("RGB")
stored = load_image(path, 256)                                   # (256, 256, 3) uint8, as §2 stores it
new_w, new_h, left, top, box = resize_box(original.width, original.height, 256)
print(f"{os.path.basename(path)}: {original.width}x{original.height} -> shorter side to 256: "
      f"{new_w}x{new_h} -> the central 256x256 (from column {left}, row {top})")

# %%
from matplotlib.patches import Rectangle

mean_image = photos.mean_image                                    # (256, 256, 3) float32, per pixel
centred = stored.astype(np.float32) - mean_image                  # what the network is given (before cropping)
fig, axes = plt.subplots(1, 4, figsize=(12, 3.3))
axes[0].imshow(original)
axes[0].add_patch(Rectangle(box[:2], box[2] - box[0], box[3] - box[1], fill=False, color="yellow", lw=2))
axes[0].set_title(f"original {original.width}x{original.height},\nthe part kept (yellow)")
axes[1].imshow(stored)
axes[1].set_title("stored: 256x256")
axes[2].imshow(mean_image.astype(np.uint8))
axes[2].set_title(f"the mean image of the {len(photos.split(split))}")
axes[3].imshow(np.clip(centred / (2 * np.abs(centred).max()) + 0.5, 0, 1))
axes[3].set_title(f"stored - mean (range {centred.min():.0f}..{centred.max():.0f},\nshown with 0 as grey)")
for ax in axes:
    ax.axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# Averaged over many photos, the mean image is a smooth blur, a little brighter where skies
# tend to be; subtracting it centres every pixel's values on zero. The project keeps the paper's
# per-pixel mean (`Config.mean = "pixel"`; a per-channel mean is the other choice,
# `--mean channel`).

# %% [markdown]
# ## §3 The network
#
# Eight layers with weights: five convolutional, three fully connected, the last feeding a
# 1000-way softmax; training maximises the log-probability of the correct label (cross-entropy).
# The layers live in `alexnet_np/nn/layers.py`, one small class each, in the *plain form*
# printed below: `forward(x, train)` keeps what backward needs, `backward(dy)` writes the
# gradients of the parameters into `self.grads` and returns the gradient of the input. A faster
# form of each sits beside it in `alexnet_np/nn/fast.py`, tested equal to it
# (`Config.layer_form`, [design.md](design.md)). Convolutional activations are stored
# channel-first, `(C, N, H, W)`: the convolution's matrix product then yields its output in that
# layout without a transpose, and LRN's sum over neighbouring channels is a sum of contiguous
# slabs.
#
# Below, the first layer of tower 0 (48 kernels of 11x11x3 at stride 4, weights drawn from
# N(0, 0.01) as §5 initialises them) is run on the central 227x227 crop of the photo. Its
# kernels are random, as at the start of training; §6 shows learned ones.

# %%
from alexnet_np.data.loader import eval_views
from alexnet_np.nn.layers import Conv2D, LocalResponseNorm, MaxPool, ReLU, Tanh
from alexnet_np.nn.model import init_bias, init_weight

paper = Config()                                                   # the paper's values (alexnet_np/config.py)
view = eval_views(mean_image, paper, dev)(stored[None])            # (1, 3, 227, 227): centre crop minus mean
image = xp.ascontiguousarray(view.transpose(1, 0, 2, 3))           # (3, 1, 227, 227): channels first
conv1 = Conv2D(dev, init_weight(rng, (48, 3, 11, 11), paper.init_std, np.float32),
               init_bias(48, 0.0, np.float32), stride=4)
a1 = conv1.forward(image)                                          # (48, 1, 55, 55)
print("image", image.shape, "-> conv1", a1.shape, f"(55 = (227 - 11) / 4 + 1)")

# %% [markdown]
# ### §3.1 ReLU, and Figure 1
#
# The units of the paper are rectified linear: f(x) = max(0, x). The usual choice then was a
# saturating function such as tanh, whose gradient vanishes for large inputs; the paper's
# Figure 1 shows a small convolutional net on CIFAR-10 reaching 25% training error six times
# sooner with ReLUs than with tanh. Both layers, in their plain form:

# %%
source(ReLU)
source(Tanh)

# %%
t = np.linspace(-4, 4, 401)
fig, axes = plt.subplots(1, 3, figsize=(12, 3))
axes[0].plot(t, np.maximum(t, 0), label="ReLU")
axes[0].plot(t, np.tanh(t), "--", label="tanh")
axes[0].set_title("f(x)")
axes[1].plot(t, (t > 0).astype(float), label="ReLU")
axes[1].plot(t, 1 - np.tanh(t) ** 2, "--", label="tanh")
axes[1].set_title("f'(x): tanh's vanishes away from 0")
r1 = host(ReLU(dev).forward(a1))
axes[2].hist(host(a1).ravel(), bins=80, alpha=0.6, label="conv1 output")
axes[2].hist(r1[r1 > 0].ravel(), bins=80, alpha=0.6, label="after ReLU (> 0)")
axes[2].set_title(f"the photo's conv1: {100 * (r1 == 0).mean():.0f}% of units set to 0")
for ax in axes:
    ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# **Checking a gradient.** Every backward here is compared with centred finite differences in
# float64: with a random upstream gradient `dy`, the loss `L = sum(dy * forward(x))` is
# evaluated at `x ± eps` for every entry of a small input, and `(L+ - L-) / 2 eps` must equal
# what `backward(dy)` returns, to a relative error of about 1e-9 (rounding; a wrong term is
off by far more). (The test suite does the same, against loop-based references too:
# `tests/test_layers.py`, `tests/references.py`.)

# %%
def gradient_check(layer, x, eps=1e-6, **forward_args):
    """max |backward - finite differences| / max |finite differences|, over every entry of x."""
    dy = xp.asarray(rng.standard_normal(layer.forward(x, **forward_args).shape))
    analytic = np.asarray(host(layer.backward(dy)))
    numeric = np.zeros(x.shape)
    for i in np.ndindex(*x.shape):
        keep = float(x[i])
        x[i] = keep + eps
        plus = float((dy * layer.forward(x, **forward_args)).sum())
        x[i] = keep - eps
        minus = float((dy * layer.forward(x, **forward_args)).sum())
        x[i] = keep
        numeric[i] = (plus - minus) / (2 * eps)
    return float(np.abs(analytic - numeric).max() / np.abs(numeric).max())


away_from_zero = rng.uniform(0.1, 2, (3, 2, 5, 4)) * rng.choice([-1, 1], (3, 2, 5, 4))  # no kink inside ±eps
for layer in (ReLU(dev), Tanh(dev)):
    error = gradient_check(layer, xp.asarray(away_from_zero))
    print(f"{type(layer).__name__}: relative error {error:.1e}")
    assert error < 1e-7

# %% [markdown]
# **Figure 1, small.** The project's version of Figure 1's four-layer net is
# `alexnet_np/paper/figure1_net.py` (three 5x5 convolutions of 32, 32 and 64 kernels, each
# followed by the activation and 3x3 pooling at stride 2, then one fully connected layer; no
# regularisation, as the paper says), and `python experiments.py figure1` runs the full
# comparison ([experiments.md](experiments.md)). Here it trains for a few passes over part of
# the demo data at 32x32 (CIFAR-10's size), once with ReLU and once with tanh, each with the
# learning rate measured to suit it best (the paper too tuned each separately). The loop is the
# whole of training: forward with the loss, backward, one SGD step (§5).

# %%
from alexnet_np.data.demo import demo_cache
from alexnet_np.data.loader import TrainLoader
from alexnet_np.paper.experiments import FIGURE1, FIGURE1_LR
from alexnet_np.paper.figure1_net import Figure1Net

small = Cache(demo_cache(DATA_DIR, image_size=32))                # the demo data at 32x32
passes, batches = (1, 4) if FAST else (8, 20)                     # 20 batches of 32: 640 images a pass
curves = {}
for activation in ("relu", "tanh"):
    config = FIGURE1.replace(activation=activation, lr=FIGURE1_LR[activation], num_classes=10,
                             layer_form="plain")                  # the plain layers shown on this page
    net = Figure1Net(config, [dev])
    sgd = net.optimizer(config)
    errors = []
    for epoch in range(passes):
        loader = TrainLoader(small, config, dev, epoch=epoch)       # a new order and new crops each pass
        wrong = 0
        for b in range(batches):
            images, labels = loader.batch(b)                        # (32, 3, 32, 32), (32,)
            net.forward_loss(images, labels, train=True)            # the mean cross-entropy
            net.backward()                                          # every layer's gradient
            sgd.step()                                              # §5's update
            wrong += int((host(net.logits).argmax(axis=1) != labels).sum())
        errors.append(100 * wrong / (batches * config.batch_size))
    curves[activation] = errors
    print(f"{activation}: training error by pass {[round(e, 1) for e in errors]}")

# %%
plt.figure(figsize=(6, 3.5))
x = np.arange(1, passes + 1)
plt.plot(x, curves["relu"], "-o", label=f"ReLU (lr {FIGURE1_LR['relu']})")
plt.plot(x, curves["tanh"], "--o", label=f"tanh (lr {FIGURE1_LR['tanh']})")
plt.axhline(90, color="grey", lw=0.8, ls=":")
plt.xlabel(f"pass over {batches * FIGURE1.batch_size} training images")
plt.ylabel("training error (%)")
plt.title("Figure 1, small: ReLU (solid) against tanh (dashed); grey: chance")
plt.legend()
plt.show()

# %% [markdown]
# A few passes over a part of ten generated classes are far from the paper's CIFAR-10 runs, and
# one seed proves little: `python experiments.py figure1` trains both nets for 8 epochs on all
# the demo data with two seeds, and with `--cifar10 DIR` on the paper's data
# ([experiments.md](experiments.md) has its results).

# %% [markdown]
# ### §3.2 Two GPUs: the towers
#
# A GTX 580 had 3 GB, too little for the whole net, so the paper puts half of every layer's
# kernels on each of two GPUs. The GPUs talk only at some layers: conv3 takes the maps of both
# halves, conv2, conv4 and conv5 only those of their own GPU; fc6, fc7 and fc8 take everything.
# In the code a GPU's half is a `Tower` (`alexnet_np/nn/model.py`), and each place where Figure 2
# draws lines between the GPUs is an `Exchange`: every receiving tower gets the concatenation of
# all towers' outputs, each moved to its device by `backend.move`, the one function through
# which arrays change device (a no-op where they are already there, as on the CPU). The forward
# pass is a straight list of stages and exchanges; backward is that list reversed.

# %%
from alexnet_np.nn import backend
from alexnet_np.nn.model import AlexNet, Exchange

source(backend.move)
source(Exchange)

# %% [markdown]
# Here is the demo's configuration of the net (`DEMO` in `alexnet_np/config.py`: the paper's
# layers, kernel sizes, strides and crossings, with fewer kernels, 67x67 inputs and 10 classes,
# small enough for a CPU), run on two images, stage by stage, printing each tower's shapes and
# what the exchanges hand on. The same walk through the paper's full-size net is
# `python -m alexnet_np.paper.trace`.

# %%
demo = Cache(demo_cache(DATA_DIR))                                  # the demo data at 76x76
demo_config = DEMO.replace(layer_form="plain")
net = AlexNet(demo_config, devices)
images = eval_views(demo.mean_image, demo_config, dev)(demo.split("val").images[:2])   # (2, 3, 67, 67)
x = [tower.take_images(images) for tower in net.towers]              # (3, 2, 67, 67) on each tower's device
stages = [("conv1_to_pool2", net.exchange3, "conv3"), ("conv3_to_pool5", net.exchange6, "fc6"),
          ("fc6_stage", net.exchange7, "fc7"), ("fc7_stage", net.gather8, "fc8")]
print(f"{'layer':10} {'tower 0':>18} {'tower 1':>18}")
for stage, exchange, receiver in stages:
    for depth in range(len(getattr(net.towers[0], stage))):
        for g, tower in enumerate(net.towers):
            layer = getattr(tower, stage)[depth]
            with tower.device:
                x[g] = layer.forward(x[g], train=False)
        name = net.towers[0].layer_name(getattr(net.towers[0], stage)[depth])
        print(f"{name:10} {str(tuple(x[0].shape)):>18} {str(tuple(x[1].shape)):>18}")
    x = exchange.forward(x)
    print(f"-- crossing to {receiver}: each receiving tower gets {tuple(x[0].shape)} "
          f"({'both towers' if len(x) == 2 else 'tower 0 gets all'})")
with net.fc8.device:
    logits = net.fc8.forward(x[0])
print(f"{'fc8':10} {str(tuple(logits.shape)):>18}   (tower 0's device; then the softmax)")
assert np.allclose(host(logits), host(net.forward(images)))         # the same as the model's own forward

# %% [markdown]
# On the CPU both towers' devices share one memory, so the exchanges move nothing and the towers
# run side by side on the cores; with `device = "gpu"` on two GPUs each exchange copies between
# them, forward for activations and backward for gradients. `net.crossings()` counts the arrays
# that actually changed device:

# %%
loss = net.forward_loss(images, np.array([0, 1]))
net.backward()
print("arrays that changed device, per crossing (forward and backward):", net.crossings())

# %% [markdown]
# The parameters per layer, counted from the weights of the demo net and from the configuration
# alone by `alexnet_np/paper/summary.py` (which also prints the whole table below for the
# paper's net: `python -m alexnet_np.paper.summary`):

# %%
from alexnet_np.paper.summary import format_summary, layer_table

counted = {}
for name, layer in net.named_layers():                               # tower0.conv1, ..., tower1.fc7, fc8
    short = name.split(".")[-1]
    counted[short] = counted.get(short, 0) + sum(int(p.size) for p in layer.params.values())
table = {row[0]: row[3] for row in layer_table(demo_config) if row[3]}
print("demo net, parameters per layer:", counted)
assert counted == table
print(format_summary(paper))

# %% [markdown]
# ### §3.3 Local response normalisation
#
# After the ReLU of conv1 and conv2 each unit is divided by a power of the summed squares of the
# units at the same place in the `n = 5` neighbouring maps (kernel maps, in an order fixed at the
# start), a form of lateral inhibition: maps compete, and a large response damps its
# neighbours. With the paper's constants `k = 2`, `alpha = 1e-4`, `beta = 0.75`:
#
# b[i] = a[i] / (k + alpha * sum_{j near i} a[j]^2)^beta
#
# Two conventions exist for `alpha`: the printed formula, and the authors' code (and Caffe,
# PyTorch) which divide it by `n`; `Config.lrn_alpha_over_n` chooses.

# %%
source(LocalResponseNorm)

# %%
lrn = LocalResponseNorm(dev, paper.lrn_size, paper.lrn_k, paper.lrn_alpha, paper.lrn_beta)
r1_dev = ReLU(dev).forward(a1)                                      # (48, 1, 55, 55)
n1 = lrn.forward(r1_dev)
factor = host(lrn.s ** -paper.lrn_beta)[:, 0]                       # (48, 55, 55): what multiplies each unit
busiest = int(np.argmax(host(r1_dev)[:, 0].mean(axis=(1, 2))))
strong = 10 * r1_dev                                                # the same maps, as if 10x stronger
lrn.forward(strong)
factor10 = host(lrn.s ** -paper.lrn_beta)[:, 0]                     # (48, 55, 55): the factor then
fig, axes = plt.subplots(1, 4, figsize=(12, 3.2))
for ax, data, title in zip(axes, [host(r1_dev)[busiest, 0], host(n1)[busiest, 0], factor[busiest],
                                  factor10[busiest]],
                           [f"map {busiest} after ReLU", "after LRN", "the factor (k + ...)^-beta",
                            "the factor, maps 10x stronger"]):
    im = ax.imshow(data, cmap="viridis")
    ax.set_title(title)
    ax.axis("off")
    fig.colorbar(im, ax=ax, fraction=0.046)
plt.tight_layout()
plt.show()
print(f"factor over every unit: {factor.min():.4f} .. {factor.max():.4f} "
      f"(2^-0.75 = {2 ** -0.75:.4f}, the factor with no neighbours)")

# %% [markdown]
# With random kernels the responses are small and the factor is nearly the constant
# `k^-beta`: the normalisation bites only where neighbouring maps respond strongly, as trained
# kernels do (the right-hand panel: the same maps ten times stronger are damped unevenly, most
# where they are strongest). The gradient check, with a large `alpha` so that every term of the
# window matters, and an odd number of channels so that both edges are exercised:

# %%
strong_lrn = LocalResponseNorm(dev, size=5, k=2.0, alpha=0.5, beta=0.75)
error = gradient_check(strong_lrn, xp.asarray(rng.standard_normal((7, 2, 4, 5))))
print(f"LocalResponseNorm: relative error {error:.1e}")
assert error < 1e-7

# %% [markdown]
# ### §3.4 Overlapping pooling
#
# A pooling layer summarises each neighbourhood of a map by its maximum. With windows of
# `z x z` every `s` pixels, the usual choice `s = z` tiles the map; the paper takes `z = 3`,
# `s = 2`, so that neighbouring windows overlap by one row or column, and reports slightly
# lower error and a net a little harder to overfit.

# %%
source(MaxPool)

# %%
pool = MaxPool(dev, size=3, stride=2)
p1 = pool.forward(n1)                                               # (48, 1, 27, 27)
p1_tiled = MaxPool(dev, size=2, stride=2).forward(n1)               # (48, 1, 27, 27): the last row, column left out
fig, axes = plt.subplots(1, 4, figsize=(12, 3.2))
for ax, data, title in zip(axes, [host(n1)[busiest, 0], host(p1)[busiest, 0], host(p1_tiled)[busiest, 0]],
                           ["after LRN: 55x55", "3x3 windows, stride 2: 27x27", "2x2, stride 2: 27x27"]):
    ax.imshow(data, cmap="viridis")
    ax.set_title(title)
    ax.axis("off")
ax = axes[3]
for k, (z, colour) in enumerate([(3, "tab:blue"), (2, "tab:orange")]):
    for w in range(3):
        ax.add_patch(Rectangle((2 * w + 0.05 * k, 1.4 * k), z - 0.1, 1, alpha=0.35, color=colour))
ax.set_xlim(0, 7.5)
ax.set_ylim(-0.2, 2.6)
ax.set_xticks(range(8))
ax.set_yticks([])
ax.set_title("three windows along a row:\n3 wide (blue) overlap, 2 wide do not")
plt.tight_layout()
plt.show()

# %% [markdown]
# The gradient of a maximum goes to the unit that won; the check uses distinct values, so that
# no small step changes the winner:

# %%
distinct = (rng.permutation(3 * 2 * 7 * 9) / 100.0).reshape(3, 2, 7, 9)  # steps of 0.01 >> eps
error = gradient_check(MaxPool(dev, size=3, stride=2), xp.asarray(distinct))
print(f"MaxPool: relative error {error:.1e}")
assert error < 1e-7

# %% [markdown]
# ## §4.1 Data augmentation
#
# The net has 60 million parameters; the paper fights overfitting first by enlarging the data
# with label-preserving transformations, computed on the fly on the CPU while the GPUs train.
#
# *Translations and reflections.* Training takes a random 224x224 patch of each 256x256 image
# (227x227 here: the size that makes conv1's 55x55 exact, as Caffe does; see the summary above),
# reflected left-right half of the time. At test time the net averages its softmax over ten
# patches: the four corners and the centre, and their reflections.
#
# *Colour.* A principal component analysis of the RGB values of every training pixel gives
# three eigenvectors `p_i` and eigenvalues `lambda_i`; each time an image is used, every one of
# its pixels is shifted by `sum_i p_i * a_i * lambda_i` with `a_i ~ N(0, 0.1)` drawn once per
# image. In 0-255 units the printed `lambda_i` would be absurdly large; the authors' code scales
# the draws by `sqrt(lambda_i)`, and so does this project (`alexnet_np/data/augment.py` states
# the units).

# %%
from alexnet_np.data import augment

source(augment.lighting_shift)
ys, xs, flips, alphas = augment.draw_augmentation(rng, 6, 256, paper.input_size, lighting_std=paper.lighting_std)
crops = augment.crop_flip(stored[None], np.zeros(6, dtype=int), ys, xs, flips, paper.input_size)   # (6, 227, 227, 3)
shifts = augment.lighting_shift(alphas, photos.pca_eigvals, photos.pca_eigvecs)                     # (6, 3) levels
lit = np.clip(crops + shifts[:, None, None, :], 0, 255).astype(np.uint8)
show(lit, [f"at ({y}, {x}){', flipped' if f else ''}\nRGB {'/'.join(f'{v:+.0f}' for v in s)}"
           for y, x, f, s in zip(ys, xs, flips, shifts)], size=2.2,
     suptitle="six training views: random crop, flip and PCA lighting (a ~ N(0, 0.1))")
print("eigenvalues (0-255 levels squared):", np.round(photos.pca_eigvals, 1))
print("eigenvectors (columns):\n", np.round(photos.pca_eigvecs, 3))

# %% [markdown]
# At the paper's `sigma = 0.1` the shifts are a few levels, hard to see. Ten times larger, along
# each principal component alone, they show what the components are: the first is brightness
# (all three channels together), the others shift the colour balance.

# %%
views = []
titles = []
for i in range(3):
    for sign in (-1, 1):
        a = np.zeros((1, 3))
        a[0, i] = sign * 1.0                                         # 10x the paper's sigma, one component
        shift = augment.lighting_shift(a, photos.pca_eigvals, photos.pca_eigvecs)[0]
        views.append(np.clip(stored[14:241, 14:241] + shift, 0, 255).astype(np.uint8))
        titles.append(f"component {i + 1}, a = {sign:+d}.0")
show(views, titles, size=2.0)

# %%
ten = augment.ten_crop_views(stored[None], paper.input_size)[0]    # (10, 227, 227, 3)
show(ten, augment.TEN_CROP_ORDER, rows=2, size=2.0, suptitle="the ten test views (§4.1), averaged at test time")

# %% [markdown]
# ## §4.2 Dropout
#
# Averaging the predictions of many separately trained models lowers the error, but is costly.
# Dropout gets much of that benefit in one net: during training each hidden unit of fc6 and fc7
# outputs zero with probability 0.5, so a unit cannot rely on particular others being present,
# and every batch trains a different thinned net that shares the weights. At test time every
# unit is used and its output multiplied by 0.5, the expected value of the training-time output.
# (The other convention scales the kept units by 2 during training instead; both are here,
# `Config.dropout_inverted`.) The masks come from a counter-based generator
# (`alexnet_np/nn/counter_rng.py`), so they are the same on any device.

# %%
from alexnet_np.nn.layers import Dropout

source(Dropout)

# %% [markdown]
# In the net dropout acts on fc6's and fc7's units. To see it act, here it is applied to the
# photo's pooled conv1 maps, flattened into one row of units as `Flatten` does before fc6:

# %%
units = host(p1).transpose(1, 0, 2, 3).reshape(1, -1)               # (1, 48*27*27): one row of units
drop = Dropout(dev, p=0.5, key=(0, 0xD0, 6, 0))
trained = host(drop.forward(xp.asarray(units), train=True)).reshape(48, 27, 27)
tested = host(drop.forward(xp.asarray(units), train=False)).reshape(48, 27, 27)
average = np.zeros_like(tested)
draws = 200
for step in range(draws):                                           # the training output, over many masks
    drop.position = (step, 0, None)
    average += host(drop.forward(xp.asarray(units), train=True)).reshape(48, 27, 27) / draws
before = units.reshape(48, 27, 27)
top = max(before[busiest].max(), 1e-9)
show([before[busiest], trained[busiest], tested[busiest], average[busiest]],
     ["pooled map", "training: half the units zeroed", "test: every unit x 0.5", f"mean of {draws} training masks"],
     size=2.6, cmap="viridis", vmax=top)
print(f"units kept in one mask: {100 * (trained != 0).sum() / max((before != 0).sum(), 1):.1f}% of the non-zero ones; "
      f"|mean of {draws} masks - test output| / test output: "
      f"{np.abs(average - tested).sum() / np.abs(tested).sum():.3f}")

# %% [markdown]
# Backward multiplies the gradient by the same mask; the check passes the mask in, so that
# every evaluation of the loss uses the same one:

# %%
mask = xp.asarray(rng.random((4, 6)) < 0.5)
error = gradient_check(Dropout(dev, 0.5, key=(0, 1, 2, 3)), xp.asarray(rng.standard_normal((4, 6))),
                       train=True, mask=mask)
print(f"Dropout: relative error {error:.1e}")
assert error < 1e-7

# %% [markdown]
# ## §5 Learning
#
# Stochastic gradient descent on batches of 128, with momentum 0.9 and weight decay 0.0005; the
# decay is not only a regulariser, the paper notes, it lowers the training error too. The update
# of a weight `w` with velocity `v` and learning rate `lr`:
#
# v <- 0.9 v - 0.0005 lr w - lr dL/dw;  w <- w + v
#
# Weights start from N(0, 0.01); the biases of conv2, conv4, conv5, fc6 and fc7 start at 1 (the
# ReLUs then get positive inputs early on), the others at 0. One learning rate serves every
# layer: 0.01 at first, divided by 10 whenever the validation error stops improving, which
# happened three times in the paper's roughly 90 epochs. The update, as `alexnet_np/nn/optim.py`
# writes it (this is the plain form; `nn/fast.py`'s `PackedSGD` runs the same over packed
# arrays):

# %%
from alexnet_np.nn.optim import SGD

source(SGD.update_array)
w, dw, v = xp.asarray([1.0, -2.0]), xp.asarray([0.5, 0.25]), xp.asarray([0.1, 0.0])
sgd = SGD([("w", w, dw, dev)], lr=0.01, momentum=0.9, weight_decay=0.0005)
sgd.velocity["w"][...] = v
expected_v = 0.9 * host(v) - 0.0005 * 0.01 * host(w) - 0.01 * host(dw)      # the two lines, by hand
expected_w = host(w) + expected_v
sgd.step()
print("v:", host(sgd.velocity["w"]), " w:", host(w))
assert np.allclose(host(sgd.velocity["w"]), expected_v) and np.allclose(host(w), expected_w)

# %% [markdown]
# The schedule (`alexnet_np/train/schedule.py`) makes "stops improving" exact: after `patience`
# epochs (5 by default) without a new best validation error the rate is divided by 10, at most
# three times. Here it is fed an invented validation curve that flattens, falls after each
# drop, and flattens again, as real ones do:

# %%
from alexnet_np.train.schedule import PlateauSchedule

schedule = PlateauSchedule(lr=0.01, patience=5, max_drops=3)
invented, rates, floor, error = [], [], 0.45, 0.70
for epoch in range(1, 91):
    rates.append(schedule.lr)
    error = max(error - 0.015, floor)                                # falls, then flattens at the floor
    invented.append(error)
    if schedule.update(epoch, error) is not None:
        floor -= 0.04                                                # a drop lets the error fall further
fig, ax = plt.subplots(figsize=(8, 3.2))
ax.plot(range(1, 91), 100 * np.array(invented), color="tab:orange")
ax.set_ylabel("invented validation error (%)", color="tab:orange")
ax.set_xlabel("epoch")
ax2 = ax.twinx()
ax2.step(range(1, 91), rates, where="post")
ax2.set_yscale("log")
ax2.set_ylabel("learning rate", color="tab:blue")
for c in schedule.changes:
    ax.axvline(c["epoch"] + 0.5, color="grey", lw=0.8, ls=":")
ax.set_title("§5's schedule: /10 after 5 epochs without a new best, three times")
plt.show()
print([f"epoch {c['epoch']}: {c['old']:g} -> {c['new']:g}" for c in schedule.changes])

# %% [markdown]
# ## §6 Training and results
#
# The paper's net took five to six days on two GTX 580s for 90 epochs of 1.2 million images.
# On a CPU the demo net (the same structure, narrower, 10 generated classes) trains in minutes:
# `python train.py` runs 30 epochs; here `Trainer` (`alexnet_np/train/trainer.py`, the loop of
# `train.py`) runs a few. Each epoch it trains on random crops, flips and lighting (§4.1), with
# dropout (§4.2) and SGD (§5), evaluates the validation images on their centre crop, lets the
# schedule decide the learning rate and writes a checkpoint.

# %%
from alexnet_np.train.trainer import Options, Trainer

epochs = 2 if FAST else 12
config = DEMO.replace(epochs=epochs)                                 # the fast layers: the same sums, sooner
trainer = Trainer(config, demo, devices, RUN_DIR, Options(progress=False, figures=False, checkpoint_every=0),
                  {"demo": True, "cache": demo.path}, say=print)
trainer.run()
history = trainer.history

# %%
epoch_numbers = [h["epoch"] for h in history]
fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
axes[0].plot(epoch_numbers, [h["train_loss"] for h in history], "-o", label="training")
axes[0].plot(epoch_numbers, [h["val_loss"] for h in history], "-o", label="validation")
axes[0].axhline(np.log(10), color="grey", ls=":", label="chance: ln 10")
axes[0].set_title("loss (cross-entropy)")
for key, style in (("top1", "-o"), ("top5", "--o")):
    axes[1].plot(epoch_numbers, [100 * h[f"train_{key}"] for h in history], style, color="tab:blue",
                 label=f"training {key}")
    axes[1].plot(epoch_numbers, [100 * h[f"val_{key}"] for h in history], style, color="tab:orange",
                 label=f"validation {key}")
axes[1].axhline(90, color="grey", ls=":", label="chance top-1")
axes[1].set_title("error (%), training: running over the epoch, augmented")
for ax in axes:
    ax.set_xlabel("epoch")
    ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# **Ten crops.** The paper's test predictions average the softmax over the ten views of §4.1.
# `evaluate_split` (`alexnet_np/train/evaluation.py`, what `evaluate.py` runs) does both:

# %%
from alexnet_np.train.evaluation import evaluate_split

model = trainer.model
centre = evaluate_split(model, demo, "val", config, dev, 64)
tens = evaluate_split(model, demo, "val", config, dev, 64, ten_crop=True)
for name, result in (("centre crop", centre), ("ten crops", tens)):
    print(f"{name:12}: top-1 error {100 * result['top1']:5.2f}%, top-5 error {100 * result['top5']:5.2f}% "
          f"on {result['count']} validation images (chance: 90% and 50%)")

# %% [markdown]
# A dozen epochs leave the demo net far from trained: `python train.py` runs 30, and its run in
# the README ends near 17% top-1 error. Even so the ten views do a little better than the
# centre crop alone, as §4.1 says they should.
#
# ### §6.1 Figure 3: the kernels of conv1
#
# The paper shows conv1's 96 learned kernels, 48 per GPU, and notes that the two GPUs
# specialise: one tower's kernels come out largely colour-blind, the other's colourful. Here are
# the demo net's (16 per tower after these few epochs; `python figures.py` draws them for any
# checkpoint). Each kernel is stretched to its own full range, as the authors' viewer did. After
# a few epochs they are still close to their random start; the demo's 30-epoch run draws them
# in `docs/demo/conv1_kernels.png`, and BVLC's trained net (below) shows the paper's picture.

# %%
from alexnet_np.train import figures
from alexnet_np.train.evaluation import kernel_weights

fig, axes = plt.subplots(2, 16, figsize=(12, 2.1))
for g, weights in enumerate(kernel_weights(model)):                  # (16, 3, 11, 11) per tower
    for k, tile in enumerate(figures.kernel_tiles(weights, scale=1)):  # (11, 11, 3) uint8 each
        axes[g, k].imshow(tile)
        axes[g, k].axis("off")
    axes[g, 0].set_title(f"tower {g}", fontsize=9, loc="left")
plt.suptitle(f"conv1 kernels after {epochs} epochs (Figure 3)")
plt.show()

# %% [markdown]
# ### §6.1 Figure 4: nearest neighbours in fc7
#
# If two images give fc7 activations (the last hidden layer) close in Euclidean distance, the
# net considers them alike. The paper shows test images beside the six training images nearest
# to them in that space: they are alike in what they show, not pixel by pixel.
# `figures.nearest_neighbours` searches the training set in batches:

# %%
from alexnet_np.data.loader import eval_batches
from alexnet_np.nn.backend import move
from alexnet_np.train.evaluation import sample_indices

val, train = demo.split("val"), demo.split("train")
queries = sample_indices(len(val), 4)
result = evaluate_split(model, demo, "val", config, dev, 64, keep=queries)
query_features = move(np.stack([result["features"][i] for i in queries]), dev)   # (4, 256): fc7


def features(views):
    model.infer(views)
    return model.fc7_features                                        # (B, 256)


with dev:
    nearest, distance = figures.nearest_neighbours(
        features, query_features, (views for views, _ in eval_batches(demo, "train", config, dev, 128)),
        k=6, to_host=host)
fig, axes = plt.subplots(len(queries), 7, figsize=(10, 1.6 * len(queries)))
for row, (q, found) in enumerate(zip(queries, nearest)):
    axes[row, 0].imshow(val.images[q])
    axes[row, 0].set_title(f"val: {demo.class_names[val.labels[q]]}", fontsize=8)
    for col, j in enumerate(found, start=1):
        axes[row, col].imshow(train.images[j])
        axes[row, col].set_title(demo.class_names[train.labels[j]], fontsize=8)
for ax in axes.ravel():
    ax.axis("off")
plt.suptitle("validation images (left) and their six nearest training images in fc7 space (Figure 4, right)")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## BVLC's weights, and ILSVRC-2012
#
# Training the paper's net on ImageNet takes a GPU and days (`python train.py --device gpu
# --data /data/imagenet-256`, README "On ImageNet"). The net that Caffe's BVLC trained is the
# same two-tower architecture (with Caffe's conventions: `k = 1`, `alpha / n`, one LRN over both
# towers' maps, dropout scaled at training time) and converts into a checkpoint of this project
# ([bvlc.md](bvlc.md)):
#
# ```
# pip install protobuf
# python -m alexnet_np.interop.convert caffe bvlc_alexnet.caffemodel bvlc_alexnet.npz --mean imagenet_mean.binaryproto
# python evaluate.py --checkpoint bvlc_alexnet.npz --data /data/imagenet-256 --ten-crop
# python classify.py --checkpoint bvlc_alexnet.npz photo.jpg
# ```
#
# What to expect on ILSVRC-2012's 50,000 validation images: BVLC report 42.9% top-1 and 19.8%
# top-5 error for the centre crop alone; the paper reports 40.7% and 18.2% for one net with ten
# crops (§6, Table 2), and 38.1% / 16.4% for five nets averaged. Our preprocessing keeps each
# image's aspect ratio where Caffe's stretched it to 256x256, so the figures will be close to
# BVLC's, not equal. Figure 3 of a converted model then shows the two towers' split between
# colour-blind and colourful kernels, and Figure 4 its neighbours
# (`python figures.py --checkpoint bvlc_alexnet.npz --data /data/imagenet-256`).

# %%
print(f"this notebook ran in {time.perf_counter() - started:.0f} s (device {device}, fast mode {FAST})")
