"""The layers of AlexNet, each with an explicit forward and backward in array operations.

Dimensions:
    N  batch                      C  input channels          F  filters (output channels)
    H, W   input height, width    KH, KW  kernel size        OH, OW  output height, width
    D  input features (fc)        K  output features / classes

Layout. Convolutional activations are stored **(C, N, H, W)**, channel-major, not the
usual (N, C, H, W). The reason is the GEMM at the heart of im2col convolution:
``W (F, C*KH*KW) @ col (C*KH*KW, N*OH*OW)`` yields ``(F, N*OH*OW)``, which *is*
``(F, N, OH, OW)`` without a transpose; and LRN's window over channels (§3.3) becomes a
sum of contiguous slabs. Images enter in the usual (N, 3, H, W) and the model transposes them once
on arrival; ``Flatten`` returns to (N, C*H*W) in the usual C-major order, so a
flattened feature vector is ordered as in every other framework.

Conventions (docs/conventions.md): ``self.params`` and ``self.grads`` are dicts of named arrays with
the same keys; ``forward(x, train)`` keeps what backward needs as attributes;
``backward(dout)`` *writes* ``self.grads``, the gradients of this batch's loss (nothing to
zero between steps, nothing added to what was there), and returns the gradient with respect
to the input. ``infer(x)`` is the test-time forward of
inference (``forward(x, train=False)``) that keeps nothing for backward: no kept input,
no pooling winners; backward cannot follow it. Every layer runs unchanged on NumPy and
CuPy: the array module comes from the layer's device.

Memory. The large layers (convolution, ReLU, LRN, pooling) reuse their arrays from step
to step instead of allocating fresh ones, which costs page faults and zeroing every step
(measured: a third of LRN's time on the CPU). Three kinds:
- ``self.buffer(name)``: the layer's own, for what backward needs (ReLU's output, the
  pooling winners and output). Valid until the layer runs again.
- ``self.device.memory.output(...)``: the output of a layer that the next layer consumes
  at once and nobody keeps (a convolution's output before its ReLU, input gradients on
  their way down): one of the device's two output buffers, taken in turn. Valid until two
  more outputs have been taken on the device.
- ``self.device.memory.work(...)``: temporaries of one call (an unfolded input, LRN's padded
  squares), inside ``with self.device.memory.workspace():``, given back when it ends.
This keeps the memory of a training step below PyTorch's (``memory.DeviceMemory``).
Copy an output if you keep it longer (the model's logits and fc7 features are fresh).
"""
import math

from . import counter_rng, winograd


class Layer:
    """What every layer shares: its parameters and their gradients, and reusable buffers."""

    def __init__(self, device, **params):
        self.device = device
        self.params = {name: device.receive(value) for name, value in params.items()}
        with device:
            self.grads = {name: device.xp.zeros_like(p) for name, p in self.params.items()}
        self._buffers = {}  # name -> array, see ``buffer``

    def infer(self, x):
        """The test-time output for ``x``, keeping nothing that only backward needs (inference).
        Layers that keep arrays for backward override it; the others keep nothing anyway."""
        return self.forward(x, train=False)

    def kept(self, value):
        """What forward kept for backward, or a clear error after ``infer``."""
        if value is None:
            raise RuntimeError(f"{type(self).__name__}.backward needs a forward first "
                               "(infer keeps nothing for backward)")
        return value

    def buffer(self, name, shape, dtype):
        """An array of this layer's, reused from call to call; contents undefined."""
        array = self._buffers.get(name)
        if array is None or array.shape != tuple(shape) or array.dtype != dtype:
            with self.device:
                array = self._buffers[name] = self.device.xp.empty(shape, dtype=dtype)
        return array


# --------------------------------------------------------------------------- convolution

def conv_output_size(size, kernel, stride, pad, what="convolution"):
    """``(size + 2 pad - kernel) / stride + 1``, asserted to be a whole number."""
    span = size + 2 * pad - kernel
    if span < 0 or span % stride:
        raise ValueError(
            f"{what}: input size {size} with kernel {kernel}, stride {stride}, pad {pad} "
            f"does not fit: (size + 2*pad - kernel) = {span} must be >= 0 and divide by the stride")
    return span // stride + 1


def pool_output_size(size, kernel, stride, what="max pooling"):
    """``floor((size - kernel) / stride) + 1``: windows that would cross the border are left out.

    With the paper's 3x3 windows at stride 2 every map of Figure 2 is covered exactly
    (55 -> 27 -> 13 -> 6); with 2x2 at stride 2 (§3.4's comparison) the last row and
    column of an odd map are not pooled, and the sizes are the same: 27, 13, 6 (as
    PyTorch's default floor mode). Asserted to leave at least one window.
    """
    if size < kernel:
        raise ValueError(f"{what}: input size {size} is smaller than the {kernel}x{kernel} window")
    return (size - kernel) // stride + 1


