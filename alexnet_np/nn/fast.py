"""The fast forms of the layers, beside the plain ones (``layers.py``) and tested equal to them.

Dimensions: as ``layers.py`` (C, N, H, W maps; F filters; KH, KW kernels; OH, OW outputs).

Each class here is a subclass of its plain form and opens with "plain form: ...; this adds:
...". What they add is speed alone, measured in docs/speed.md:

- reused memory instead of fresh arrays (``memory.DeviceMemory``): a layer's own buffers
  for what backward needs (``FastLayer.buffer``), the device's two output buffers for what
  the next layer consumes at once (valid until two more outputs are taken on the device),
  and a workspace for the temporaries of one call (``with memory.workspace():``). An
  output of these layers is overwritten later: copy it to keep it (``memory.is_output``);
- ``infer``: the test-time forward that keeps nothing for backward;
- the convolution a chunk of the batch at a time (the unfolded input in the workspace),
  the input gradient of stride-1 layers as the turned convolution, and conv3-conv5 by
  Winograd's F(2x2, 3x3) on the CPU (``winograd.py``);
- LRN's window sums by one reduction over a window view, pooling separably;
- the parameters packed end to end, and the SGD update over them in cache-sized pieces
  (``PackedSGD``, ``flat.FlatParameters``).

Tests: ``tests/test_fast.py`` (each against its plain form, forward and backward, float64,
odd sizes), ``tests/test_winograd.py``, ``tests/test_memory.py``.
"""
import math

import numpy as np

from . import winograd
from .layers import (ChannelSlice, Conv2D, Linear, LocalResponseNorm, MaxPool, ReLU, Tanh,
                     conv_output_size, windows)
from .optim import SGD


class FastLayer:
    """Mixed into a fast form: arrays of the layer's own, reused from call to call."""

    def buffer(self, name, shape, dtype):
        """An array of this layer's, reused from call to call; contents undefined."""
        buffers = self.__dict__.setdefault("_buffers", {})   # name -> array
        array = buffers.get(name)
        if array is None or array.shape != tuple(shape) or array.dtype != dtype:
            with self.device:
                array = buffers[name] = self.device.xp.empty(shape, dtype=dtype)
        return array


# --------------------------------------------------------------------------- convolution

def im2col_into(xp, x, KH, KW, stride, col):
    """``layers.im2col`` into ``col`` (C, KH, KW, N, OH, OW), given; returns col viewed as
    (C*KH*KW, N*OH*OW)."""
    C, KH, KW, N, OH, OW = col.shape
    col[...] = windows(xp, x, KH, KW, stride, OH, OW)
    return col.reshape(C * KH * KW, N * OH * OW)


def col2im_into(dcol, stride, dx):
    """``layers.col2im`` into ``dx`` (C, N, H, W), zeroed by the caller."""
    _, KH, KW, _, OH, OW = dcol.shape
    for i in range(KH):
        for j in range(KW):
            window = dx[:, :, i:i + stride * OH:stride, j:j + stride * OW:stride]  # (C, N, OH, OW), a view
            window += dcol[:, i, j]  # in place on the view: one operation
    return dx


def pad_spatial(x, pad_h, pad_w, out):
    """``x`` (C, N, H, W) with zeros around H and W, written into ``out`` (C, N, H+2ph, W+2pw)."""
    H, W = x.shape[2], x.shape[3]
    out.fill(0)
    out[:, :, pad_h:pad_h + H, pad_w:pad_w + W] = x
    return out


class FastConv2D(FastLayer, Conv2D):
    """plain form: ``layers.Conv2D`` (im2col, one GEMM, col2im); this adds: the batch a chunk
    at a time (the unfolded input in the device's workspace, at most ``device.col_elements``
    entries, ``device.few_filters_col_elements`` below 64 filters, so that conv1 on the CPU
    goes an image at a time), the output in the device's output buffers, the input gradient
    of a stride-1 layer with F <= C as one convolution of dy with the turned kernels,

        dx[c] = sum_{f, i, j} W[f, c, KH-1-i, KW-1-j] dy_pad[f, n, h + i, w + j]   (pad K - 1 - pad),

    and, where the device asks for it (``device.winograd``: the CPU), 3 x 3 kernels at
    stride 1 (conv3-conv5) by Winograd's F(2x2, 3x3) (``winograd.py``) for forward, the input
    gradient and the weights' gradient. Faster because the unfold stays in the cache, the
    turned convolution needs no col2im, and Winograd does 1.94x fewer multiply-adds
    (docs/speed.md). Tests: ``tests/test_fast.py``, ``tests/test_winograd.py``.
    """

    MANY_FILTERS = 64   # below: the device's chunks for few filters (``_chunks``)

    def __init__(self, device, weight, bias, stride=1, pad=0, input_grad=True):
        super().__init__(device, weight, bias, stride, pad, input_grad)
        F, C, KH, KW = self.params["W"].shape
        self.input_grad_by_convolution = stride == 1 and F <= C and pad <= min(KH, KW) - 1
        self.winograd = device.winograd and (KH, KW) == (3, 3) and stride == 1 and pad <= 2

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
        return im2col_into(self.device.xp, x, KH, KW, stride, col)

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
                    # dW = sum over the chunks of dy2 col^T, computed as (col dy2^T)^T: the
                    # orientation OpenBLAS runs faster when n*OH*OW is long and F small (docs/speed.md).
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
                        col2im_into(dcol.reshape(C, KH, KW, n1 - n0, OH, OW), self.stride, dx_pad[:, n0:n1])
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

