"""The layers of AlexNet in their plain form: what a learner reads next to the paper, and what
``python -m alexnet_np.paper.trace`` steps through.

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
to the input. Every output is a fresh array: nothing a layer returns is overwritten later.
Every layer runs unchanged on NumPy and CuPy: the array module comes from the layer's device.

Each layer has a faster form beside it (``fast.py``: Winograd, reused buffers, chunks),
tested equal to it and chosen when the net is built (``Config.layer_form``, docs/design.md).
The loop references the layers are checked against are in ``tests/references.py``.
"""
from . import counter_rng


class Layer:
    """What every layer shares: its parameters (named arrays on its device) and their gradients."""

    def __init__(self, device, **params):
        self.device = device
        self.params = {name: device.receive(value) for name, value in params.items()}
        with device:
            self.grads = {name: device.xp.zeros_like(p) for name, p in self.params.items()}

    def infer(self, x):
        """The test-time output for ``x`` (inference): ``forward(x, train=False)``."""
        return self.forward(x, train=False)

    def kept(self, value):
        """What forward kept for backward, or a clear error when there is none."""
        if value is None:
            raise RuntimeError(f"{type(self).__name__}.backward needs a forward first "
                               "(infer keeps nothing for backward)")
        return value


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


def im2col(xp, x, KH, KW, stride):
    """Unfold the (already padded) ``x`` so that convolution becomes one matrix product.

    x (C, N, H, W) -> col (C*KH*KW, N*OH*OW), col[(c, i, j), (n, oh, ow)] = x[c, n, i + s*oh, j + s*ow]:
    one strided copy out of the window view (``windows``).
    """
    C, N, H, W = x.shape
    OH, OW = (H - KH) // stride + 1, (W - KW) // stride + 1
    col = xp.ascontiguousarray(windows(xp, x, KH, KW, stride, OH, OW))   # (C, KH, KW, N, OH, OW)
    return col.reshape(C * KH * KW, N * OH * OW)                         # (C*KH*KW, N*OH*OW)


def col2im(xp, dcol, stride, H, W):
    """The adjoint of im2col: every entry of dcol added back to the pixel it came from.

    dcol (C, KH, KW, N, OH, OW) -> dx (C, N, H, W). One strided add per kernel offset:
    the windows overlap, so one operation cannot write them all.
    """
    C, KH, KW, N, OH, OW = dcol.shape
    dx = xp.zeros((C, N, H, W), dtype=dcol.dtype)                        # (C, N, H, W)
    for i in range(KH):
        for j in range(KW):
            dx[:, :, i:i + stride * OH:stride, j:j + stride * OW:stride] += dcol[:, i, j]
    return dx


