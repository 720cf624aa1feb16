"""Winograd's F(2x2, 3x3) (alexnet_np/nn/winograd.py): its tables against the matrices of
Lavin and Gray, and the convolution layer that uses it against the loop reference and
finite differences in float64, and against im2col in float32."""
import numpy as np
import pytest

from alexnet_np.nn import winograd
from alexnet_np.nn.backend import GPU, Device
from alexnet_np.nn.fast import FastConv2D as Conv2D
from alexnet_np.nn.memory import blocks
from gradcheck import assert_close
from gradcheck import check_layer_gradients
from references import conv_reference

# The matrices as Lavin and Gray print them (their section 4.1).
B_T = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=float)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
A_T = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=float)


def as_matrix(table, columns):
    """A table of (sign, index) terms, one row each, as a matrix."""
    matrix = np.zeros((len(table), columns))
    for row, terms in enumerate(table):
        for sign, index in terms:
            matrix[row, index] += sign
    return matrix


def test_the_tables_are_the_papers_matrices():
    assert np.array_equal(as_matrix(winograd.B_T, 4), B_T)
    assert np.array_equal(as_matrix(winograd.A_T, 4), A_T)
    assert np.array_equal(as_matrix(winograd.A, 2), A_T.T)
    assert np.array_equal(np.array(winograd.G), G)


def test_one_tile_is_the_correlation_of_its_input_with_the_kernel():
    # Y = A^T [(G g G^T) * (B^T d B)] A is the 2 x 2 "valid" correlation of a 4 x 4 d with g
    r = np.random.default_rng(0)
    d, g = r.standard_normal((4, 4)), r.standard_normal((3, 3))
    Y = A_T @ ((G @ g @ G.T) * (B_T @ d @ B_T.T)) @ A_T.T
    direct = np.array([[np.sum(d[i:i + 3, j:j + 3] * g) for j in range(2)] for i in range(2)])
    assert_close(Y, direct, rtol=1e-13, what="F(2x2, 3x3)")


def test_the_turned_kernels_transforms_come_from_the_kernels():
    r = np.random.default_rng(4)
    W = r.standard_normal((3, 2, 3, 3))
    U = winograd.transform_filters(np, W, np.empty((4, 4, 3, 2)))
    direct = winograd.transform_filters(np, W[:, :, ::-1, ::-1].transpose(1, 0, 2, 3).copy(), np.empty((4, 4, 2, 3)))
    assert_close(winograd.turned_filters(U, np.empty((4, 4, 2, 3))), direct, rtol=1e-14, what="turned")


WINOGRAD_CASES = [
    # (C, N, H, W, F, pad)
    (6, 2, 13, 13, 4, 1),   # conv3-conv5: 13 x 13 (odd: the last tiles hang over), pad 1
    (3, 2, 8, 9, 5, 1),     # non-square, even and odd
    (4, 1, 7, 6, 3, 0),     # no padding
    (2, 3, 5, 4, 2, 2),     # pad 2: the output is larger than the input
]


@pytest.mark.parametrize("C,N,H,W,F,pad", WINOGRAD_CASES)
def test_winograd_conv_matches_loops_and_gradients(C, N, H, W, F, pad):
    r = np.random.default_rng(1)
    x = r.standard_normal((C, N, H, W))
    weight, bias = r.standard_normal((F, C, 3, 3)) * 0.3, r.standard_normal(F)
    conv = Conv2D(Device(), weight, bias, stride=1, pad=pad)
    assert conv.winograd
    assert_close(conv.forward(x), conv_reference(x, weight, bias, 1, pad), rtol=1e-12, what="winograd conv")
    check_layer_gradients(conv, x)


@pytest.mark.parametrize("block_elements", [None, 700])
def test_winograd_in_batch_chunks_and_channel_blocks(block_elements):
    # three chunks of the batch (2, 2, 1 images); with 700, the transforms go a channel
    # (input: 640 entries a channel) or two (output: 320) at a time, the last block shorter
    r = np.random.default_rng(2)
    x = r.standard_normal((3, 5, 9, 8))
    weight, bias = r.standard_normal((4, 3, 3, 3)), r.standard_normal(4)
    device = Device()
    device.few_filters_col_elements = 2 * 16 * (3 + 4) * 5 * 4   # two images' tiles: 3 chunks
    device.block_elements = block_elements
    conv = Conv2D(device, weight, bias, stride=1, pad=1)
    assert conv.winograd and len(conv._chunks(x)) == 3
    if block_elements:
        assert blocks(3, 640, 700) == [(0, 1), (1, 2), (2, 3)]
        assert blocks(5, 320, 700) == [(0, 2), (2, 4), (4, 5)]
    assert_close(conv.forward(x), conv_reference(x, weight, bias, 1, 1), rtol=1e-12, what="chunked winograd")
    check_layer_gradients(conv, x)


def test_winograd_and_im2col_agree_in_float32_on_conv3():
    # conv3 of one tower at batch 2 (256 -> 192 channels, 13 x 13): the float32 results of the
    # two ways stay as close to the float64 truth as each other's rounding allows
    r = np.random.default_rng(3)
    x = r.standard_normal((256, 2, 13, 13)).astype(np.float32)
    weight = (r.standard_normal((192, 256, 3, 3)) * 0.02).astype(np.float32)
    dy = r.standard_normal((192, 2, 13, 13)).astype(np.float32)
    results = {}
    for dtype in (np.float32, np.float64):
        for by_winograd in (False, True):
            conv = Conv2D(Device(), weight.astype(dtype), np.zeros(192, dtype), stride=1, pad=1)
            conv.winograd = by_winograd
            y = conv.forward(x.astype(dtype)).copy()
            dx = conv.backward(dy.astype(dtype)).copy()
            results[dtype, by_winograd] = y, dx, conv.grads["W"].copy()
    for name, truth, im2col, fast in zip(("y", "dx", "dW"), results[np.float64, False],
                                         results[np.float32, False], results[np.float32, True]):
        assert_close(results[np.float64, True][("y", "dx", "dW").index(name)], truth, rtol=1e-12,
                     what=f"{name} in float64")
        scale = np.abs(truth).max()
        error_im2col, error_fast = np.abs(im2col - truth).max() / scale, np.abs(fast - truth).max() / scale
        assert error_fast < max(4 * error_im2col, 1e-6), (name, error_fast, error_im2col)


def test_winograd_is_the_cpus_way_for_3x3_at_stride_1_only():
    def uses(device, C, F, K, stride, pad):
        return Conv2D(device, np.zeros((F, C, K, K)), np.zeros(F), stride=stride, pad=pad).winograd
    cpu = Device()
    assert uses(cpu, 256, 192, 3, 1, 1) and uses(cpu, 192, 128, 3, 1, 1)   # conv3, conv5
    assert not uses(cpu, 3, 48, 11, 4, 0) and not uses(cpu, 48, 128, 5, 1, 2)   # conv1, conv2
    assert not uses(cpu, 4, 4, 3, 2, 1) and not uses(cpu, 4, 4, 3, 1, 3)    # strided; pad > 2
    assert Device.winograd and not GPU.winograd                             # a GPU keeps im2col
