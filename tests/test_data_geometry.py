"""Geometry of the data pipeline (§2, §4.1): resize and centre crop, crops, flips, ten-crop.

Dimensions: N batch, M images, R stored side, S crop side, C channels, V views.
"""
import numpy as np
import pytest
from PIL import Image

from alexnet_np.data import augment
from alexnet_np.data.prepare import load_image, resize_box


def _marked_image(width, height):
    """A smooth RGB image with a red mark at its very centre: (H, W, C) uint8."""
    yy, xx = np.mgrid[0:height, 0:width]
    pixels = np.stack([xx * 200 // width, yy * 200 // height, np.full_like(xx, 60)], axis=-1)  # (H, W, C)
    cy, cx = height // 2, width // 2
    r = max(2, min(width, height) // 20)
    pixels[cy - r:cy + r, cx - r:cx + r] = (255, 0, 0)
    return pixels.astype(np.uint8)


@pytest.mark.parametrize("width, height", [(400, 300), (300, 400), (517, 263), (263, 517), (256, 256), (100, 70)])
def test_shorter_side_resize_then_centre_crop(tmp_path, width, height):
    """load_image = resize the shorter side to R, longer rounded, then cut the central R x R."""
    size = 64
    path = str(tmp_path / "img.png")
    Image.fromarray(_marked_image(width, height)).save(path)
    new_w, new_h, left, top, _ = resize_box(width, height, size)
    assert min(new_w, new_h) == size
    assert max(new_w, new_h) == round(max(width, height) * size / min(width, height))
    assert (left, top) == ((new_w - size) // 2, (new_h - size) // 2)
    by_hand = Image.open(path).resize((new_w, new_h), Image.LANCZOS)
    by_hand = np.asarray(by_hand)[top:top + size, left:left + size]                 # (R, R, C)
    stored = load_image(path, size)                                                   # (R, R, C)
    assert stored.shape == (size, size, 3) and stored.dtype == np.uint8
    # Pillow may run its two 8-bit passes in the other order for a box: rounding differs a little
    difference = np.abs(stored.astype(int) - by_hand)
    assert difference.mean() < 0.5 and difference.max() <= 16
    # the centre of the source lands at the centre of the stored image, whatever the orientation
    red = (stored[..., 0] > 200) & (stored[..., 1] < 60)
    ys, xs = np.nonzero(red)
    assert abs(ys.mean() - (size - 1) / 2) < 1.5 and abs(xs.mean() - (size - 1) / 2) < 1.5


def test_the_crop_keeps_the_middle_of_the_longer_side(tmp_path):
    """A wide image loses equal parts left and right: its left and right thirds differ in colour."""
    pixels = np.zeros((100, 300, 3), np.uint8)   # (H, W, C): blue | green | blue, thirds
    pixels[:, :100] = (0, 0, 255)
    pixels[:, 100:200] = (0, 255, 0)
    pixels[:, 200:] = (0, 0, 255)
    path = str(tmp_path / "wide.png")
    Image.fromarray(pixels).save(path)
    stored = load_image(path, 60)                # resized to 180 x 60, columns 60..119 kept
    assert (stored[:, 2:-2, 1] > 250).all() and (stored[:, 2:-2, 2] < 5).all()


def test_draft_decoding_matches_a_full_decode(tmp_path):
    """A JPEG much larger than 2R goes through Pillow's draft mode: within a level or two."""
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    big = Image.fromarray(small).resize((1600, 1200), Image.BICUBIC)
    path = str(tmp_path / "big.jpg")
    big.save(path, quality=95)
    stored = load_image(path, 128).astype(float)                         # (R, R, C)
    full = load_image(path, 128, draft_factor=0).astype(float)           # (R, R, C) no draft
    assert np.abs(stored - full).mean() < 1.0 and np.abs(stored - full).max() < 16


def _images(m=5, size=12, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (m, size, size, 3), dtype=np.uint8)  # (M, R, R, C)


def test_crop_flip_equals_slicing_by_hand():
    images = _images()
    size = 7
    index = np.array([0, 4, 2, 2, 1, 3])
    ys = np.array([0, 5, 3, 0, 5, 1])
    xs = np.array([5, 0, 2, 5, 5, 0])
    flips = np.array([False, True, False, True, True, False])
    crops = augment.crop_flip(images, index, ys, xs, flips, size)      # (N, S, S, C)
    for n in range(len(index)):
        expected = images[index[n], ys[n]:ys[n] + size, xs[n]:xs[n] + size]
        if flips[n]:
            expected = expected[:, ::-1]
        np.testing.assert_array_equal(crops[n], expected)


def test_crop_flip_reads_a_memmap(tmp_path):
    images = _images(m=4)
    path = str(tmp_path / "x.npy")
    np.save(path, images)
    mapped = np.load(path, mmap_mode="r")
    one = np.array([3])
    crops = augment.crop_flip(mapped, one, one * 0 + 2, one * 0 + 1, np.array([True]), 9)
    np.testing.assert_array_equal(crops[0], images[3, 2:11, 1:10][:, ::-1])


def test_crop_offsets_cover_every_legal_position_and_stay_inside():
    """Offsets 0..R-S inclusive, each about equally often; flips about half the time."""
    image_size, size, n = 20, 15, 60000
    rng = np.random.default_rng(1)
    ys, xs, flips, alphas = augment.draw_augmentation(rng, n, image_size, size, True, 0.1)
    for offsets in (ys, xs):
        counts = np.bincount(offsets, minlength=image_size - size + 2)
        assert counts[-1] == 0, "an offset past R - S would read outside the image"
        counts = counts[:-1]
        assert (counts > 0).all(), "every offset, the last (R - S) included, must occur"
        assert np.abs(counts / n - 1 / 6).max() < 0.01
    assert abs(flips.mean() - 0.5) < 0.01
    assert abs(alphas.std() - 0.1) < 0.002 and alphas.shape == (n, 3)
    crops = augment.crop_flip(_images(m=1, size=image_size), np.zeros(8, int), ys[:8], xs[:8], flips[:8], size)
    assert crops.shape == (8, size, size, 3)


def test_switching_flips_or_lighting_off_keeps_the_crops():
    draws = [augment.draw_augmentation(np.random.default_rng(3), 50, 256, 227, flip, std)
             for flip, std in [(True, 0.1), (False, 0.1), (True, 0.0)]]
    for ys, xs, flips, alphas in draws[1:]:
        np.testing.assert_array_equal(ys, draws[0][0])
        np.testing.assert_array_equal(xs, draws[0][1])
    assert not draws[1][2].any() and not draws[2][3].any()


def test_center_crop_and_ten_crop_views_against_slicing_by_hand():
    images = _images(m=3, size=11)
    size = 6
    centre = augment.center_crop(images, size)
    np.testing.assert_array_equal(centre, images[:, 2:8, 2:8])     # (11 - 6) // 2 = 2
    views = augment.ten_crop_views(images, size)                   # (N, V, S, S, C)
    assert views.shape == (3, 10, size, size, 3)
    corners = [images[:, 0:6, 0:6], images[:, 0:6, 5:11], images[:, 5:11, 0:6], images[:, 5:11, 5:11],
               images[:, 2:8, 2:8]]
    for v, crop in enumerate(corners):
        np.testing.assert_array_equal(views[:, v], crop, err_msg=augment.TEN_CROP_ORDER[v])
        np.testing.assert_array_equal(views[:, v + 5], crop[:, :, ::-1], err_msg=augment.TEN_CROP_ORDER[v + 5])


def test_mean_crops_follow_the_image_crop_and_flip():
    """The mean is cropped at the image's offset and flipped with it (as if subtracted first)."""
    rng = np.random.default_rng(2)
    mean = rng.normal(size=(10, 10, 3))                              # (R, R, C)
    planes = augment.mean_planes(mean, np, np.float64)               # (2, C, R, R)
    ys, xs = np.array([0, 3, 4, 1]), np.array([4, 0, 2, 4])
    flips = np.array([True, True, False, False])
    got = augment.mean_crops(planes, ys, xs, flips, 6, np)           # (N, C, S, S)
    for n in range(4):
        crop = mean[ys[n]:ys[n] + 6, xs[n]:xs[n] + 6]
        crop = crop[:, ::-1] if flips[n] else crop
        np.testing.assert_array_equal(got[n], crop.transpose(2, 0, 1))


def test_normalize_makes_nchw_float():
    crops = _images(m=2, size=5)                                     # (N, S, S, C)
    out = augment.normalize(crops, np.array([1.0, 2.0, 3.0])[:, None, None], np.float32, np)
    assert out.shape == (2, 3, 5, 5) and out.dtype == np.float32
    np.testing.assert_array_equal(out, crops.transpose(0, 3, 1, 2) - np.array([1.0, 2.0, 3.0])[:, None, None])
