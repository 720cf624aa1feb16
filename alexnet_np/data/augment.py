"""Augmentation and evaluation views as array operations on whole batches (§2, §4.1).

Dimensions:
    M  images in a split           N  images in a batch
    R  stored image side (256)     S  crop side, the network's input (config.input_size)
    P  crop offsets per axis (R - S + 1)
    C  colour channels (3, RGB)    V  views per image (10 for ten-crop)

Stored images are uint8 HWC RGB, ``(M, R, R, C)``; the network takes float NCHW,
``(N, C, S, S)``. The choices (docs/design.md, "Choices the paper leaves open"), stated once here:

- Crops (§4.1): offsets ``y, x`` uniform over ``0 .. R - S`` *inclusive* (P values each).
- Flips (§4.1): horizontal, with probability 0.5.
- PCA lighting (§4.1), units: pixels in 0-255 levels; ``eigvals`` and ``eigvecs`` are those
  of the 3x3 covariance of all training pixels in those units. Per image and per use,
  ``a ~ N(0, lighting_std)`` (3 values) and every pixel gets
  ``shift = eigvecs @ (a * sqrt(eigvals))``, i.e. the draws scale the components'
  *standard deviations* (the authors' cuda-convnet convention; the printed formula's
  ``a_i * lambda_i`` would be absurd in these units). cuda-convnet's extra 1/1.1 image
  scaling is not applied.
- Mean (§2): the per-pixel mean image of the training set, cropped at the image's offset
  and flipped with it (the same as subtracting it from the 256x256 image before cropping);
  or, with ``config.mean == "channel"``, the per-channel mean of all training pixels.

Host side (NumPy, uint8): ``crop_flip`` gathers the crops of a batch by fancy indexing on a
strided *view* of every window, and flips by reversing whole pixels (3-byte void items);
no loop per example. Device side (``xp`` = NumPy or CuPy): ``normalize`` converts to float,
transposes to NCHW and subtracts ``mean - shift`` in one pass.
"""
import numpy as np

TEN_CROP_ORDER = (
    "top-left", "top-right", "bottom-left", "bottom-right", "centre",
    "top-left flipped", "top-right flipped", "bottom-left flipped",
    "bottom-right flipped", "centre flipped",
)


def crop_offsets(image_size, crop_size):
    """Number of legal crop offsets per axis, P = R - S + 1, asserted positive (conventions 15)."""
    count = image_size - crop_size + 1
    assert count >= 1, f"crop size {crop_size} does not fit in stored images of {image_size}"
    return count


def draw_augmentation(rng, n, image_size, crop_size, flip=True, lighting_std=0.1, random_crop=True):
    """The random choices for one training batch of ``n`` images (§4.1), from host ``rng``.

    Always draws in the same order (offsets y, offsets x, flips, lighting), whatever is
    switched off, so that turning flips or lighting off leaves the crops unchanged, and
    turning random crops off (centre crops, offset (R - S) // 2) leaves flips and lighting
    unchanged.
    Returns ``(ys (N,) int64, xs (N,) int64, flips (N,) bool, alphas (N, C) float64)``.
    """
    count = crop_offsets(image_size, crop_size)
    ys = rng.integers(0, count, size=n)                  # (N,)
    xs = rng.integers(0, count, size=n)                  # (N,)
    flips = rng.random(n) < 0.5                          # (N,)
    alphas = rng.normal(0.0, 1.0, size=(n, 3))           # (N, C)
    if not random_crop:
        ys[:] = xs[:] = (image_size - crop_size) // 2    # the centre crop, as at test time
    if not flip:
        flips[:] = False
    alphas *= lighting_std
    return ys, xs, flips, alphas


def crop_windows(images, crop_size):
    """A read-only view ``(M, P, P, S, S*C)`` of every S x S window of ``images`` (M, R, R, C).

    ``crop_windows(images, S)[i, y, x]`` is ``images[i, y:y+S, x:x+S]`` with each row's
    pixels flattened; fancy indexing on the first three axes copies whole rows of
    ``S*C`` contiguous bytes, which is what makes the batch crop fast.
    """
    m, height, width, channels = images.shape
    assert height == width, f"stored images must be square, not {height}x{width}"
    count = crop_offsets(height, crop_size)
    s_img, s_row, s_col, s_chan = images.strides
    assert s_chan == images.itemsize and s_col == channels * s_chan, "rows must be contiguous"
    return np.lib.stride_tricks.as_strided(
        images, (m, count, count, crop_size, crop_size * channels),
        (s_img, s_row, s_col, s_row, s_chan), writeable=False)  # (M, P, P, S, S*C)


def flip_pixels(crops, flips):
    """Reverse, in place, the columns of the crops ``crops[flips]`` (N, S, S, C) uint8.

    Each pixel is viewed as one 3-byte item so that the reversal moves whole pixels.
    """
    n, size, size2, channels = crops.shape
    pixels = crops.reshape(n, size, size2 * channels).view(np.dtype((np.void, channels)))  # (N, S, S)
    pixels[flips] = pixels[flips, :, ::-1]
    return crops