class FastReLU(FastLayer, ReLU):
    """plain form: ``layers.ReLU``; this adds: the output in the layer's own buffer (kept for
    backward), the input gradient in the device's output buffers, and ``infer``."""

    def forward(self, x, train=False):
        self.y = self.device.xp.maximum(x, 0, out=self.buffer("y", x.shape, x.dtype))  # same shape as x
        return self.y

    def infer(self, x):
        self.y = None   # nothing kept: the output goes to an output buffer, not the layer's own
        return self.device.xp.maximum(x, 0, out=self.device.memory.output(x.shape, x.dtype))

    def backward(self, dy):
        y = self.kept(self.y)
        return self.device.xp.multiply(dy, y > 0, out=self.device.memory.output(dy.shape, dy.dtype))


class FastTanh(FastLayer, Tanh):
    """plain form: ``layers.Tanh``; this adds: reused memory, as ``FastReLU``."""

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


# --------------------------------------------------------------------------- normalisation

class FastLocalResponseNorm(FastLayer, LocalResponseNorm):
    """plain form: ``layers.LocalResponseNorm`` (window sums by shifted slices); this adds: the
    window sums as one reduction over a window view of the zero-padded channels, s^-beta kept
    from forward for backward (1/s from it by a cube root for beta = 3/4), reused memory and
    ``infer``. Faster because it makes fewer passes over the maps (docs/speed.md)."""

    def padded_channels(self, shape, dtype):
        """(padded, inner): a temporary (C + 2 h, N, H, W) whose h channels at either end are
        zero, h = n/2, and the view of its C channels in between, to be written by the caller."""
        half, C = self.size // 2, shape[0]
        padded = self.device.memory.work((C + 2 * half,) + tuple(shape[1:]), dtype)
        padded[:half].fill(0)
        padded[C + half:].fill(0)
        return padded, padded[half:C + half]

    def window_sum_into(self, padded, total):
        """total[i] = sum of a over the channel window [i - n/2, i + n/2], clipped at the edges.

        padded (C + 2h, ...): a, between h zero channels at either end (``padded_channels``);
        total (C, ...), overwritten and returned. One reduction over a window view of the
        padded channels (as_strided): one operation where shifted adds are 2h + 1.
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
            scale = self.window_sum_into(padded, out)
        scale *= x.dtype.type(self.coef)
        scale += x.dtype.type(self.k)
        return scale

    def forward(self, x, train=False):
        # x and s^-beta are kept for backward, which then needs no squares, window sums or
        # power of its own, for one array of x's size a layer.
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
        p cbrt(p), p = s^-beta (a cube root is cheaper than a power)."""
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
            self.window_sum_into(padded, dx)
            dx *= x
            dx *= dtype(-2.0 * self.beta * self.coef)
            dx += direct                       # dy[i] s[i]^-beta
            return dx


class FastChannelSlice(FastLayer, ChannelSlice):
    """plain form: ``layers.ChannelSlice``; this adds: the output a view of the input, the
    gradient in the layer's own buffer."""

    def forward(self, x, train=False):
        self.shape, self.dtype = x.shape, x.dtype                   # (C, N, H, W)
        return x[self.start:self.stop]

    def backward(self, dy):
        dx = self.buffer("dx", self.shape, self.dtype)              # (C, N, H, W)
        dx.fill(0)
        dx[self.start:self.stop] = dy
        return dx


# --------------------------------------------------------------------------- pooling

class FastMaxPool(FastLayer, MaxPool):
    """plain form: ``layers.MaxPool`` (size^2 offsets, one winner); this adds: the window done
    separably, the maximum over its ``size`` rows of the maximum over its ``size`` columns,
    with a winner at each stage (the first maximum at both, so the same winner as the plain
    form), the winners as counts of running maxima below the maximum, the gradient's first
    offsets written instead of added, reused memory and ``infer`` (the maxima only).
    Faster because it makes 2 * size passes where the plain form makes size^2 (docs/speed.md)."""

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


# --------------------------------------------------------------------------- fc

class FastLinear(Linear):
    """plain form: ``layers.Linear``; this adds: the product as (W x^T)^T (faster in OpenBLAS
    for a small batch, docs/speed.md), the gradients written in place by the GEMM, ``infer``."""

    def forward(self, x, train=False):
        y = self.infer(x)
        self.x = x                                           # (N, D), for backward
        return y

    def infer(self, x):
        self.x = None
        if x.ndim != 2 or x.shape[1] != self.params["W"].shape[1]:
            raise ValueError(f"Linear expects (N, {self.params['W'].shape[1]}), got {x.shape}")
        # (W x^T)^T: OpenBLAS runs this orientation faster for a small batch (docs/speed.md).
        # Made contiguous again (a copy of N*K entries): NumPy
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


