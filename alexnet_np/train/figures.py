"""The paper's figures as PNG files, drawn with Pillow alone (no plotting library).

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

Drawing functions take NumPy arrays and lists; nothing here runs the model itself
(``nearest_neighbours`` is handed a ``features(views)`` function).
"""
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

BLUE, ORANGE, GREEN, RED, GREY = (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (150, 150, 150)
LIGHT = (225, 225, 225)
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


def nice_ticks(lo, hi, count=5, integer=False):
    """About ``count`` round tick values covering [lo, hi] (1, 2 or 5 times a power of ten)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = min((m * power for m in (1, 2, 5, 10) if m * power >= raw), default=10 * power)
    if integer:
        step = max(step, 1)
    first = math.floor(lo / step + 1e-9) * step
    ticks = [round(first, 10)]
    while ticks[-1] < hi - step * 1e-9:   # the last tick is at or above hi
        ticks.append(round(first + len(ticks) * step, 10))
    return ticks


class Panel:
    """A rectangle of an image with data coordinates: axes, ticks, lines, a legend."""

    def __init__(self, draw, box, xlim, ylim, title, xlabel, ylabel):
        self.draw, self.box = draw, box
        self.xticks = nice_ticks(*xlim, count=6, integer=True)
        self.yticks = nice_ticks(*ylim, count=5)
        self.xlim = (min(xlim[0], self.xticks[0]), max(xlim[1], self.xticks[-1]))
        self.ylim = (min(ylim[0], self.yticks[0]), max(ylim[1], self.yticks[-1]))
        self.small, self.big = font(12), font(15)
        left, top, right, bottom = box
        self.plot = (left + 58, top + 30, right - 12, bottom - 42)   # the area inside the axes
        draw.text((left + 58, top + 4), title, fill="black", font=self.big)
        self._axes(xlabel, ylabel)

    def xy(self, x, y):
        """Data (x, y) -> pixel (u, v)."""
        l, t, r, b = self.plot
        (x0, x1), (y0, y1) = self.xlim, self.ylim
        return (l + (x - x0) / (x1 - x0) * (r - l), b - (y - y0) / (y1 - y0) * (b - t))

    def _axes(self, xlabel, ylabel):
        d, (l, t, r, b) = self.draw, self.plot
        for y in self.yticks:
            _, v = self.xy(self.xlim[0], y)
            d.line([(l, v), (r, v)], fill=LIGHT)
            label = f"{y:g}"
            d.text((l - 6 - text_width(d, label, self.small), v - 7), label, fill="black", font=self.small)
        for x in self.xticks:
            u, _ = self.xy(x, self.ylim[0])
            d.line([(u, b), (u, b + 4)], fill="black")
            label = f"{x:g}"
            d.text((u - text_width(d, label, self.small) / 2, b + 6), label, fill="black", font=self.small)
        d.rectangle([l, t, r, b], outline="black")
        d.text(((l + r - text_width(d, xlabel, self.small)) / 2, b + 22), xlabel, fill="black", font=self.small)
        d.text((self.box[0] + 2, t - 16), ylabel, fill="black", font=self.small)

    def line(self, xs, ys, colour, width=2, dashed=False):
        points = [self.xy(x, y) for x, y in zip(xs, ys) if y is not None and math.isfinite(y)]
        if len(points) == 1:
            u, v = points[0]
            self.draw.ellipse([u - 2, v - 2, u + 2, v + 2], fill=colour)
        for (u0, v0), (u1, v1) in zip(points, points[1:]):
            if not dashed:
                self.draw.line([(u0, v0), (u1, v1)], fill=colour, width=width)
                continue
            length = math.hypot(u1 - u0, v1 - v0)
            pieces = max(1, int(length // 6))
            for i in range(0, pieces, 2):
                a, c = i / pieces, min(1.0, (i + 1) / pieces)
                self.draw.line([(u0 + a * (u1 - u0), v0 + a * (v1 - v0)),
                                (u0 + c * (u1 - u0), v0 + c * (v1 - v0))], fill=colour, width=width)

    def hline(self, y, colour, label):
        if not self.ylim[0] <= y <= self.ylim[1]:
            return
        l, _, r, _ = self.plot
        _, v = self.xy(self.xlim[0], y)
        for u in range(int(l), int(r), 8):
            self.draw.line([(u, v), (min(u + 3, r), v)], fill=colour)
        self.draw.text((l + 4, v - 15), label, fill=colour, font=self.small)

    def vline(self, x, colour, label):
        _, t, r, b = self.plot
        u, _ = self.xy(x, self.ylim[0])
        self.draw.line([(u, t), (u, b)], fill=colour, width=1)
        width = text_width(self.draw, label, self.small)
        left = u + 3 if u + 3 + width <= r else u - 3 - width   # keep the label inside the plot
        self.draw.text((left, t + 2), label, fill=colour, font=self.small)

    def legend(self, entries):
        """entries [(label, colour, dashed)], drawn in the upper right corner."""
        d = self.draw
        width = max(text_width(d, label, self.small) for label, _, _ in entries) + 34
        _, t, r, _ = self.plot
        x, y = r - width - 6, t + 20
        d.rectangle([x - 4, y - 4, x + width, y + 16 * len(entries)], fill="white", outline=GREY)
        for i, (label, colour, dashed) in enumerate(entries):
            v = y + 16 * i + 7
            if dashed:
                for u in (x, x + 10, x + 20):
                    d.line([(u, v), (u + 5, v)], fill=colour, width=2)
            else:
                d.line([(x, v), (x + 25, v)], fill=colour, width=2)
            d.text((x + 30, v - 7), label, fill="black", font=self.small)


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
    image = Image.new("RGB", (1100, 440), "white")
    draw = ImageDraw.Draw(image)
    draw.text((12, 6), title, fill="black", font=font(16))
    epochs = [h["epoch"] for h in history] or [0]
    xlim = (0, max(max(epochs), 1))

    def values(key, scale=1.0):
        return [None if h.get(key) is None else h[key] * scale for h in history]

    losses = [v for key in ("train_loss", "val_loss") for v in values(key) if v is not None and math.isfinite(v)]
    chance_loss = math.log(num_classes) if num_classes else None
    top = max(losses + ([chance_loss * 1.05] if chance_loss else []) + [1e-3])
    loss_panel = Panel(draw, (0, 30, 550, 440), xlim, (0, top), "loss (cross-entropy)", "epoch", "loss")
    loss_panel.line(epochs, values("train_loss"), BLUE)
    loss_panel.line(epochs, values("val_loss"), ORANGE)
    if chance_loss:
        loss_panel.hline(chance_loss, GREY, f"chance: ln {num_classes} = {chance_loss:.2f}")

    err_panel = Panel(draw, (550, 30, 1100, 440), xlim, (0, 100), "error (%)", "epoch", "error %")
    err_panel.line(epochs, values("train_top1", 100), BLUE)
    err_panel.line(epochs, values("val_top1", 100), ORANGE)
    err_panel.line(epochs, values("train_top5", 100), BLUE, dashed=True)
    err_panel.line(epochs, values("val_top5", 100), ORANGE, dashed=True)
    if num_classes:
        err_panel.hline(100 * (1 - 1 / num_classes), GREY, "chance top-1")

    for change in changes:
        label = f"lr {change['new']:g}"
        loss_panel.vline(change["epoch"] + 0.5, RED, label)
        err_panel.vline(change["epoch"] + 0.5, RED, label)
    loss_panel.legend([("train", BLUE, False), ("validation", ORANGE, False)])
    err_panel.legend([("train top-1", BLUE, False), ("val top-1", ORANGE, False),
                      ("train top-5", BLUE, True), ("val top-5", ORANGE, True)])
    image.save(path)
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
        for cls, p in zip(top_classes[n], top_probs[n]):
            colour = BAR_TRUE if labels is not None and int(cls) == int(labels[n]) else BAR_OTHER
            draw.rectangle([x, y + 1, x + int(round(size * float(p))), y + 13], fill=colour)
            probability = f" {float(p):.2f}"
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
    image = Image.new("RGB", (760, 480), "white")
    draw = ImageDraw.Draw(image, "RGBA")
    draw.text((12, 6), title, fill="black", font=font(15))
    every = [v for _, _, _, values in arms for v in np.asarray(values, dtype=float).ravel() if math.isfinite(v)]
    top = ymax if ymax is not None else max(every + [1.0]) * 1.05
    last = max([max(epochs) for _, _, epochs, _ in arms if len(epochs)] + [1])
    panel = Panel(draw, (0, 30, 760, 480), (0, last), (0, top), title="", xlabel="epoch", ylabel=ylabel)
    legend = []
    for i, (label, dashed, epochs, values) in enumerate(arms):
        colour = ARM_COLOURS[i % len(ARM_COLOURS)]
        values = np.asarray(values, dtype=float)                               # (K, E)
        with np.errstate(all="ignore"):
            low, high, mean = np.nanmin(values, 0), np.nanmax(values, 0), np.nanmean(values, 0)
        band = [panel.xy(e, h) for e, h in zip(epochs, high) if math.isfinite(h)]
        band += [panel.xy(e, lo) for e, lo in reversed(list(zip(epochs, low))) if math.isfinite(lo)]
        if len(band) > 2:
            draw.polygon(band, fill=colour + (50,))
        panel.line(list(epochs), [float(m) for m in mean], colour, dashed=dashed)
        legend.append((f"{label} (mean of {values.shape[0]}, band: min-max)", colour, dashed))
    if target is not None:
        panel.hline(target, GREY, f"{target:g}%")
    panel.legend(legend)
    image.save(path)
    return path