def crop_flip(images, index, ys, xs, flips, crop_size):
    """The uint8 crops of one batch, flipped where asked (§4.1); host arrays only.

    ``images`` (M, R, R, C) uint8 (a memmap is fine: only the rows of the crops are read);
    ``index, ys, xs, flips`` (N,). Returns a new array (N, S, S, C) uint8.
    """
    n = len(index)
    channels = images.shape[3]
    rows = crop_windows(images, crop_size)[index, ys, xs]       # (N, S, S*C)
    crops = rows.reshape(n, crop_size, crop_size, channels)     # (N, S, S, C)
    return flip_pixels(crops, flips)


def lighting_shift(alphas, eigvals, eigvecs):
    """The PCA lighting offset of each image, in 0-255 levels (§4.1).

    ``shift[n] = eigvecs @ (alphas[n] * sqrt(eigvals))``: column ``i`` of ``eigvecs`` is the
    eigenvector ``p_i`` of eigenvalue ``eigvals[i]``. ``alphas`` (N, C); returns (N, C).
    """
    return (alphas * np.sqrt(eigvals)) @ np.asarray(eigvecs).T  # (N, C)


def mean_planes(mean_image, xp, dtype):
    """The mean image and its mirror image, as planes ready for window views on the device.

    ``mean_image`` (R, R, C) float on the host. Returns (2, C, R, R) of ``dtype`` on the
    current device: plane 0 the mean, plane 1 the mean reflected left-right.
    """
    chw = np.ascontiguousarray(np.asarray(mean_image).transpose(2, 0, 1))  # (C, R, R)
    both = np.stack([chw, chw[:, :, ::-1]])                                  # (2, C, R, R)
    return xp.asarray(both.astype(dtype))                                    # (2, C, R, R)


def mean_crops(planes, ys, xs, flips, crop_size, xp):
    """The mean image cropped and flipped exactly as each image of the batch.

    A flipped crop at ``x`` is the crop of the mirrored mean at ``R - S - x``, so one
    gather from a strided view of ``planes`` (2, C, R, R) gives every crop.
    ``ys, xs, flips`` (N,) device arrays. Returns a new array (N, C, S, S).
    """
    two, channels, size, _ = planes.shape
    count = crop_offsets(size, crop_size)
    s_plane, s_chan, s_row, s_col = planes.strides
    windows = xp.lib.stride_tricks.as_strided(
        planes, (2, count, count, channels, crop_size, crop_size),
        (s_plane, s_row, s_col, s_chan, s_row, s_col))            # (2, P, P, C, S, S)
    mirrored_x = xp.where(flips, size - crop_size - xs, xs)         # (N,)
    return windows[flips.astype(xp.int64), ys, mirrored_x]          # (N, C, S, S)


def normalize(crops, offset, dtype, xp, out=None):
    """``float(crops) - offset`` as an NCHW array: the one float pass of a batch.

    ``crops`` (N, S, S, C) or (N, V, S, S, C) uint8 on the device; ``offset`` broadcasts
    against the NCHW result, (N, C, S, S), (V, C, S, S), (N, C, 1, 1) or (C, 1, 1): the
    mean minus the lighting shift. ``out``: where to write (``offset`` itself may be given,
    to save the memory of a second float batch); a new array when None.
    Returns (N, C, S, S) or (N, V, C, S, S) of ``dtype``.
    """
    axes = tuple(range(crops.ndim - 3)) + (crops.ndim - 1, crops.ndim - 3, crops.ndim - 2)
    planar = crops.transpose(axes)                               # (N, [V,] C, S, S) view
    if out is None:
        out = xp.empty(planar.shape, dtype=dtype)                # (N, [V,] C, S, S)
    assert out.shape == planar.shape and out.dtype == dtype, (out.shape, out.dtype)
    xp.subtract(planar, offset, out=out)
    return out


def center_crop(images, crop_size):
    """The central S x S crop, offset ``(R - S) // 2`` on both axes (a view).

    ``images`` (N, R, R, C) -> (N, S, S, C); NumPy or CuPy.
    """
    start = (images.shape[1] - crop_size) // 2
    crop_offsets(images.shape[1], crop_size)
    return images[:, start:start + crop_size, start:start + crop_size]  # (N, S, S, C)


def ten_crop_offsets(image_size, crop_size):
    """``[(y, x), ...]`` of the five crops of ``TEN_CROP_ORDER`` (corners, then centre)."""
    last = crop_offsets(image_size, crop_size) - 1
    centre = (image_size - crop_size) // 2
    return [(0, 0), (0, last), (last, 0), (last, last), (centre, centre)]


def ten_crop_views(images, crop_size, xp=np):
    """The ten test views of §4.1: four corners and the centre, then each one reflected.

    ``images`` (N, R, R, C) -> (N, V, S, S, C), V = 10, in ``TEN_CROP_ORDER``. Loops over
    the five fixed offsets, never over images.
    """
    crops = [images[:, y:y + crop_size, x:x + crop_size]
             for y, x in ten_crop_offsets(images.shape[1], crop_size)]  # 5 x (N, S, S, C)
    five = xp.stack(crops, axis=1)                                        # (N, 5, S, S, C)
    return xp.concatenate([five, five[:, :, :, ::-1]], axis=1)           # (N, V, S, S, C)