# --------------------------------------------------------------------------- the update

class PackedSGD(SGD):
    """plain form: ``optim.SGD`` (§5's two lines, array by array); this adds: where the network
    has packed a device's parameters end to end (``flat``: ``model.flat``,
    ``flat.FlatParameters``) and they still hold its parameters and gradients, the velocity
    packed the same way and the update over the flat arrays, a few operations a device; and
    the update in pieces of at most ``device.update_elements`` entries with a temporary from
    the workspace, so that its passes meet in the cache. Faster because the update is
    memory-bound, and a GPU launches ten kernels a device instead of a few per array
    (docs/speed.md). Where ranks' gradient buckets replaced the gradients, array by array.
    Tests: ``tests/test_model.py``, ``tests/test_fast.py``.
    """

    def __init__(self, parameters, lr=0.01, momentum=0.9, weight_decay=0.0005, decay_biases=False, flat=()):
        self.packed = list(flat)
        super().__init__(parameters, lr, momentum, weight_decay, decay_biases)

    def zero_velocity(self):
        """The velocity of each device whose packed parameters are ours laid out as they are
        (``self.flat``: id(device) -> (FlatParameters, flat velocity)); the others array by array."""
        velocity, self.flat = {}, {}
        for packed in self.packed:
            if self.packs(packed):
                with packed.device:
                    flat = packed.device.xp.zeros_like(packed.weights)       # (E,)
                velocity.update(packed.lay_out(flat))
                self.flat[id(packed.device)] = (packed, flat)
        for name, w, _, device in self.parameters:
            if name not in velocity:
                with device:
                    velocity[name] = device.xp.zeros_like(w)                 # like w
        return velocity

    def packs(self, packed):
        """True when ``packed`` holds exactly our parameters (and gradients) of its device."""
        mine = {name: (w, dw) for name, w, dw, device in self.parameters if device is packed.device}
        if not packed.holds() or mine.keys() != packed.views.keys():
            return False
        return all(mine[name][0] is w and mine[name][1] is dw for name, (w, dw) in packed.views.items())

    def host_velocity(self):
        """{name: the momentum buffer on the host}: one copy a device of its packed velocity
        (one host synchronisation a device, not one an array)."""
        host = {}
        for packed, velocity in self.flat.values():
            host.update(packed.lay_out(np.array(packed.device.to_host(velocity))))
        return {name: host[name] if name in host else np.array(device.to_host(self.velocity[name]))
                for name, _, _, device in self.parameters}

    def update(self, device):
        """Update the parameters that live on ``device``: packed where they are, else array by array."""
        packed, velocity = self.flat.get(id(device), (None, None))
        if packed is not None and packed.holds():
            return self.update_packed(device, packed, velocity)
        for name, w, dw, owner in self.parameters:
            if owner is device:
                with device, device.memory.workspace():
                    for part in self.parts(device, w, dw, self.velocity[name]):
                        self.update_part(device.xp, *part, self.decay_of(name))

    def update_packed(self, device, packed, velocity):
        """The update over a device's flat arrays: the weights, then the biases (``packed``)."""
        split, size = packed.bias_start, packed.weights.size
        with device, device.memory.workspace():
            for start, stop, decay in ((0, split, self.weight_decay), (split, size, self.bias_decay)):
                if stop > start:
                    arrays = (packed.weights[start:stop], packed.grads[start:stop], velocity[start:stop])
                    for part in self.parts(device, *arrays):
                        self.update_part(device.xp, *part, decay)

    @staticmethod
    def parts(device, *arrays):
        """Flat views of ``arrays`` (one parameter's w, dw, v), in pieces of at most
        ``device.update_elements`` entries, each with a temporary ``step`` of its size."""
        size = arrays[0].size
        chunk = min(size, device.update_elements or size)
        if not all(a.flags.c_contiguous for a in arrays):
            raise ValueError("SGD updates contiguous parameter, gradient and momentum arrays only")
        flats = [a.reshape(-1) for a in arrays]                       # views: contiguous
        step = device.memory.work((chunk,), arrays[0].dtype)
        for start in range(0, size, chunk):
            stop = min(size, start + chunk)
            yield [flat[start:stop] for flat in flats] + [step[:stop - start]]

    def update_part(self, xp, w, dw, v, step, decay):
        """§5's two lines on one piece, in place; ``step`` is working memory of w's size."""
        dtype = w.dtype.type
        if decay:
            xp.multiply(w, dtype(decay), out=step)
            step += dw
            step *= dtype(self.lr)                                   # lr * (decay * w + dw)
        else:  # biases, by default: two array operations fewer
            xp.multiply(dw, dtype(self.lr), out=step)                # lr * dw
        v *= dtype(self.momentum)
        v -= step                                                    # v <- m v - decay lr w - lr dw
        w += v                                                       # w <- w + v
