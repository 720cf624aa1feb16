"""Training batches and evaluation views: determinism, resume, shuffling, threads (§4.1).

Dimensions: N batch, M images, R stored side, S crop side, C channels, V views.
"""
import threading

import numpy as np
import pytest
from PIL import Image

from alexnet_np.data import augment
from alexnet_np.nn.backend import Device
from alexnet_np.config import Config
from alexnet_np.data.loader import Cache, DataError, TrainLoader, eval_batches, prefetch
from alexnet_np.data.prepare import prepare

R, S, M = 24, 20, 43


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """43 training images (3 classes) and 11 validation images, R = 24."""
    src = tmp_path_factory.mktemp("loader_src")
    rng = np.random.default_rng(0)
    for split, count in [("train", M), ("val", 11)]:
        for i in range(count):
            label = f"c{i % 3}"
            (src / split / label).mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, (R, R + 4, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(src / split / label / f"{i:03d}.png")
    dst = tmp_path_factory.mktemp("loader_cache") / "cache"
    return Cache(prepare(str(src), str(dst), image_size=R, workers=1, progress=False, print_fn=lambda *a: None))


CONFIG = Config(input_size=S, batch_size=8, seed=7)


def _epoch(cache, config=CONFIG, **kwargs):
    return [(x.copy(), y.copy()) for x, y in TrainLoader(cache, config, Device(), **kwargs)]


def test_an_epoch_drops_the_last_partial_batch_and_sees_each_image_once(cache):
    loader = TrainLoader(cache, CONFIG, Device(), threads=0)
    assert loader.batches_per_epoch == len(loader) == M // 8
    rows = np.concatenate([loader.host_batch(b)[2][0] for b in range(len(loader))])
    assert len(rows) == 40 and len(set(rows.tolist())) == 40
    batches = _epoch(cache)
    assert len(batches) == 5
    for images, labels in batches:
        assert images.shape == (8, 3, S, S) and images.dtype == np.float32
        assert labels.shape == (8,) and labels.dtype == np.int64 and set(labels.tolist()) <= {0, 1, 2}


def test_batches_do_not_depend_on_threads_or_on_the_loader_instance(cache):
    serial = _epoch(cache, threads=0)
    for threads, depth in [(1, 1), (2, 2), (4, 8)]:
        threaded = _epoch(cache, threads=threads, depth=depth)
        for (x0, y0), (x1, y1) in zip(serial, threaded):
            np.testing.assert_array_equal(x0, x1)
            np.testing.assert_array_equal(y0, y1)


def test_resuming_at_a_batch_gives_the_rest_of_the_epoch(cache):
    full = _epoch(cache, epoch=3)
    rest = _epoch(cache, epoch=3, start_batch=2)
    assert len(rest) == 3
    for (x0, y0), (x1, y1) in zip(full[2:], rest):
        np.testing.assert_array_equal(x0, x1)
        np.testing.assert_array_equal(y0, y1)
    assert _epoch(cache, epoch=3, start_batch=5) == []
    with pytest.raises(DataError, match="start_batch 6"):
        TrainLoader(cache, CONFIG, Device(), start_batch=6)


def test_each_epoch_reshuffles_and_the_seed_matters(cache):
    def rows(config, epoch):
        loader = TrainLoader(cache, config, Device(), epoch=epoch, threads=0)
        return np.concatenate([loader.host_batch(b)[2][0] for b in range(len(loader))])
    assert not np.array_equal(rows(CONFIG, 0), rows(CONFIG, 1))
    assert not np.array_equal(rows(CONFIG, 0), rows(CONFIG.replace(seed=8), 0))
    np.testing.assert_array_equal(rows(CONFIG, 1), rows(CONFIG, 1))


def test_labels_follow_their_images(cache):
    loader = TrainLoader(cache, CONFIG, Device(), threads=0)
    crops, labels, (index, ys, xs, flips, _) = loader.host_batch(1)
    split = cache.split("train")
    np.testing.assert_array_equal(labels, split.labels[index])
    np.testing.assert_array_equal(crops, augment.crop_flip(split.images, index, ys, xs, flips, S))


def test_a_split_smaller_than_a_batch_is_an_error(cache):
    with pytest.raises(DataError, match="fewer than one batch"):
        TrainLoader(cache, CONFIG.replace(batch_size=64), Device())


def test_prefetch_keeps_order_propagates_errors_and_shuts_down():
    def make(i):
        if i == 5:
            raise RuntimeError("bad batch 5")
        return i * i
    results = []
    with pytest.raises(RuntimeError, match="bad batch 5"):
        for value in prefetch(make, range(10), threads=3, depth=4):
            results.append(value)
    assert results == [0, 1, 4, 9, 16]
    before = threading.active_count()
    started = []

    def slow(i):
        started.append(i)
        return i
    stream = prefetch(slow, range(1000), threads=2, depth=3)
    assert [next(stream) for _ in range(4)] == [0, 1, 2, 3]
    stream.close()
    assert threading.active_count() == before, "threads left running after close()"
    assert len(started) <= 4 + 3, "more work started than the queue bound allows"
    assert list(prefetch(lambda i: -i, range(4), threads=0, depth=1)) == [0, -1, -2, -3]


def test_eval_batches_centre_crop_cover_the_split_in_order(cache):
    split = cache.split("val")
    config = CONFIG.replace(dtype="float64")
    batches = list(eval_batches(cache, "val", config, Device(), batch_size=4))
    assert [len(y) for _, y in batches] == [4, 4, 3]
    views = np.concatenate([x for x, _ in batches])
    np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), split.labels)
    start = (R - S) // 2
    expected = (split.images.astype(np.float64) - cache.mean_image)[:, start:start + S, start:start + S]
    np.testing.assert_allclose(views, expected.transpose(0, 3, 1, 2), atol=1e-4)


