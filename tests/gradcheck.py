"""Centred finite differences in float64 (conventions 7), for the gradient tests.

Every check uses a random upstream gradient ``dout`` (never all ones): the scalar whose
derivative is checked is ``L(x) = sum(forward(x) * dout)``.
"""
import numpy as np


def numerical_gradient(loss, x, eps=1e-5):
    """dL/dx for every entry of ``x`` (float64, modified in place and restored)."""
    assert x.dtype == np.float64, "finite differences only in float64"
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        plus = loss()
        flat[i] = old - eps
        minus = loss()
        flat[i] = old
        gflat[i] = (plus - minus) / (2 * eps)
    return grad


def directional_derivative(loss, x, direction, eps=1e-5):
    """(L(x + eps d) - L(x - eps d)) / (2 eps): checks a large gradient along one direction."""
    old = x.copy()
    x += eps * direction
    plus = loss()
    x[...] = old - eps * direction
    minus = loss()
    x[...] = old
    return (plus - minus) / (2 * eps)


def assert_close(actual, expected, rtol=1e-6, atol=1e-9, what="", scale_atol=False):
    """Like np.testing.assert_allclose, with the worst entries in the message.

    ``scale_atol``: atol is relative to max |expected| (finite differences of a sum over
    many outputs carry round-off proportional to the largest gradient).
    """
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    err = np.abs(actual - expected)
    if scale_atol:
        atol = atol * max(1.0, float(np.abs(expected).max()))
    bound = atol + rtol * np.abs(expected)
    if np.all(err <= bound):
        return
    worst = np.argsort(-(err - bound).ravel())[:5]
    pairs = ", ".join(f"{actual.ravel()[i]:.8g} vs {expected.ravel()[i]:.8g}" for i in worst)
    raise AssertionError(f"{what}: max abs diff {err.max():.3g} (max |expected| "
                         f"{np.abs(expected).max():.3g}); worst: {pairs}")


def check_parameter_directions(net, loss, rel=1e-5):
    """Every parameter of ``net`` (its gradients already computed by ``net.backward()``)
    against the finite difference of ``loss`` along one random direction (conventions 7)."""
    import pytest
    r = np.random.default_rng(1)
    for name, w, dw, _ in net.parameters():
        direction = r.standard_normal(w.shape)
        numeric = directional_derivative(loss, w, direction, eps=1e-6)
        assert float(np.sum(dw * direction)) == pytest.approx(numeric, rel=rel, abs=1e-9), name


def check_layer_gradients(layer, x, seed=1, train=False, **forward_kw):
    """Compare a layer's dx and every parameter gradient with finite differences, for a
    random upstream gradient; the gradients start as NaN (backward must write them)."""
    dout = np.random.default_rng(seed).standard_normal(layer.forward(x, train, **forward_kw).shape)

    def loss():
        return float(np.sum(layer.forward(x, train, **forward_kw) * dout))

    layer.forward(x, train, **forward_kw)
    for g in layer.grads.values():
        g[...] = np.nan   # backward writes the gradients: what was there must not matter
    dx = layer.backward(dout)
    if dx is not None:
        dx = dx.copy()   # a fast form's may live in an output buffer that the forwards below reuse
        assert_close(dx, numerical_gradient(loss, x), rtol=1e-6, atol=1e-8, what="dx", scale_atol=True)
    for name, p in layer.params.items():
        assert_close(layer.grads[name], numerical_gradient(loss, p), rtol=1e-6, atol=1e-8, what=name,
                     scale_atol=True)
    return dx