def windows(xp, x, KH, KW, stride, OH, OW):
    """Every KH x KW window of ``x`` at ``stride``, as a view (no copy): the unfolded input.

    x (C, N, H, W) -> (C, KH, KW, N, OH, OW), v[c, i, j, n, oh, ow] = x[c, n, i + s*oh, j + s*ow].
    The same call on NumPy and CuPy (``xp.lib.stride_tricks.as_strided``); strides in bytes.
    """
    C, N = x.shape[:2]
    sC, sN, sH, sW = x.strides
    return xp.lib.stride_tricks.as_strided(
        x, (C, KH, KW, N, OH, OW), (sC, sH, sW, sN, stride * sH, stride * sW))


def im2col(xp, x, KH, KW, stride, col):
    """Unfold the (already padded) ``x`` so that convolution becomes one matrix product.

    x   (C, N, H, W)
    col (C, KH, KW, N, OH, OW), filled here: col[c, i, j, n, oh, ow] = x[c, n, i + s*oh, j + s*ow]
    Returns col viewed as (C*KH*KW, N*OH*OW). One strided copy out of the window view:
    one array operation (a kernel launch on a GPU) where a copy per kernel offset would be
    KH*KW of them (121 for conv1); on the CPU the two take the same time within 10%.
    """
    C, KH, KW, N, OH, OW = col.shape
    col[...] = windows(xp, x, KH, KW, stride, OH, OW)
    return col.reshape(C * KH * KW, N * OH * OW)


def col2im(dcol, stride, dx):
    """The adjoint of im2col: add every column entry back to the pixel it came from.

    dcol (C, KH, KW, N, OH, OW)
    dx   (C, N, H, W), zeroed by the caller; overlapping windows add up.
    One strided add per kernel offset: the windows overlap, so one operation cannot write
    them all (summing rows first, then columns, takes KH + KW operations but 1.3x the time
    on the CPU). Stride-1 layers mostly avoid it (``Conv2D.input_grad_by_convolution``).
    """
    _, KH, KW, _, OH, OW = dcol.shape
    for i in range(KH):
        for j in range(KW):
            window = dx[:, :, i:i + stride * OH:stride, j:j + stride * OW:stride]  # (C, N, OH, OW), a view
            window += dcol[:, i, j]  # in place on the view: one operation (dx[...] += also writes it back)
    return dx


def pad_spatial(x, pad_h, pad_w, out):
    """``x`` (C, N, H, W) with zeros around H and W, written into ``out`` (C, N, H+2ph, W+2pw).
    Two operations: zero everything, copy the interior."""
    H, W = x.shape[2], x.shape[3]
    out.fill(0)
    out[:, :, pad_h:pad_h + H, pad_w:pad_w + W] = x
    return out


