"""PCA lighting (§4.1), mean subtraction (§2) and the whole training batch, checked by hand.

Dimensions: N batch, M images, R stored side, S crop side, C channels.
"""
import numpy as np
import pytest
from PIL import Image

from alexnet_np.data import augment
from alexnet_np.nn.backend import Device
from alexnet_np.config import Config
from alexnet_np.data.loader import Cache, TrainLoader, batch_rng, epoch_order
from alexnet_np.data.prepare import pca_from_sums, prepare

R, S = 20, 15


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A cache of 24 coloured random images (2 classes), R = 20, with correlated channels."""
    src = tmp_path_factory.mktemp("pca_src")
    rng = np.random.default_rng(0)
    for split, count in [("train", 12), ("val", 5)]:
        for label in ("a", "b"):
            (src / split / label).mkdir(parents=True)
            for i in range(count):
                base = rng.integers(0, 256, (30, 26, 1))                       # (H, W, 1)
                pixels = np.clip(base * rng.uniform(0.3, 1.0, 3) + rng.integers(0, 80, (30, 26, 3)), 0, 255)
                Image.fromarray(pixels.astype(np.uint8)).save(src / split / label / f"{i}.png")
    dst = tmp_path_factory.mktemp("pca_cache") / "cache"
    return Cache(prepare(str(src), str(dst), image_size=R, workers=2, progress=False))


def test_mean_image_and_covariance_match_numpy(cache):
    images = np.asarray(cache.split("train").images, dtype=np.float64)   # (M, R, R, C)
    np.testing.assert_allclose(cache.mean_image, images.mean(axis=0), rtol=1e-6)
    assert cache.mean_image.dtype == np.float32 and cache.mean_image.shape == (R, R, 3)
    pixels = images.reshape(-1, 3)                                         # (M*R*R, C)
    np.testing.assert_allclose(cache.pca_cov, np.cov(pixels.T), rtol=1e-10)
    values, vectors = np.linalg.eigh(np.cov(pixels.T))                     # ascending
    np.testing.assert_allclose(cache.pca_eigvals, values[::-1], rtol=1e-9)
    assert cache.pca_eigvals[0] >= cache.pca_eigvals[1] >= cache.pca_eigvals[2] > 0
    # columns are the eigenvectors: cov p_i = lambda_i p_i, and they are orthonormal
    np.testing.assert_allclose(cache.pca_cov @ cache.pca_eigvecs, cache.pca_eigvecs * cache.pca_eigvals, atol=1e-6)
    np.testing.assert_allclose(cache.pca_eigvecs.T @ cache.pca_eigvecs, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(np.abs(cache.pca_eigvecs), np.abs(vectors[:, ::-1]), atol=1e-9)
    np.testing.assert_allclose(cache.channel_mean, pixels.mean(axis=0), rtol=1e-6)


def test_pca_from_sums_on_a_small_set():
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (7, 4, 4, 3)).astype(np.float64)        # (M, R, R, C)
    images[..., 2] = 0.5 * images[..., 0] + 0.2 * images[..., 2]          # correlated channels
    pixels = images.reshape(-1, 3)
    cov, eigvals, eigvecs = pca_from_sums(images.sum(axis=0), pixels.T @ pixels, len(images))
    np.testing.assert_allclose(cov, np.cov(pixels.T), rtol=1e-12)
    for i in range(3):
        np.testing.assert_allclose(np.cov(pixels.T) @ eigvecs[:, i], eigvals[i] * eigvecs[:, i], atol=1e-8)


def _shift_by_hand(alphas, eigvals, eigvecs):
    """sum_i a_i sqrt(lambda_i) p_i, p_i = column i, one image at a time."""
    out = np.zeros((len(alphas), 3))
    for n in range(len(alphas)):
        for i in range(3):
            out[n] += alphas[n, i] * np.sqrt(eigvals[i]) * eigvecs[:, i]
    return out


def test_lighting_shift_uses_eigenvector_columns():
    """A transposed eigenvector matrix must fail this test."""
    angle = 0.7
    eigvecs = np.array([[np.cos(angle), -np.sin(angle), 0.0],
                        [np.sin(angle), np.cos(angle), 0.0],
                        [0.0, 0.0, 1.0]]) @ np.array([[1, 0, 0], [0, 0.6, -0.8], [0, 0.8, 0.6]])
    eigvals = np.array([900.0, 100.0, 4.0])
    alphas = np.random.default_rng(1).normal(0, 0.1, (6, 3))
    expected = _shift_by_hand(alphas, eigvals, eigvecs)
    np.testing.assert_allclose(augment.lighting_shift(alphas, eigvals, eigvecs), expected, rtol=1e-12)
    assert not np.allclose(augment.lighting_shift(alphas, eigvals, eigvecs.T), expected, rtol=1e-3)


def _batch_by_hand(cache, config, epoch, b, eigvecs):
    """The batch of TrainLoader, one image at a time with slicing, float64."""
    split = cache.split("train")
    n = config.batch_size
    index = epoch_order(config.seed, epoch, len(split))[b * n:(b + 1) * n]
    ys, xs, flips, alphas = augment.draw_augmentation(batch_rng(config.seed, epoch, b), n, R, S,
                                                      config.flip, config.lighting_std)
    shift = _shift_by_hand(alphas, cache.pca_eigvals, eigvecs)
    out = np.zeros((n, 3, S, S))
    for k in range(n):
        image = split.images[index[k]].astype(np.float64)
        if config.mean == "pixel":
            image = image - cache.mean_image
        else:
            image = image - cache.channel_mean
        image = image[ys[k]:ys[k] + S, xs[k]:xs[k] + S]
        if flips[k]:
            image = image[:, ::-1]
        out[k] = (image + shift[k]).transpose(2, 0, 1)
    return out, split.labels[index]


@pytest.mark.parametrize("mean", ["pixel", "channel"])
def test_training_batch_equals_the_computation_by_hand(cache, mean):
    config = Config(input_size=S, batch_size=8, seed=3, dtype="float64", mean=mean, lighting_std=0.5)
    loader = TrainLoader(cache, config, Device(), epoch=2, threads=0)
    images, labels = loader.batch(1)
    expected, expected_labels = _batch_by_hand(cache, config, 2, 1, cache.pca_eigvecs)
    assert images.shape == (8, 3, S, S) and images.dtype == np.float64
    np.testing.assert_allclose(images, expected, atol=1e-4)
    np.testing.assert_array_equal(labels, expected_labels)
    wrong, _ = _batch_by_hand(cache, config, 2, 1, cache.pca_eigvecs.T)
    assert np.abs(images - wrong).max() > 0.1, "a transposed eigenvector matrix went unnoticed"


def test_lighting_moves_each_pixel_along_the_components_by_the_draws(cache):
    """(with lighting) - (without) is, for every pixel, sum_i a_i sqrt(lambda_i) p_i."""
    config = Config(input_size=S, batch_size=6, seed=1, dtype="float64", lighting_std=0.3)
    lit, _ = TrainLoader(cache, config, Device(), threads=0).batch(0)
    plain, _ = TrainLoader(cache, config.replace(lighting_std=0.0), Device(), threads=0).batch(0)
    difference = (lit - plain).transpose(0, 2, 3, 1).reshape(6, -1, 3)      # (N, S*S, C)
    assert np.ptp(difference, axis=1).max() < 1e-9, "the shift must be the same for every pixel"
    _, _, _, alphas = augment.draw_augmentation(batch_rng(1, 0, 0), 6, R, S, True, 0.3)
    coefficients = difference[:, 0] @ cache.pca_eigvecs                        # (N, C) = a_i sqrt(lambda_i)
    np.testing.assert_allclose(coefficients, alphas * np.sqrt(cache.pca_eigvals), rtol=1e-9, atol=1e-9)


def test_float32_batches_hold_mean_subtracted_values(cache):
    config = Config(input_size=S, batch_size=8, seed=0)
    images, labels = TrainLoader(cache, config, Device(), threads=0).batch(0)
    assert images.dtype == np.float32 and labels.dtype == np.int64
    assert -256 < images.min() < 0 < images.max() < 256
    assert abs(float(images.mean())) < 40
