"""Evaluation (§6: top-1 and top-5 error, centre crop or §4.1's ten crops) and Figure 4.

Dimensions:
    N  images in a batch    S  input size    K  classes    V  views (10 for ten-crop)    D  fc7 units

Under R ranks (``distributed``) the evaluation is sharded by batch: rank r runs batches
r, r+R, r+2R, ... of exactly the images one process would put in them, every rank
receives every batch's results, and they are added up in batch order: the counts, the
loss and the predictions equal one process's exactly.
"""
import os

import numpy as np

from . import figures
from ..nn.backend import move
from ..data.loader import eval_batches
from ..parallel.distributed import World
from .metrics import TopKCounter, average_views, label_ranks, softmax, topk_classes


def progress_bar(enabled, total, desc, leave=True, initial=0):
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, desc=desc, unit="img", unit_scale=True, leave=leave,
                dynamic_ncols=True, mininterval=0.5)


def model_probabilities(model, views, host, chunk):
    """Softmax outputs on the host, (N, K) float64; ten-crop views are averaged (§4.1).

    views (N, 3, S, S) or (N, V, 3, S, S) on any device; forward runs in chunks of at most
    ``chunk`` views. Leaves ``model.fc7_features`` of the last chunk.
    """
    if views.ndim == 4:
        return softmax(host(model.infer(views)))                          # (N, K)
    N, V = views.shape[:2]
    flat = views.reshape((N * V,) + tuple(views.shape[2:]))              # (N*V, 3, S, S)
    logits = [host(model.infer(flat[i:i + chunk])) for i in range(0, N * V, chunk)]
    return average_views(np.concatenate(logits), V)                      # (N, K)


def evaluate_split(model, cache, split, config, device, batch_size, ten_crop=False, keep=(),
                   progress=False, threads=2, desc=None, world=None):
    """Top-1 / top-5 error, loss and every image's five most probable classes on ``split``.

    The loss is the mean of -ln p[label] of the prediction (the ten-crop average when
    ``ten_crop``). ``keep``: indices of images whose centre-crop fc7 features (D,) are
    returned too (Figure 4; only without ten-crop). ``world``: the ranks that share the
    work (see the module docstring); every rank gets the whole result. Returns a dict.
    """
    world = world or World()
    host = device.to_host
    images_per_batch = max(1, batch_size // 10) if ten_crop else batch_size
    keep = sorted(set(int(i) for i in keep))
    total = len(cache.split(split))
    mine = []   # this rank's batches: (first image, result of the batch)
    bar = progress_bar(progress and world.is_root, total, desc or f"{split}", leave=False)
    stream = eval_batches(cache, split, config, device, images_per_batch, ten_crop=ten_crop,
                          threads=threads, shard=(world.rank, world.size))
    starts = range(0, total, images_per_batch)[world.rank::world.size]
    try:
        for start, (views, labels) in zip(starts, stream):
            probs = model_probabilities(model, views, host, batch_size)   # (N, K)
            labels = np.asarray(host(labels))                             # (N,)
            p_true = probs[np.arange(len(labels)), labels]
            k = min(5, probs.shape[1])
            cls = topk_classes(probs, k)                                  # (N, 5)
            batch = {"ranks": label_ranks(probs, labels), "labels": labels, "top_classes": cls,
                     "top_probs": np.take_along_axis(probs, cls, axis=1),
                     "loss": float(-np.log(np.maximum(p_true, 1e-300)).mean()), "features": {}}
            wanted = [i for i in keep if start <= i < start + len(labels)]
            if wanted and not ten_crop:
                features = np.asarray(host(model.fc7_features))           # (N, D)
                batch["features"] = {i: features[i - start].copy() for i in wanted}
            mine.append((start, batch))
            if bar is not None:
                bar.update(len(labels) * world.size)
    finally:
        stream.close()
        if bar is not None:
            bar.close()
    return merge_batches(world, mine)


def merge_batches(world, mine):
    """Every rank's batch results, added up in the order of the images (as one process)."""
    if world.size > 1:
        mine = [item for part in world.allgather(mine) for item in part]
    counter = TopKCounter()
    kept = {}
    batches = [batch for _, batch in sorted(mine, key=lambda item: item[0])]
    for batch in batches:
        counter.add_ranks(batch["ranks"], batch["loss"])
        kept.update(batch["features"])

    def joined(key):
        return np.concatenate([batch[key] for batch in batches])

    return {"count": counter.count, "loss": counter.loss,
            "top1": counter.error(1), "top5": counter.error(5),
            "wrong1": counter.wrong[1], "wrong5": counter.wrong[5],
            "top_classes": joined("top_classes"), "top_probs": joined("top_probs"),
            "labels": joined("labels"), "features": kept}


# --------------------------------------------------------------------------- figures

def sample_indices(count, n):
    """``n`` indices spread evenly over ``range(count)`` (deterministic)."""
    n = min(n, count)
    return sorted(set(np.linspace(0, count - 1, n).round().astype(int).tolist()))


def draw_figure4(model, cache, config, device, folder, batch_size, pool=0, split="val",
                 show=8, queries=5, neighbours=6, progress=False, threads=2, result=None):
    """Figure 4, left and right, for the images of ``split``; returns the two paths.

    ``result``: an ``evaluate_split`` result of the same split and model (centre crop) with
    the features of ``sample_indices`` kept; computed here when not given.
    ``pool``: how many training images (the first ones) to search (0: all of them).
    """
    data = cache.split(split)
    shown = sample_indices(len(data), show)
    asked = sample_indices(len(data), queries)
    if result is None or any(i not in result["features"] for i in asked):
        result = evaluate_split(model, cache, split, config, device, batch_size, keep=asked,
                                progress=progress, threads=threads, desc=f"{split} (figures)")
    left = figures.prediction_sheet(
        np.stack([data.images[i] for i in shown]), result["top_classes"][shown],
        result["top_probs"][shown], data.labels[shown], cache.class_names,
        os.path.join(folder, "figure4_predictions.png"),
        title=f"five most probable labels, {split} images (Figure 4, left)")

    searched = "train" if "train" in cache.splits else split  # a folder of photos may have no train split
    train = cache.split(searched)
    limit = len(train) if pool <= 0 else min(pool, len(train))
    q = move(np.stack([result["features"][i] for i in asked]), device)      # (Q, D)

    def features(views):
        model.infer(views)
        return model.fc7_features                                           # (B, D) on the head device

    def batches():
        seen = 0
        bar = progress_bar(progress, limit, "fc7 neighbours", leave=False)
        stream = eval_batches(cache, searched, config, device, batch_size, threads=threads)
        try:
            for views, _ in stream:
                take = min(len(views), limit - seen)
                yield views[:take]
                seen += take
                if bar is not None:
                    bar.update(take)
                if seen >= limit:
                    break
        finally:
            stream.close()
            if bar is not None:
                bar.close()

    with device:
        index, distance = figures.nearest_neighbours(features, q, batches(), k=neighbours,
                                                     to_host=device.to_host)
    right = figures.neighbour_sheet(
        np.stack([data.images[i] for i in asked]),
        [[train.images[j] for j in row] for row in index], os.path.join(folder, "figure4_neighbours.png"),
        distances=distance,
        title=f"{split} images and their {neighbours} nearest {searched} images in fc7 space "
              f"(Figure 4, right; {limit} {searched} images searched)")
    return left, right


def kernel_weights(model):
    """[tower g's conv1 W (F/G, 3, 11, 11) on the host] (Figure 3)."""
    return [np.asarray(t.device.to_host(t.conv1.params["W"])) for t in model.towers]