class Conv2D(Layer):
    """Convolution by im2col and one GEMM (§3, Figure 2).

        y[f, n, oh, ow] = b[f] + sum_{c, i, j} W[f, c, i, j] * x_pad[c, n, s*oh + i, s*ow + j]

    params: W (F, C, KH, KW), b (F,).  x (C, N, H, W) -> y (F, N, OH, OW).
    Forward: pad, unfold (``im2col``), one GEMM of W as (F, C*KH*KW) with col.
    Backward: dW = dy col^T, db = dy summed, dcol = W^T dy folded back (``col2im``).
    col, the largest array of the net, is not kept: backward unfolds x again.
    Reference: ``tests/references.py: conv_reference``; tests: ``tests/test_layers.py: test_conv_*``.
    """

    def __init__(self, device, weight, bias, stride=1, pad=0, input_grad=True):
        super().__init__(device, W=weight, b=bias)
        self.stride, self.pad = stride, pad
        self.input_grad = input_grad  # conv1 needs no gradient for the image

    def output_shape(self, H, W):
        """(OH, OW) for an H x W input."""
        KH, KW = self.params["W"].shape[2:]
        return (conv_output_size(H, KH, self.stride, self.pad),
                conv_output_size(W, KW, self.stride, self.pad))

    def unfold(self, x):
        """x (C, N, H, W) -> col (C*KH*KW, N*OH*OW): zero-padded by ``pad``, then unfolded."""
        p, (KH, KW) = self.pad, self.params["W"].shape[2:]
        x_pad = self.device.xp.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))     # (C, N, H+2p, W+2p)
        return im2col(self.device.xp, x_pad, KH, KW, self.stride)          # (C*KH*KW, N*OH*OW)

    def forward(self, x, train=False):
        W, b = self.params["W"], self.params["b"]
        F, C = W.shape[:2]
        if x.shape[0] != C:
            raise ValueError(f"Conv2D expects {C} input channels in layout (C, N, H, W), got shape {x.shape}")
        OH, OW = self.output_shape(x.shape[2], x.shape[3])
        col = self.unfold(x)                                                # (C*KH*KW, N*OH*OW)
        y = W.reshape(F, -1) @ col                                          # (F, N*OH*OW)
        y += b[:, None]
        self.x = x                                                          # (C, N, H, W), for backward
        return y.reshape(F, x.shape[1], OH, OW)                             # (F, N, OH, OW)

    def backward(self, dy):
        W, p = self.params["W"], self.pad
        F, C, KH, KW = W.shape
        C, N, H, Wd = self.kept(self.x).shape
        dy2 = dy.reshape(F, -1)                                             # (F, N*OH*OW)
        self.grads["b"][...] = dy2.sum(axis=1)                              # (F,)
        self.grads["W"][...] = (dy2 @ self.unfold(self.x).T).reshape(W.shape)   # (F, C, KH, KW)
        if not self.input_grad:
            return None
        dcol = W.reshape(F, -1).T @ dy2                                     # (C*KH*KW, N*OH*OW)
        dcol = dcol.reshape(C, KH, KW, N, dy.shape[2], dy.shape[3])         # (C, KH, KW, N, OH, OW)
        dx_pad = col2im(self.device.xp, dcol, self.stride, H + 2 * p, Wd + 2 * p)   # (C, N, H+2p, W+2p)
        return dx_pad[:, :, p:p + H, p:p + Wd].copy()                       # (C, N, H, W)


# --------------------------------------------------------------------------- elementwise

class ReLU(Layer):
    """f(x) = max(0, x) (§3.1); its gradient passes dy where the output is positive. x, y: any shape.
    Tests: ``tests/test_layers.py: test_relu_forward_and_gradient``."""

    def __init__(self, device):
        super().__init__(device)

    def forward(self, x, train=False):
        self.y = self.device.xp.maximum(x, 0)             # same shape as x
        return self.y

    def backward(self, dy):
        return dy * (self.kept(self.y) > 0)              # same shape as dy


class Tanh(Layer):
    """f(x) = tanh(x), the saturating non-linearity §3.1 compares ReLU with (Figure 1).
    Backward: f'(x) = 1 - tanh(x)^2 = 1 - y^2, from the kept output. x, y: any shape.
    Tests: ``tests/test_switches.py`` (against finite differences)."""

    def __init__(self, device):
        super().__init__(device)

    def forward(self, x, train=False):
        self.y = self.device.xp.tanh(x)                   # same shape as x
        return self.y

    def backward(self, dy):
        y = self.kept(self.y)
        return dy * (1 - y * y)                          # same shape as dy


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
    same bits on NumPy and on any GPU, on any number of ranks, and after a resume. A test
    may pass ``mask``. Tests: ``tests/test_layers.py: test_dropout_*``.
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
        z = counter_rng.bits64(self.device.xp, counter_rng.stream_key(*self.key, step), first * D, N * D)  # (N*D,)
        return (z >= counter_rng.below_threshold(self.p)).reshape(N, D)   # (N, D)

    def forward(self, x, train=False, mask=None):
        if not train:
            self.mask = None
            return x * x.dtype.type(self.test_scale)         # (N, D)
        if mask is None:
            mask = self.draw_mask(x.shape)                   # (N, D) True = kept
        self.mask = mask.astype(x.dtype)                     # (N, D) 0 or 1
        if self.train_scale != 1.0:
            self.mask *= x.dtype.type(self.train_scale)      # 0 or 1/(1-p)
        return x * self.mask                                 # (N, D)

    def backward(self, dy):
        if self.mask is None:  # after a test-time forward
            return dy * dy.dtype.type(self.test_scale)       # (N, D)
        return dy * self.mask                                # (N, D)


