"""The paper's figures as PNG files: line charts by matplotlib, image sheets by Pillow.

Dimensions:
    E  epochs    F  conv1 kernels of one tower (48)    G  towers    Q  query images
    B  batch     D  feature size (fc7: 4096)           k  neighbours (6)

- ``training_curves``: loss, and top-1 / top-5 error of training and validation, by epoch,
  with every learning-rate change marked (§5).
- ``conv1_kernels``: Figure 3, the 11x11x3 kernels of conv1, each tower's block apart
  (the paper: "the top 48 kernels were learned on GPU 1 while the bottom 48 kernels were
  learned on GPU 2"). Each kernel is shown with its own contrast stretch: (w - min) /
  (max - min) over its 363 values, as cuda-convnet's viewer does.
- ``prediction_sheet``: Figure 4, left: images with their five most probable labels as
  bars, the true label written beneath; the true label's bar is red when it is in the
  top five (as in the paper), the others blue (light shades, so the text stays legible).
- ``neighbour_sheet``: Figure 4, right: each query image, then the training images whose
  fc7 features are nearest in Euclidean distance. ``nearest_neighbours`` computes them
  by streaming the training set in batches and keeping only the k best per query, so
  no feature matrix of the whole set is ever held.

- ``arm_curves``: an experiment's arms (``experiments.py``), each a mean over seeds with
  its spread as a band.

Drawing functions take NumPy arrays and lists; nothing here runs the model itself
(``nearest_neighbours`` is handed a ``features(views)`` function).

The line charts (``training_curves``, ``arm_curves``) are matplotlib figures, built on a
``Figure`` object and saved by the Agg renderer (no display, no pyplot state): matplotlib
places each legend where it covers the fewest points (``loc="best"``) and takes the user's
style (a ``matplotlibrc`` file, or ``matplotlib.style.use`` before calling from Python);
``curves_figure`` and ``arms_figure`` return the figure itself, to restyle or extend. The
image sheets (kernels, photos with their labels) are pixels placed by Pillow.
"""
import math
import warnings

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image, ImageDraw, ImageFont

from ..files import write_then_rename

BLUE, ORANGE, GREEN, RED, GREY = "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#969696"   # tab10, and a grey
LIGHT = "#e1e1e1"
BAR_TRUE, BAR_OTHER = (240, 120, 120), (150, 190, 235)   # light enough for black text on top