class Conv2D(Layer):
    """Convolution by im2col + GEMM (§3, Figure 2).

        y[f, n, oh, ow] = b[f] + sum_{c, i, j} W[f, c, i, j] * x_pad[c, n, s*oh + i, s*ow + j]

    params: W (F, C, KH, KW), b (F,).  x (C, N, H, W) -> y (F, N, OH, OW).

    The unfolded input (col) would be the largest array of the net (563 MB for conv1 at
    batch 128), so it is built for a chunk of the batch at a time, in the device's
    workspace, at most ``device.col_elements`` entries (a chunk of at least one image:
    64 MiB on the CPU, for its caches; a GPU takes the whole batch at once, so that a layer
    is a handful of array operations), or ``device.few_filters_col_elements`` for a layer of
    fewer than 64 filters (conv1: an image at a time on the CPU, see ``backend.Device``);
    and it is not kept between forward and backward:
    backward unfolds again, which costs one copy and saves gigabytes.

    The input gradient. In general, ``dcol = W^T dy`` folded back by ``col2im`` (KH*KW
    strided adds). At stride 1 it is itself a convolution: of dy, zero-padded by
    ``K - 1 - pad``, with the kernels turned by 180 degrees and their two channel axes
    swapped,  dx[c] = sum_{f, i, j} W[f, c, KH-1-i, KW-1-j] dy_pad[f, n, h + i, w + j],
    a single unfold and GEMM that writes dx directly. Its unfolded dy has F*KH*KW rows where
    dcol has C*KH*KW: so it is used where F <= C (conv3-conv5: measured 0.8-0.9x the time of
    col2im, and 4 operations instead of KH*KW + 3), not for conv2 (F = 128 > C = 48: 1.3x).

    Winograd. On a device that asks for it (``device.winograd``: the CPU), a 3 x 3 kernel at
    stride 1 (conv3-conv5) goes by Winograd's F(2x2, 3x3) instead (``winograd``): forward,
    the input gradient (the turned convolution above) and the weights' gradient, each with
    1.94x fewer multiply-adds on 13 x 13 maps. Measured at batch 32, one thread, against
    im2col: forward 0.66x (conv3), 0.70x (conv4), 0.70x (conv5) the time, backward 0.70x,
    0.71x, 0.79x. Its transforms are about 30 array operations a call, where im2col is 4:
    a GPU keeps im2col.

    Tried and not kept: conv1 by space-to-depth (its stride-4 blocks as 48 channels, a 3 x 3
    kernel at stride 1): 1.11-1.14x slower on the CPU, and 20 array operations a step
    against 8.
    """

    MANY_FILTERS = 64   # below: the device's chunks for few filters (``_chunks``)

    def __init__(self, device, weight, bias, stride=1, pad=0, input_grad=True):
        super().__init__(device, W=weight, b=bias)
        self.stride, self.pad = stride, pad
        self.input_grad = input_grad  # conv1 needs no gradient for the image
        F, C, KH, KW = self.params["W"].shape
        self.input_grad_by_convolution = stride == 1 and F <= C and pad <= min(KH, KW) - 1
        self.winograd = device.winograd and (KH, KW) == (3, 3) and stride == 1 and pad <= 2

    def output_shape(self, H, W):
        """(OH, OW) for an H x W input."""
        KH, KW = self.params["W"].shape[2:]
        return (conv_output_size(H, KH, self.stride, self.pad),
                conv_output_size(W, KW, self.stride, self.pad))

    def _chunks(self, x):
        """[(n0, n1), ...]: slices of the batch whose unfolded input fits ``col_elements``
        (and, where backward unfolds dy, that too: F*KH*KW rows of H*W)."""
        F, C, KH, KW = self.params["W"].shape
        N, H, W = x.shape[1:]
        OH, OW = self.output_shape(H, W)
        per_image = C * KH * KW * OH * OW
        if self.winograd:   # the transformed input and products of 4 x 4 tiles: 16 (C + F) T^2
            per_image = 16 * (C + F) * math.prod(winograd.tiles(OH, OW))
        elif self.input_grad and self.input_grad_by_convolution:
            per_image = max(per_image, F * KH * KW * H * W)
        limit = self.device.col_elements if F >= self.MANY_FILTERS else self.device.few_filters_col_elements
        count = -(-N // max(1, limit // per_image))                    # chunks needed, rounded up
        bounds = [N * k // count for k in range(count + 1)]              # as equal as can be
        return list(zip(bounds, bounds[1:]))

    def _unfold(self, x, KH, KW, pad_h, pad_w, stride):
        """x (C, n, H, W), zero-padded -> col (C*KH*KW, n*OH*OW), in the open workspace."""
        work = self.device.memory.work
        C, n, H, W = x.shape
        if pad_h or pad_w:
            x = pad_spatial(x, pad_h, pad_w, work((C, n, H + 2 * pad_h, W + 2 * pad_w), x.dtype))
        OH, OW = (x.shape[2] - KH) // stride + 1, (x.shape[3] - KW) // stride + 1
        col = work((C, KH, KW, n, OH, OW), x.dtype)                    # (C, KH, KW, n, OH, OW)
        return im2col(self.device.xp, x, KH, KW, stride, col)

    def _unfold_input(self, x):
        """x (C, n, H, W) -> col (C*KH*KW, n*OH*OW): the direct unfold, padded by ``pad``."""
        KH, KW = self.params["W"].shape[2:]
        return self._unfold(x, KH, KW, self.pad, self.pad, self.stride)

    def _gemm_into(self, out, n0, n1, a, b):
        """out[:, n0:n1] = a @ b, for out (R, N, ...) and b (K, n*...): straight into ``out``
        when the chunk is the whole batch, else through a contiguous block of the workspace
        (CuPy's matmul writes only contiguous arrays) and one copy."""
        xp = self.device.xp
        if n1 - n0 == out.shape[1]:
            return xp.matmul(a, b, out=out.reshape(out.shape[0], -1))
        block = xp.matmul(a, b, out=self.device.memory.work((a.shape[0], b.shape[1]), out.dtype))
        out[:, n0:n1] = block.reshape((out.shape[0], n1 - n0) + out.shape[2:])
        return out

    def forward(self, x, train=False):
        y = self.infer(x)
        self.x = x                                                    # (C, N, H, W), for backward
        return y

    def infer(self, x):
        self.x = None
        if x.shape[0] != self.params["W"].shape[1]:
            raise ValueError(f"Conv2D expects {self.params['W'].shape[1]} input channels "
                             f"in layout (C, N, H, W), got shape {x.shape}")
        W, b = self.params["W"], self.params["b"]
        F = W.shape[0]
        N = x.shape[1]
        OH, OW = self.output_shape(x.shape[2], x.shape[3])
        memory = self.device.memory
        y = memory.output((F, N, OH, OW), x.dtype)                    # (F, N, OH, OW)
        if self.winograd:   # the kernels' transforms, kept for backward (the weights stay until then)
            self.U = winograd.transform_filters(self.device.xp, W, self.buffer("U", (4, 4, F, W.shape[1]), W.dtype))
            self._convolve_by_winograd(x, self.U, self.pad, y)
        else:
            for n0, n1 in self._chunks(x):
                with memory.workspace():                              # each chunk's col, given back
                    col = self._unfold_input(x[:, n0:n1])             # (C*KH*KW, n*OH*OW)
                    self._gemm_into(y, n0, n1, W.reshape(F, -1), col)  # W as (F, C*KH*KW)
        y += b[:, None, None, None]
        return y

    def _convolve_by_winograd(self, x, U, pad, y):
        """y (F, N, OH, OW) = x (C, N, H, W) convolved with the kernels whose transforms are
        U (4, 4, F, C), padded by ``pad`` (no bias): ``winograd.conv3x3``, a chunk of the
        batch at a time."""
        memory = self.device.memory
        for n0, n1 in self._chunks(x):
            with memory.workspace():
                winograd.conv3x3(self.device.xp, x[:, n0:n1], U, pad, y[:, n0:n1], memory.work,
                                 self.device.block_elements)
        return y

    def _backward_by_winograd(self, dy):
        """Backward of the Winograd forward: dW through ``winograd.filter_grad``, dx as the
        convolution of dy with the turned kernels (``input_grad_by_convolution``)."""
        xp, memory = self.device.xp, self.device.memory
        W = self.params["W"]
        F, C = W.shape[:2]
        x = self.kept(self.x)                                         # (C, N, H, W)
        with memory.workspace():
            dU = memory.work((4, 4, F, C), W.dtype)                   # dL/dU, summed over chunks
            share = memory.work((4, 4, F, C), W.dtype)
            for k, (n0, n1) in enumerate(self._chunks(x)):
                with memory.workspace():
                    winograd.filter_grad(xp, x[:, n0:n1], dy[:, n0:n1], self.pad, dU if k == 0 else share,
                                         memory.work, self.device.block_elements)
                if k:
                    dU += share
            winograd.filters_adjoint(xp, dU, self.grads["W"])         # (F, C, 3, 3)
        if not self.input_grad:
            return None
        dx = memory.output(x.shape, dy.dtype)                         # (C, N, H, W)
        with memory.workspace():                                      # W[f, c, 2-i, 2-j]'s transforms
            turned = winograd.turned_filters(self.U, memory.work((4, 4, C, F), W.dtype))
            return self._convolve_by_winograd(dy, turned, 2 - self.pad, dx)

    def backward(self, dy):
        xp, memory = self.device.xp, self.device.memory
        xp.sum(dy, axis=(1, 2, 3), out=self.grads["b"])               # (F,)
        if self.winograd:
            return self._backward_by_winograd(dy)
        W = self.params["W"]
        F, C, KH, KW = W.shape
        x = self.kept(self.x)                                         # (C, N, H, W)
        _, N, H, Wd = x.shape
        OH, OW = dy.shape[2], dy.shape[3]
        p = self.pad
        dW = self.grads["W"].reshape(F, C * KH * KW).T                # (C*KH*KW, F), a view
        by_convolution = self.input_grad and self.input_grad_by_convolution
        with memory.workspace():
            if by_convolution:
                dx = memory.output((C, N, H, Wd), dy.dtype)           # (C, N, H, W)
                turned = memory.work((C, F, KH, KW), W.dtype)
                turned[...] = W[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)   # W[f, c, KH-1-i, KW-1-j]
            elif self.input_grad:
                padded_shape = (C, N, H + 2 * p, Wd + 2 * p)
                dx_pad = memory.work(padded_shape, dy.dtype) if p else memory.output(padded_shape, dy.dtype)
                dx_pad.fill(0)                                        # (C, N, H+2p, W+2p)
            for n0, n1 in self._chunks(x):
                with memory.workspace():                              # each chunk's col, given back
                    col = self._unfold_input(x[:, n0:n1])             # (C*KH*KW, n*OH*OW)
                    dy2 = dy[:, n0:n1].reshape(F, -1)                 # (F, n*OH*OW)
                    # dW = sum over the chunks of dy2 col^T, computed as (col dy2^T)^T: OpenBLAS
                    # runs this orientation up to 20x faster when n*OH*OW is long and F small
                    # (conv1: 48 x 387,200 x 363).
                    share = xp.matmul(col, dy2.T)                     # (C*KH*KW, F)
                    if n0 == 0:
                        dW[...] = share
                    else:
                        dW += share
                    if by_convolution:
                        dy_col = self._unfold(dy[:, n0:n1], KH, KW, KH - 1 - p, KW - 1 - p, 1)  # (F*KH*KW, n*H*W)
                        self._gemm_into(dx, n0, n1, turned.reshape(C, -1), dy_col)
                    elif self.input_grad:
                        dcol = xp.matmul(W.reshape(F, -1).T, dy2, out=col)   # reuses col's memory
                        col2im(dcol.reshape(C, KH, KW, n1 - n0, OH, OW), self.stride, dx_pad[:, n0:n1])
            if not self.input_grad:
                return None
            if by_convolution:
                return dx
            if not p:
                return dx_pad
            dx = memory.output((C, N, H, Wd), dy.dtype)               # (C, N, H, W)
            dx[...] = dx_pad[:, :, p:H + p, p:Wd + p]
            return dx


# --------------------------------------------------------------------------- elementwise

class ReLU(Layer):
    """f(x) = max(0, x) (§3.1). x, y: any shape."""

    def __init__(self, device):
        super().__init__(device)

    def forward(self, x, train=False):
        self.y = self.device.xp.maximum(x, 0, out=self.buffer("y", x.shape, x.dtype))  # same shape as x
        return self.y

    def infer(self, x):
        self.y = None   # nothing kept: the output goes to an output buffer, not the layer's own
        return self.device.xp.maximum(x, 0, out=self.device.memory.output(x.shape, x.dtype))

    def backward(self, dy):
        y = self.kept(self.y)
        return self.device.xp.multiply(dy, y > 0, out=self.device.memory.output(dy.shape, dy.dtype))


class Tanh(Layer):
    """f(x) = tanh(x), the saturating non-linearity §3.1 compares ReLU with (Figure 1).

    Backward: f'(x) = 1 - tanh(x)^2 = 1 - y^2, from the kept output. x, y: any shape.
    """

    def __init__(self, device):
        super().__init__(device)

    def forward(self, x, train=False):
        self.y = self.device.xp.tanh(x, out=self.buffer("y", x.shape, x.dtype))  # same shape as x
        return self.y

    def infer(self, x):
        self.y = None   # as ReLU.infer
        return self.device.xp.tanh(x, out=self.device.memory.output(x.shape, x.dtype))

    def backward(self, dy):
        xp = self.device.xp
        y = self.kept(self.y)
        dx = xp.multiply(y, y, out=self.device.memory.output(dy.shape, dy.dtype))  # y^2
        xp.subtract(dy.dtype.type(1), dx, out=dx)                                   # 1 - y^2
        dx *= dy
        return dx


class Dropout(Layer):
    """Dropout (§4.2): at training time each unit is zeroed with probability ``p``.

    ``inverted=False`` follows the paper: training multiplies by the 0/1 mask only, and
    test time multiplies every output by (1 - p) ("multiply their outputs by 0.5").
    ``inverted=True`` scales kept units by 1/(1 - p) at training time instead, and test
    time is the identity. Both give the same expected activation.

    Masks. Unit (row r, column c) of step s is kept when z >= t, where z is element
    r * D + c of the counter-based stream of (``key``, s) (``counter_rng``: seed, layer,
    tower, step) and t = p * 2^64. The rows are those of the *global* batch of ``total``,
    of which these ``x`` are rows ``first ..`` (``position``, set by the model before each
    forward). So the mask is a function of where a unit is, not of who computes it: the
    same bits on NumPy and on any GPU, a batch split over R ranks gets the masks of one
    process, a resumed run those of an uninterrupted one, and no generator is built or
    saved. Each rank computes only its own rows: twelve integer array operations on (N, D)
    uint64 (2.1 ms for 128 x 2048 on a 2-core AMD EPYC core, against 0.9 ms for the
    generator draw it replaced). A test may pass ``mask`` explicitly.
    """

    def __init__(self, device, p, key, inverted=False):
        super().__init__(device)
        self.p, self.key, self.inverted = p, tuple(key), inverted
        self.train_scale = 1.0 / (1.0 - p) if inverted else 1.0
        self.test_scale = 1.0 if inverted else 1.0 - p
        self.position = (0, 0, None)  # (step, first row, rows in the global batch; None = N)

    def draw_mask(self, shape):
        """The kept units (True) of rows ``first .. first+N`` of the global batch: (N, D) bool."""
        step, first, _ = self.position
        N, D = shape
        z = counter_rng.bits64(self.device.xp, counter_rng.stream_key(*self.key, step), first * D, N * D)
        return (z >= counter_rng.below_threshold(self.p)).reshape(N, D)   # (N, D)

    def forward(self, x, train=False, mask=None):
        if not train:
            self.mask = None
            return x * x.dtype.type(self.test_scale) if self.test_scale != 1.0 else x
        if mask is None:
            mask = self.draw_mask(x.shape)                   # (N, D) True = kept
        self.mask = mask.astype(x.dtype)                     # (same as x) 0 or 1
        if self.train_scale != 1.0:
            self.mask *= x.dtype.type(self.train_scale)      # 0 or 1/(1-p)
        return x * self.mask

    def backward(self, dy):
        if self.mask is None:  # after a test-time forward
            return dy * dy.dtype.type(self.test_scale)
        return dy * self.mask


# --------------------------------------------------------------------------- normalisation

class LocalResponseNorm(Layer):
    """Local response normalisation across channels (§3.3).

        b[i] = a[i] / (k + coef * sum_{j=max(0, i-n/2)}^{min(C-1, i+n/2)} a[j]^2) ^ beta

    with coef = alpha (the printed formula) or alpha / n (cuda-convnet, Caffe, PyTorch),
    chosen by ``alpha_over_n``. x, y (C, N, H, W): the channel axis is axis 0.

    Backward, with s[i] = k + coef * S[i] the scale:
        dL/da[i] = dy[i] s[i]^-beta - 2 beta coef a[i] sum_{j: |i-j| <= n/2} dy[j] b[j] / s[j]
    (the window is symmetric, so "the j whose window holds i" is the window of i).
    """

    def __init__(self, device, size=5, k=2.0, alpha=1e-4, beta=0.75, alpha_over_n=False):
        super().__init__(device)
        self.size, self.k, self.beta = size, k, beta
        self.coef = alpha / size if alpha_over_n else alpha

    def padded_channels(self, shape, dtype):
        """(padded, inner): a temporary (C + 2 h, N, H, W) whose h channels at either end are
        zero, h = n/2, and the view of its C channels in between, to be written by the caller."""
        half, C = self.size // 2, shape[0]
        padded = self.device.memory.work((C + 2 * half,) + tuple(shape[1:]), dtype)
        padded[:half].fill(0)
        padded[C + half:].fill(0)
        return padded, padded[half:C + half]

    def window_sum(self, padded, total):
        """total[i] = sum of a over the channel window [i - n/2, i + n/2], clipped at the edges.

        padded (C + 2h, ...): a, between h zero channels at either end (``padded_channels``);
        total (C, ...), overwritten and returned. One reduction over a window view of the
        padded channels (as_strided): one operation where shifted adds are 2h + 1, and
        measured 0.66x their time on the CPU.
        """
        C, width = total.shape[0], 2 * (self.size // 2) + 1
        s0 = padded.strides[0]
        windows = self.device.xp.lib.stride_tricks.as_strided(
            padded, (C, width) + padded.shape[1:], (s0, s0) + padded.strides[1:])  # (C, n, ...) a view
        return windows.sum(axis=1, out=total)

    def scale(self, x, out):
        """s = k + coef * (window sum of a^2), into ``out``; x, out (C, N, H, W)."""
        with self.device.memory.workspace():                          # the padded squares
            padded, squares = self.padded_channels(x.shape, x.dtype)  # (C + 2h, N, H, W), (C, N, H, W)
            self.device.xp.multiply(x, x, out=squares)
            scale = self.window_sum(padded, out)
        scale *= x.dtype.type(self.coef)
        scale += x.dtype.type(self.k)
        return scale

    def forward(self, x, train=False):
        # x and s^-beta are kept for backward. Backward computed s^-beta again before (the
        # squares, their window sums and the power: 11 of LRN1's 27 ms at batch 32); keeping
        # it costs one array of x's size a layer (0.24 GB in all at batch 128).
        self.inverse_power = self.buffer("inverse_power", x.shape, x.dtype)   # (C, N, H, W): s^-beta
        y = self._normalise(x, self.inverse_power, self.device.memory.output(x.shape, x.dtype))
        self.x = x                                                  # (C, N, H, W)
        return y

    def infer(self, x):
        self.x = self.inverse_power = None
        y = self.device.memory.output(x.shape, x.dtype)
        return self._normalise(x, y, y)                             # s^-beta, then b, in one array

    def _normalise(self, x, inverse_power, out):
        """b = a s^-beta into ``out``, and s^-beta into ``inverse_power`` (which may be ``out``)."""
        xp = self.device.xp
        scale = self.scale(x, inverse_power)                          # s
        xp.power(scale, x.dtype.type(-self.beta), out=inverse_power)  # s^-beta, in s's memory
        return xp.multiply(inverse_power, x, out=out)                # b = a s^-beta

    def inverse_scale(self, inverse_power, out):
        """1/s from s^-beta: (s^-beta)^(1/beta); for the paper's beta = 3/4 that is
        p cbrt(p), p = s^-beta (3.5x faster than a power on the CPU)."""
        xp = self.device.xp
        if self.beta == 0.75:
            xp.cbrt(inverse_power, out=out)
            return xp.multiply(out, inverse_power, out=out)
        return xp.power(inverse_power, inverse_power.dtype.type(1 / self.beta), out=out)

    def backward(self, dy):
        xp, memory = self.device.xp, self.device.memory
        dtype = dy.dtype.type
        x, inverse_power = self.kept(self.x), self.inverse_power      # (C, N, H, W) each
        dx = memory.output(x.shape, x.dtype)                          # (C, N, H, W)
        if self.beta == 0:   # b = a: no window term (and s cannot be had from s^0)
            dx[...] = dy
            return dx
        with memory.workspace():
            direct = xp.multiply(dy, inverse_power, out=memory.work(x.shape, x.dtype))   # dy[i] s[i]^-beta
            # t[j] = dy[j] b[j] / s[j] = dy[j] s[j]^-beta a[j] / s[j], between zero channels
            padded, t = self.padded_channels(x.shape, x.dtype)
            xp.multiply(direct, x, out=t)
            t *= self.inverse_scale(inverse_power, memory.work(x.shape, x.dtype))
            self.window_sum(padded, dx)
            dx *= x
            dx *= dtype(-2.0 * self.beta * self.coef)
            dx += direct                       # dy[i] s[i]^-beta
            return dx


class ChannelSlice(Layer):
    """Channels ``start:stop`` of a (C, N, H, W) map: a tower's own part of a map it holds whole.

    Used where a layer sees both towers' maps but each tower keeps only its half (Caffe's
    LRN across all of conv1's maps, ``Config.lrn_across_towers``).
    x (C, N, H, W) -> y (stop - start, N, H, W), a view (contiguous: channels lead).
    Backward: dy in its channels, zeros elsewhere.
    """

    def __init__(self, device, start, stop):
        super().__init__(device)
        self.start, self.stop = start, stop

    def forward(self, x, train=False):
        self.shape, self.dtype = x.shape, x.dtype                   # (C, N, H, W)
        return x[self.start:self.stop]

    def backward(self, dy):
        dx = self.buffer("dx", self.shape, self.dtype)              # (C, N, H, W)
        dx.fill(0)
        dx[self.start:self.stop] = dy
        return dx


# --------------------------------------------------------------------------- pooling

class MaxPool(Layer):
    """Overlapping max pooling (§3.4): windows of ``size`` x ``size`` every ``stride`` pixels.

    x (C, N, H, W) -> y (C, N, OH, OW), OH = floor((H - size) / stride) + 1 (see
    ``pool_output_size``: rows and columns past the last whole window get no gradient).
    Done separably: the maximum over a window is the maximum over its ``size`` rows of
    the maximum over its ``size`` columns. Forward takes the column maxima (C, N, H, OW),
    then the row maxima (C, N, OH, OW), remembering at each stage which offset won. On a
    tie the first offset wins at both stages, so the winner is the window's first maximum
    in row-major order (as PyTorch and Caffe). Backward sends each gradient back through
    the two stages to the winner. Each loop
    runs over the ``size`` offsets of one stage, as strided views: no scatter-add.
    ``infer`` takes the maxima only (no winners: a third of the operations, no uint8 arrays).
    """

    def __init__(self, device, size=3, stride=2):
        super().__init__(device)
        self.size, self.stride = size, stride

    def output_size(self, size):
        return pool_output_size(size, self.size, self.stride)

    @staticmethod
    def _along(a, axis, part):
        """The view ``a[..., part, ...]``, the slice ``part`` taken along ``axis``."""
        index = [slice(None)] * a.ndim
        index[axis] = part
        return a[tuple(index)]

    def _offset(self, a, axis, k, count):
        """The view of ``a`` at k, k + s, ..., k + s*(count-1) along ``axis``."""
        return self._along(a, axis, slice(k, k + self.stride * (count - 1) + 1, self.stride))

    def _max_over_offsets(self, a, axis, best, winner=None):
        """Fill ``best`` with the max over the window's offsets along ``axis`` and ``winner``
        (unless None) with the offset of the first maximum; both have a's shape but
        ``count`` along axis."""
        xp = self.device.xp
        count = best.shape[axis]
        candidates = [self._offset(a, axis, k, count) for k in range(self.size)]   # views
        if self.size == 1:
            best[...] = candidates[0]
            if winner is not None:
                winner.fill(0)
            return best, winner
        # The running maxima m_k = max(c_0, ..., c_k); the last is the maximum. The first
        # maximum's offset is the number of running maxima below it: winner = sum_{k < size-1}
        # [m_k < max], so ties go to the first offset. 3k - 1 operations for k + 1 offsets.
        kept = self.size - 2 if winner is not None else 0   # without winners: only the maximum
        with self.device.memory.workspace():
            running = ([candidates[0]] + [self.device.memory.work(best.shape, best.dtype) for _ in range(kept)]
                       + [best] * (self.size - 1 - kept))
            for k in range(1, self.size):
                xp.maximum(running[k - 1], candidates[k], out=running[k])
            if winner is not None:
                xp.less(running[0], best, out=winner)
                for m in running[1:-1]:
                    winner += xp.less(m, best)
        return best, winner

    def _to_winners(self, dy, winner, axis, dx, routed):
        """The gradient of ``_max_over_offsets``: dy goes to the offset that won, in ``dx``.
        ``routed``, dy's shape, is working memory (dy where offset k won, else 0).

        The offsets k < stride land on distinct entries of dx (k + s t, t < count) that
        together are its first s * count: those are written, not added, and only the
        entries past them zeroed first; the offsets k >= stride add to what is there
        (3 x 3 at stride 2: 7 passes instead of 10, and no fill)."""
        xp = self.device.xp
        count = dy.shape[axis]
        if self.size < self.stride:   # windows with gaps between them: every entry zeroed
            dx.fill(0)
        else:   # past the last window's first s entries
            self._along(dx, axis, slice(self.stride * count, None)).fill(0)
        for k in range(self.size):
            at_k = self._offset(dx, axis, k, count)           # a view of dx
            if k < self.stride:
                xp.multiply(dy, winner == k, out=at_k)
            else:
                at_k += xp.multiply(dy, winner == k, out=routed)   # in place: one operation, not two
        return dx

    def forward(self, x, train=False):
        self.x_shape = x.shape
        return self._pool(x, winners=True)

    def infer(self, x):
        return self._pool(x, winners=False)

    def _pool(self, x, winners):
        """x (C, N, H, W) -> y (C, N, OH, OW): the column maxima, then their row maxima; with
        ``winners``, also the offset that won at each stage (uint8), which backward needs."""
        C, N, H, W = x.shape
        OH, OW = self.output_size(H), self.output_size(W)
        y = self.buffer("y", (C, N, OH, OW), x.dtype)                            # row maxima
        uint8 = self.device.xp.uint8
        self.column_winner = self.buffer("column_winner", (C, N, H, OW), uint8) if winners else None
        self.row_winner = self.buffer("row_winner", (C, N, OH, OW), uint8) if winners else None
        with self.device.memory.workspace():
            columns = self.device.memory.work((C, N, H, OW), x.dtype)           # column maxima
            self._max_over_offsets(x, 3, columns, self.column_winner)
            self._max_over_offsets(columns, 2, y, self.row_winner)
        return y

    def backward(self, dy):
        memory = self.device.memory
        C, N, H, W = self.x_shape
        OH, OW = dy.shape[2], dy.shape[3]
        with memory.workspace():
            dcolumns = memory.work((C, N, H, OW), dy.dtype)
            self._to_winners(dy, self.kept(self.row_winner), 2, dcolumns, memory.work(dy.shape, dy.dtype))
            dx = memory.output(self.x_shape, dy.dtype)                     # (C, N, H, W)
            self._to_winners(dcolumns, self.column_winner, 3, dx, memory.work(dcolumns.shape, dy.dtype))
            return dx


# --------------------------------------------------------------------------- layout, fc, loss

class Flatten(Layer):
    """(C, N, H, W) -> (N, C*H*W), each example's features in (C, H, W) order."""

    def __init__(self, device):
        super().__init__(device)

    def forward(self, x, train=False):
        self.x_shape = x.shape
        C, N, H, W = x.shape
        return self.device.xp.ascontiguousarray(x.transpose(1, 0, 2, 3)).reshape(N, C * H * W)

    def backward(self, dy):
        C, N, H, W = self.x_shape
        return self.device.xp.ascontiguousarray(dy.reshape(N, C, H, W).transpose(1, 0, 2, 3))


class Linear(Layer):
    """Fully connected layer: y = x W^T + b. params W (K, D), b (K,); x (N, D) -> y (N, K)."""

    def __init__(self, device, weight, bias):
        super().__init__(device, W=weight, b=bias)

    def forward(self, x, train=False):
        y = self.infer(x)
        self.x = x                                           # (N, D), for backward
        return y

    def infer(self, x):
        self.x = None
        if x.ndim != 2 or x.shape[1] != self.params["W"].shape[1]:
            raise ValueError(f"Linear expects (N, {self.params['W'].shape[1]}), got {x.shape}")
        # (W x^T)^T: OpenBLAS runs this orientation faster for a small batch (fc6 at batch
        # 32: 0.7x the time of x W^T). Made contiguous again (a copy of N*K entries): NumPy
        # sums the rows of a transposed array in another order, so the softmax of transposed
        # logits would differ in the last bit from that of the same logits off a GPU.
        y = self.device.xp.ascontiguousarray((self.params["W"] @ x.T).T)   # (N, K)
        y += self.params["b"]
        return y

    def backward(self, dy):
        xp = self.device.xp
        # Written straight into the gradient: at batch 32, adding fc6's 19M-entry weight
        # gradient to a zeroed one took longer than the product itself.
        xp.matmul(dy.T, self.kept(self.x), out=self.grads["W"])   # (K, D)
        xp.sum(dy, axis=0, out=self.grads["b"])                   # (K,)
        return dy @ self.params["W"]                              # (N, D)


class SoftmaxCrossEntropy(Layer):
    """The multinomial logistic regression objective (§3), averaged over the batch.

        p = softmax(z),  L = -(1/B) sum_n log p[n, y_n],  dL/dz = (p - onehot(y)) / B
    Stable: log p = z - max(z) - log(sum(exp(z - max(z)))). logits (N, K), labels (N,).
    B = N, or ``total``: the global batch when these N rows are one rank's part of it (the
    ranks' losses and gradients then add up to those of the whole batch).
    """

    def __init__(self, device):
        super().__init__(device)

    def forward(self, logits, labels, total=None):
        xp = self.device.xp
        N = logits.shape[0]
        shifted = logits - logits.max(axis=1, keepdims=True)          # (N, K)
        log_sum = xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))  # (N, 1)
        log_p = shifted - log_sum                                      # (N, K)
        self.probs, self.labels = xp.exp(log_p), labels                # (N, K), (N,)
        self.total = N if total is None else total
        return -log_p[xp.arange(N), labels].sum() / log_p.dtype.type(self.total)  # ()

    def backward(self):
        xp = self.device.xp
        N = self.probs.shape[0]
        dz = self.probs.copy()                                         # (N, K)
        dz[xp.arange(N), self.labels] -= 1
        dz /= dz.dtype.type(self.total)
        return dz