# --------------------------------------------------------------------------- normalisation

class LocalResponseNorm(Layer):
    """Local response normalisation across channels (§3.3).

        b[i] = a[i] / s[i]^beta,   s[i] = k + coef * sum_{j=max(0, i-n/2)}^{min(C-1, i+n/2)} a[j]^2

    with coef = alpha (the printed formula) or alpha / n (cuda-convnet, Caffe, PyTorch),
    chosen by ``alpha_over_n``. x, y (C, N, H, W): the channel axis is axis 0.
    Backward (the window is symmetric, so the j whose window holds i are i's window):
        dL/da[i] = dy[i] s[i]^-beta - 2 beta coef a[i] sum_{j: |i-j| <= n/2} dy[j] a[j] s[j]^-beta / s[j]
    The window sums are shifted slices: channel i receives i - d and i + d, d = 1 .. n/2.
    Reference: ``tests/references.py: lrn_reference``; tests: ``tests/test_layers.py: test_lrn_*``.
    """

    def __init__(self, device, size=5, k=2.0, alpha=1e-4, beta=0.75, alpha_over_n=False):
        super().__init__(device)
        self.size, self.k, self.beta = size, k, beta
        self.coef = alpha / size if alpha_over_n else alpha

    def window_sum(self, a):
        """a (C, ...) -> (C, ...): the sum of a over each channel's window, clipped at the edges."""
        total = a.copy()                                          # (C, ...)
        for d in range(1, self.size // 2 + 1):
            total[d:] += a[:-d]                                   # channel i receives i - d
            total[:-d] += a[d:]                                   # channel i receives i + d
        return total

    def forward(self, x, train=False):
        dtype = x.dtype.type
        self.s = dtype(self.k) + dtype(self.coef) * self.window_sum(x * x)   # (C, N, H, W): the scale s
        self.x = x                                                # (C, N, H, W), for backward
        return x * self.s ** dtype(-self.beta)                    # (C, N, H, W): b

    def backward(self, dy):
        dtype = dy.dtype.type
        x, s = self.kept(self.x), self.s                          # (C, N, H, W) each
        s_beta = s ** dtype(-self.beta)                           # (C, N, H, W): s^-beta
        window = self.window_sum(dy * x * s_beta / s)             # (C, N, H, W)
        return dy * s_beta - dtype(2 * self.beta * self.coef) * x * window   # (C, N, H, W)


class ChannelSlice(Layer):
    """Channels ``start:stop`` of a (C, N, H, W) map: a tower's own part of a map it holds whole
    (Caffe's LRN across all of conv1's maps, ``Config.lrn_across_towers``).
    x (C, N, H, W) -> y (stop - start, N, H, W). Backward: dy in its channels, zeros elsewhere."""

    def __init__(self, device, start, stop):
        super().__init__(device)
        self.start, self.stop = start, stop

    def forward(self, x, train=False):
        self.shape, self.dtype = x.shape, x.dtype                 # (C, N, H, W)
        return x[self.start:self.stop].copy()                     # (stop - start, N, H, W)

    def backward(self, dy):
        dx = self.device.xp.zeros(self.shape, dtype=self.dtype)   # (C, N, H, W)
        dx[self.start:self.stop] = dy
        return dx


# --------------------------------------------------------------------------- pooling

class MaxPool(Layer):
    """Overlapping max pooling (§3.4): windows of ``size`` x ``size`` every ``stride`` pixels.

        y[c, n, oh, ow] = max_{i, j < size} x[c, n, s*oh + i, s*ow + j]

    x (C, N, H, W) -> y (C, N, OH, OW), OH = floor((H - size) / stride) + 1 (rows and
    columns past the last whole window get no gradient). Forward goes over the size^2
    offsets (i, j) of the window, each a strided view of x, keeping the running maximum and
    the offset that won (``winner``; on a tie the first in row-major order, as PyTorch and
    Caffe). Backward sends each gradient to its winner: one strided add per offset.
    Reference: ``tests/references.py: maxpool_reference``; tests: ``tests/test_layers.py: test_maxpool_*``.
    """

    def __init__(self, device, size=3, stride=2):
        super().__init__(device)
        self.size, self.stride = size, stride

    def output_size(self, size):
        return pool_output_size(size, self.size, self.stride)

    def offset(self, a, k, OH, OW):
        """The view a[:, :, i + s*oh, j + s*ow] of offset k = (i, j) = divmod(k, size): (C, N, OH, OW)."""
        (i, j), s = divmod(k, self.size), self.stride
        return a[:, :, i:i + s * (OH - 1) + 1:s, j:j + s * (OW - 1) + 1:s]

    def forward(self, x, train=False):
        xp = self.device.xp
        OH, OW = self.output_size(x.shape[2]), self.output_size(x.shape[3])
        y = self.offset(x, 0, OH, OW).copy()                       # (C, N, OH, OW): the running maximum
        self.winner = xp.zeros(y.shape, dtype=xp.uint8)            # (C, N, OH, OW): the offset that won
        for k in range(1, self.size * self.size):
            candidate = self.offset(x, k, OH, OW)                  # (C, N, OH, OW), a view
            better = candidate > y                                 # (C, N, OH, OW); strict: the first maximum stays
            xp.copyto(y, candidate, where=better)
            xp.copyto(self.winner, k, where=better)
        self.x_shape = x.shape                                     # (C, N, H, W)
        return y

    def backward(self, dy):
        xp, winner = self.device.xp, self.kept(self.winner)
        dx = xp.zeros(self.x_shape, dtype=dy.dtype)                # (C, N, H, W)
        for k in range(self.size * self.size):
            at_k = self.offset(dx, k, dy.shape[2], dy.shape[3])    # (C, N, OH, OW), a view of dx
            at_k += dy * (winner == k)
        return dx


# --------------------------------------------------------------------------- layout, fc, loss

class Flatten(Layer):
    """(C, N, H, W) -> (N, C*H*W), each example's features in (C, H, W) order."""

    def __init__(self, device):
        super().__init__(device)

    def forward(self, x, train=False):
        self.x_shape = x.shape
        C, N, H, W = x.shape
        return x.transpose(1, 0, 2, 3).copy().reshape(N, C * H * W)        # (N, C*H*W), one copy

    def backward(self, dy):
        C, N, H, W = self.x_shape
        return dy.reshape(N, C, H, W).transpose(1, 0, 2, 3).copy()         # (C, N, H, W)


class Linear(Layer):
    """Fully connected layer (§3): y = x W^T + b. params W (K, D), b (K,); x (N, D) -> y (N, K).
    Backward: dW = dy^T x, db = dy summed over the batch, dx = dy W.
    Tests: ``tests/test_layers.py: test_linear_gradients``."""

    def __init__(self, device, weight, bias):
        super().__init__(device, W=weight, b=bias)

    def forward(self, x, train=False):
        if x.ndim != 2 or x.shape[1] != self.params["W"].shape[1]:
            raise ValueError(f"Linear expects (N, {self.params['W'].shape[1]}), got {x.shape}")
        self.x = x                                                 # (N, D), for backward
        return x @ self.params["W"].T + self.params["b"]           # (N, K)

    def backward(self, dy):
        self.grads["W"][...] = dy.T @ self.kept(self.x)            # (K, D)
        self.grads["b"][...] = dy.sum(axis=0)                      # (K,)
        return dy @ self.params["W"]                               # (N, D)


class SoftmaxCrossEntropy(Layer):
    """The multinomial logistic regression objective (§3), averaged over the batch.

        p = softmax(z),  L = -(1/B) sum_n log p[n, y_n],  dL/dz = (p - onehot(y)) / B
    Stable: log p = z - max(z) - log(sum(exp(z - max(z)))). logits (N, K), labels (N,).
    B = N, or ``total``: the global batch when these N rows are one rank's part of it (the
    ranks' losses and gradients then add up to those of the whole batch).
    Reference: ``tests/references.py: cross_entropy_reference``.
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