def font(size=13):
    """Pillow's built-in font at ``size`` (a bitmap font on Pillow < 10.1)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def text_width(draw, text, fnt):
    left, _, right, _ = draw.textbbox((0, 0), text, font=fnt)
    return right - left


# --------------------------------------------------------------------------- training curves

CURVE_KEYS = ("train_loss", "val_loss", "train_top1", "train_top5", "val_top1", "val_top5")


def has_curves(history):
    """True when ``history`` holds at least one finite loss or error to draw (a converted
    checkpoint, or a run stopped before its first epoch ended, has none)."""
    return any(isinstance(h.get(key), (int, float)) and math.isfinite(h[key]) for h in history for key in CURVE_KEYS)


def training_curves(history, changes, path, num_classes=None, title="training"):
    """Loss and error by epoch, learning-rate changes marked; writes ``path`` (PNG).

    history: [{"epoch", "train_loss", "val_loss", "train_top1", "train_top5", "val_top1",
    "val_top5", "lr"}, ...] (errors as fractions); changes: [{"epoch", "old", "new"}, ...]:
    the rate was divided after ``epoch``, so the line is drawn at epoch + 0.5.
    """
    return save(curves_figure(history, changes, num_classes, title), path)


def curves_figure(history, changes, num_classes=None, title="training"):
    """The matplotlib ``Figure`` that ``training_curves`` saves (to restyle or add to)."""
    fig = Figure(figsize=(11, 4.4), dpi=100, layout="constrained")
    loss_ax, err_ax = fig.subplots(1, 2)
    fig.suptitle(title)
    epochs = [h["epoch"] for h in history]

    def values(key, scale=1.0):
        return [math.nan if h.get(key) is None else h[key] * scale for h in history]

    line(loss_ax, epochs, values("train_loss"), BLUE, "train")
    line(loss_ax, epochs, values("val_loss"), ORANGE, "validation")
    if num_classes:
        chance = math.log(num_classes)
        loss_ax.axhline(chance, color=GREY, linestyle=":", label=f"chance: ln {num_classes} = {chance:.2f}")
    loss_ax.set(title="loss (cross-entropy)", xlabel="epoch", ylabel="loss")
    loss_ax.set_ylim(bottom=0)

    line(err_ax, epochs, values("train_top1", 100), BLUE, "train top-1")
    line(err_ax, epochs, values("val_top1", 100), ORANGE, "validation top-1")
    line(err_ax, epochs, values("train_top5", 100), BLUE, "train top-5", dashed=True)
    line(err_ax, epochs, values("val_top5", 100), ORANGE, "validation top-5", dashed=True)
    if num_classes:
        err_ax.axhline(100 * (1 - 1 / num_classes), color=GREY, linestyle=":", label="chance top-1")
    err_ax.set(title="error (%)", xlabel="epoch", ylabel="error %", ylim=(0, 100))

    for ax in (loss_ax, err_ax):
        for change in changes:
            lr_change(ax, change["epoch"] + 0.5, f"lr {change['new']:g}")
        ax.set_xlim(0, max(epochs + [1]))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(axis="y", color=LIGHT)
        ax.legend(loc="best")
    return fig


def line(ax, xs, ys, colour, label, dashed=False):
    """One curve; a lone finite point gets a marker (a line of one point draws nothing)."""
    finite = sum(1 for y in ys if math.isfinite(y))
    ax.plot(xs, ys, color=colour, label=label, linestyle="--" if dashed else "-",
            marker="o" if finite == 1 else None, markersize=4)


def lr_change(ax, x, label):
    """A vertical line at ``x`` with ``label`` at its top, inside the axes."""
    ax.axvline(x, color=RED, linewidth=1)
    ax.annotate(label, (x, 1), xycoords=ax.get_xaxis_transform(), xytext=(3, -3),
                textcoords="offset points", ha="left", va="top", color=RED, fontsize="small")


def save(fig, path):
    """``fig`` as a PNG at ``path``, written whole or not at all; returns ``path``."""
    write_then_rename(path, lambda tmp: fig.savefig(tmp, format="png"))
    return path


# --------------------------------------------------------------------------- Figure 3

def kernel_tiles(W, scale):
    """W (F, 3, KH, KW) -> list of F RGB uint8 tiles (KH*scale, KW*scale, 3), each stretched."""
    W = np.asarray(W, dtype=np.float64)
    lo = W.min(axis=(1, 2, 3), keepdims=True)                     # (F, 1, 1, 1)
    hi = W.max(axis=(1, 2, 3), keepdims=True)
    unit = (W - lo) / np.maximum(hi - lo, 1e-12)                   # (F, 3, KH, KW) in [0, 1]
    rgb = np.round(255 * unit.transpose(0, 2, 3, 1)).astype(np.uint8)   # (F, KH, KW, 3)
    return [np.kron(tile, np.ones((scale, scale, 1), dtype=np.uint8)) for tile in rgb]


def conv1_kernels(tower_weights, path, scale=5, columns=16, title="conv1 kernels (Figure 3)"):
    """Figure 3: every tower's conv1 kernels as a block of RGB tiles; writes ``path``.

    tower_weights: [W_g (F, 3, KH, KW) for each tower g], e.g. two arrays (48, 3, 11, 11).
    """
    blocks = [kernel_tiles(W, scale) for W in tower_weights]
    F = max(len(b) for b in blocks)
    columns = min(columns, F)
    rows = -(-F // columns)
    th, tw = blocks[0][0].shape[:2]
    gap, label_h, margin = 2, 22, 10
    block_h = rows * (th + gap)
    width = 2 * margin + columns * (tw + gap)
    height = 30 + len(blocks) * (label_h + block_h + margin)
    image = Image.new("RGB", (max(width, 360), height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((margin, 6), title, fill="black", font=font(15))
    y = 30
    for g, tiles in enumerate(blocks):
        draw.text((margin, y + 3), f"tower {g} (GPU {g + 1} in the paper): {len(tiles)} kernels",
                  fill="black", font=font(13))
        y += label_h
        for i, tile in enumerate(tiles):
            r, c = divmod(i, columns)
            image.paste(Image.fromarray(tile), (margin + c * (tw + gap), y + r * (th + gap)))
        y += block_h + margin
    image.save(path)
    return path


# --------------------------------------------------------------------------- Figure 4

def fit(image, size):
    """uint8 (H, W, 3) -> a PIL image size x size (bilinear)."""
    return Image.fromarray(np.asarray(image, dtype=np.uint8)).resize((size, size), Image.BILINEAR)


def shorten(draw, text, fnt, width):
    if text_width(draw, text, fnt) <= width:
        return text
    while text and text_width(draw, text + "...", fnt) > width:
        text = text[:-1]
    return text + "..."


def probability_labels(probs, most=6):
    """Probabilities as text, all with the same decimals: two (``0.56``), or as many as give
    the most probable two significant digits (an uncertain 1000-class net: ``0.0031``,
    ``0.0029``, not ``0.00`` each), and more while two that matter (at least 1/100 of the
    most probable) would read the same; at most ``most``."""
    probs = [float(p) for p in probs]
    top = max(probs, default=0.0)
    decimals = 2 if top <= 0 else min(most, max(2, 1 - math.floor(math.log10(top))))
    relevant = [p for p in probs if p >= top / 100]
    while decimals < most and \
            len({f"{p:.{decimals}f}" for p in relevant}) < len({round(p, most) for p in relevant}):
        decimals += 1
    return [f"{p:.{decimals}f}" for p in probs]


def prediction_sheet(images, top_classes, top_probs, labels, class_names, path, columns=4, size=150,
                     title="five most probable labels (Figure 4, left)", captions=None):
    """Figure 4 left. images (N, H, W, 3) uint8; top_classes, top_probs (N, 5); labels (N,),
    or None where the true classes are unknown (every bar blue); ``captions``: the text
    beneath each image (default: the true class's name)."""
    N = len(images)
    columns = min(columns, N)
    rows = -(-N // columns)
    cell_w, cell_h = size + 30, size + 26 + 16 * top_classes.shape[1] + 12
    image = Image.new("RGB", (columns * cell_w + 20, rows * cell_h + 36), "white")
    draw = ImageDraw.Draw(image)
    small, bold = font(12), font(13)
    draw.text((10, 8), title, fill="black", font=font(15))
    for n in range(N):
        r, c = divmod(n, columns)
        x, y = 10 + c * cell_w, 34 + r * cell_h
        image.paste(fit(images[n], size), (x, y))
        y += size + 3
        caption = captions[n] if captions is not None else class_names[int(labels[n])]
        draw.text((x, y), shorten(draw, caption, bold, size), fill="black", font=bold)
        y += 20
        for cls, p, probability in zip(top_classes[n], top_probs[n], probability_labels(top_probs[n])):
            colour = BAR_TRUE if labels is not None and int(cls) == int(labels[n]) else BAR_OTHER
            draw.rectangle([x, y + 1, x + int(round(size * float(p))), y + 13], fill=colour)
            probability = " " + probability
            name = shorten(draw, class_names[int(cls)], small, size - 6 - text_width(draw, probability, small))
            draw.text((x + 3, y), name + probability, fill="black", font=small)
            y += 16
    image.save(path)
    return path


def neighbour_sheet(queries, neighbours, path, distances=None, size=96,
                    title="nearest training images in fc7 space (Figure 4, right)"):
    """Figure 4 right. queries (Q, H, W, 3) uint8; neighbours (Q, k, H, W, 3); distances (Q, k)."""
    Q, k = len(queries), len(neighbours[0])
    gap, sep = 4, 16
    width = 20 + (k + 1) * (size + gap) + sep
    image = Image.new("RGB", (width, 54 + Q * (size + 18)), "white")
    draw = ImageDraw.Draw(image)
    small = font(11)
    draw.text((10, 8), title, fill="black", font=font(15))
    draw.text((10, 30), "validation image", fill="black", font=small)
    draw.text((10 + size + gap + sep, 30), f"its {k} nearest training images (Euclidean distance of fc7 features)",
              fill="black", font=small)
    for q in range(Q):
        y = 48 + q * (size + 18)
        image.paste(fit(queries[q], size), (10, y))
        for j in range(k):
            x = 10 + (j + 1) * (size + gap) + sep
            image.paste(fit(neighbours[q][j], size), (x, y))
            if distances is not None:
                draw.text((x, y + size + 1), f"{float(distances[q][j]):.3g}", fill=GREY, font=small)
    image.save(path)
    return path


def nearest_neighbours(features, queries, batches, k=6, to_host=np.asarray):
    """The k training images nearest each query in feature space (Euclidean), streamed.

    features(views) -> (B, D) array on some device; queries (Q, D): the queries' features,
    on the same device; ``to_host`` brings a (Q, B) block of distances to the host
    (``device.to_host``); batches: an iterable of views (B, ...) of the training images, in
    index order. Only the k best per query are kept between batches (Q x k), so memory is
    one batch of features and one (Q, B) block of distances. Returns (indices (Q, k),
    distances (Q, k)) on the host, nearest first (ties by lower index).
    """
    q = queries.astype(np.float64)                              # (Q, D)
    q_sq = (q * q).sum(axis=1)[:, None]                         # (Q, 1)
    Q = q.shape[0]
    best_d = np.full((Q, 0), np.inf)                            # (Q, <=k)
    best_i = np.zeros((Q, 0), dtype=np.int64)
    offset = 0
    for views in batches:
        f = features(views).astype(np.float64)                  # (B, D)
        B = f.shape[0]
        d2 = np.asarray(to_host(q_sq - 2.0 * (q @ f.T) + (f * f).sum(axis=1)[None, :]))  # (Q, B)
        d = np.sqrt(np.maximum(d2, 0.0))
        idx = np.broadcast_to(np.arange(offset, offset + B), (Q, B))
        all_d = np.concatenate([best_d, d], axis=1)                  # (Q, k + B)
        all_i = np.concatenate([best_i, idx], axis=1)
        order = np.lexsort((all_i, all_d), axis=1)[:, :k]            # by distance, then index
        best_d = np.take_along_axis(all_d, order, axis=1)
        best_i = np.take_along_axis(all_i, order, axis=1)
        offset += B
    return best_i, best_d


# --------------------------------------------------------------------------- experiments

ARM_COLOURS = (BLUE, ORANGE, GREEN, RED)


def arm_curves(arms, path, title, ylabel="validation top-1 error (%)", target=None, ymax=None):
    """Each arm of an experiment: its mean over seeds as a line, its spread (min to max) as a band.

    arms: [(label, dashed, epochs (E,), values (K, E))] with K seeds (values in %, NaN where
    a run has no value). ``target``: a level drawn across (Figure 1's 25%). Writes ``path``.
    """
    return save(arms_figure(arms, title, ylabel, target, ymax), path)


def arms_figure(arms, title, ylabel="validation top-1 error (%)", target=None, ymax=None):
    """The matplotlib ``Figure`` that ``arm_curves`` saves."""
    fig = Figure(figsize=(7.6, 4.8), dpi=100, layout="constrained")
    ax = fig.subplots()
    ax.set_title(title)
    last = 1
    for i, (label, dashed, epochs, values) in enumerate(arms):
        colour = ARM_COLOURS[i % len(ARM_COLOURS)]
        values = np.asarray(values, dtype=float)                               # (K, E)
        with warnings.catch_warnings():   # an epoch no seed reached: NaN, and a warning
            warnings.simplefilter("ignore", RuntimeWarning)
            low, high, mean = np.nanmin(values, 0), np.nanmax(values, 0), np.nanmean(values, 0)   # (E,)
        ax.fill_between(epochs, low, high, color=colour, alpha=0.2, linewidth=0)
        line(ax, list(epochs), [float(m) for m in mean], colour,
             f"{label} (mean of {values.shape[0]}, band: min-max)", dashed=dashed)
        last = max([last] + list(epochs))
    if target is not None:
        ax.axhline(target, color=GREY, linestyle=":", label=f"{target:g}%")
    ax.set(xlabel="epoch", ylabel=ylabel, xlim=(0, last))
    ax.set_ylim(0, ymax)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(axis="y", color=LIGHT)
    ax.legend(loc="best")
    return fig