@pytest.mark.parametrize("mean", ["pixel", "channel"])
def test_eval_batches_ten_crop_against_slicing_by_hand(cache, mean):
    split = cache.split("val")
    config = CONFIG.replace(dtype="float64", mean=mean)
    batches = list(eval_batches(cache, "val", config, Device(), batch_size=5, ten_crop=True, threads=1))
    views = np.concatenate([x for x, _ in batches])                          # (M, V, C, S, S)
    assert views.shape == (11, 10, 3, S, S)
    mean_value = cache.mean_image if mean == "pixel" else cache.channel_mean
    centred = split.images.astype(np.float64) - mean_value                   # (M, R, R, C)
    last = R - S
    offsets = [(0, 0), (0, last), (last, 0), (last, last), (last // 2, last // 2)]
    for v, (y, x) in enumerate(offsets):
        crop = centred[:, y:y + S, x:x + S].transpose(0, 3, 1, 2)            # (M, C, S, S)
        np.testing.assert_allclose(views[:, v], crop, atol=1e-4)
        np.testing.assert_allclose(views[:, v + 5], crop[..., ::-1], atol=1e-4)


def test_eval_with_another_mean_image(cache):
    config = CONFIG.replace(dtype="float64")
    zero = np.zeros((R, R, 3), np.float32)
    views, _ = next(iter(eval_batches(cache, "val", config, Device(), batch_size=2, mean_image=zero)))
    start = (R - S) // 2
    expected = cache.split("val").images[:2, start:start + S, start:start + S].transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(views, expected)


def test_the_benchmark_runs_on_a_small_cache(cache, tmp_path):
    from benchmarks.bench_data import bench_batches, tiled_cache
    tiled = Cache(tiled_cache(cache.path, str(tmp_path / "tiled"), 100))
    assert len(tiled.split("train")) == 129 and tiled.splits == ["train"]
    np.testing.assert_array_equal(tiled.split("train").images[M:2 * M], cache.split("train").images)
    rows = bench_batches(tiled.path, 16, S, 0.01, threads=2)
    assert len(rows) == 4 and all(rate > 0 and per_cpu > 0 for _, rate, per_cpu in rows)
