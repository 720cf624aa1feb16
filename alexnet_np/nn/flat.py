"""Each device's parameters end to end in one flat array, and their gradients in another.

Then the SGD update (§5) is a few array operations a device instead of a few per parameter
array: on a GPU, where every operation is a kernel launch, the paper's net's update takes
20 launches a step instead of 150 (``benchmarks/bench.py --count-ops``).

Order on a device: every weight array, then every bias (the parameters named "b"), each
in the order the network gives (``LayerParameters.pack_parameters``: backward's, so that the
ranks' gradient buckets, ``parallel.buckets``, are consecutive ranges of the flat gradient).
Weight decay applies to the weights, and to the biases by choice (§5 leaves it open):
either way one range of the flat array. The layers' ``params`` and ``grads`` become views
into the flat arrays, so the layers, the optimiser and checkpoints see the same memory as
before.

Whoever gives a layer arrays of its own afterwards leaves the flat arrays behind: ``holds``
tells, and the optimiser then goes array by array.
"""
import numpy as np


class FlatParameters:
    """The parameters ``entries`` [(name, layer, key)] of one device, packed.

    weights (E,), grads (E,): the flat arrays; ``bias_start``: where the biases begin;
    ``views``: {name: (w, dw)}, the layers' arrays, as views into them.
    """

    def __init__(self, device, entries):
        entries = sorted(entries, key=lambda entry: entry[2] == "b")   # stable: weights first
        arrays = [layer.params[key] for _, layer, key in entries]
        dtypes = {a.dtype for a in arrays}
        if len(dtypes) != 1:
            raise ValueError(f"parameters of one device must share a dtype to be packed, got {dtypes}")
        self.device, self.entries = device, [(layer, key) for _, layer, key in entries]
        self.shapes = {name: layer.params[key].shape for name, layer, key in entries}
        sizes = [int(a.size) for a in arrays]
        self.bias_start = sum(size for size, (_, _, key) in zip(sizes, entries) if key != "b")
        with device:
            self.weights = device.xp.empty(sum(sizes), dtype=arrays[0].dtype)   # (E,)
            self.grads = device.xp.zeros(sum(sizes), dtype=arrays[0].dtype)     # (E,)
            weights, grads = self.lay_out(self.weights), self.lay_out(self.grads)
            for name, layer, key in entries:
                weights[name][...] = layer.params[key]    # the gradients are zero: nothing to copy
                layer.params[key], layer.grads[key] = weights[name], grads[name]
        self.views = {name: (weights[name], grads[name]) for name in self.shapes}

    def lay_out(self, flat):
        """{name: view of ``flat`` (E,)}: each parameter's place in the packed order."""
        views, offset = {}, 0
        for name, shape in self.shapes.items():
            size = int(np.prod(shape))
            views[name] = flat[offset:offset + size].reshape(shape)
            offset += size
        return views

    def holds(self):
        """True while every layer's parameter and gradient is still our view."""
        return self.grads is not None and self.holds_weights() and all(
            layer.grads.get(key) is dw for (layer, key), (_, dw) in zip(self.entries, self.views.values()))

    def holds_weights(self):
        """True while every layer's parameter is still our view (``weights`` is theirs)."""
        return all(layer.params[key] is w for (layer, key), (w, _) in zip(self.entries, self.views.values()))

    def drop_grads(self):
        """Forget the flat gradient (inference: the layers' grads are gone too)."""
        self.grads = None
        self.views = {name: (w, None) for name, (w, _) in self.views.items()}
