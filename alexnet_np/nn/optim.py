"""Stochastic gradient descent with momentum and weight decay, as §5 writes it.

    v <- momentum * v - weight_decay * lr * w - lr * dL/dw
    w <- w + v

The learning rate multiplies the weight decay (this differs from PyTorch's SGD, which
keeps lr outside the velocity: the two agree while lr is constant, and differ for a few
steps after each lr change). Whether biases are decayed is a choice the paper leaves open
(``decay_biases``; cuda-convnet decayed weights only). Every update is in place, on the
parameter's own device: four to six array operations per parameter array (one per
array and term; on a GPU, each a kernel launch), or, where the network has packed a device's
parameters into one flat array (``flat``), ten a device for all of them. On the CPU they
run over pieces of 2^18 entries (``Device.update_elements``), so that the six passes meet
in the cache: the update is memory-bound, and this made it 1.8x faster.
"""
import numpy as np

from .backend import SideBySide


class SGD:
    """Holds the momentum buffers ("velocity") of the parameters ``[(name, w, dw, device)]``.

    ``flat``: the network's packed parameters (``model.flat``, ``flat.FlatParameters``): where
    they still hold a device's parameters and gradients, that device's velocity is packed the
    same way and the update runs over the flat arrays, a few operations a device."""

    def __init__(self, parameters, lr=0.01, momentum=0.9, weight_decay=0.0005, decay_biases=False, flat=()):
        self.parameters = list(parameters)
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.decay_biases = decay_biases
        self.devices = list({id(device): device for _, _, _, device in self.parameters}.values())
        self.velocity, self.flat = {}, {}   # flat: id(device) -> (FlatParameters, flat velocity)
        for packed in flat:
            if self.packs(packed):
                self.flat[id(packed.device)] = (packed, self.packed_velocity(packed))
        for name, w, _, device in self.parameters:
            if name not in self.velocity:
                with device:
                    self.velocity[name] = device.xp.zeros_like(w)
        self.side_by_side = SideBySide(self.devices)

    def packs(self, packed):
        """True when ``packed`` holds exactly our parameters (and gradients) of its device."""
        mine = {name: (w, dw) for name, w, dw, device in self.parameters if device is packed.device}
        if not packed.holds() or mine.keys() != packed.views.keys():
            return False
        return all(mine[name][0] is w and mine[name][1] is dw for name, (w, dw) in packed.views.items())

    def packed_velocity(self, packed):
        """A zero velocity laid out as ``packed``'s weights; ``self.velocity`` gets its views."""
        with packed.device:
            flat = packed.device.xp.zeros_like(packed.weights)             # (E,)
        self.velocity.update(packed.lay_out(flat))
        return flat

    @property
    def bias_decay(self):
        """The weight decay of the biases: the choice the paper leaves open (``decay_biases``)."""
        return self.weight_decay if self.decay_biases else 0.0

    def decay_of(self, name):
        """The weight decay applied to the parameter ``name`` (biases end in ".b")."""
        return self.bias_decay if name.endswith(".b") else self.weight_decay

    def step(self):
        """One update of every parameter from its gradient (§5's two lines).

        The parameters of each device are updated together; CPU towers side by side."""
        self.side_by_side.run([lambda device=device: self.update(device) for device in self.devices])

    def update(self, device):
        """Update the parameters that live on ``device``."""
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

    def state_dict(self):
        """The momentum buffers on the host (one copy a device where they are packed), and
        the hyper-parameters."""
        host = {}
        for packed, velocity in self.flat.values():
            host.update(packed.lay_out(np.array(packed.device.to_host(velocity))))
        return {"lr": self.lr, "momentum": self.momentum, "weight_decay": self.weight_decay,
                "decay_biases": self.decay_biases,
                "velocity": {name: host[name] if name in host else np.array(device.to_host(self.velocity[name]))
                             for name, _, _, device in self.parameters}}

    def load_state_dict(self, state):
        self.lr, self.momentum = state["lr"], state["momentum"]
        self.weight_decay, self.decay_biases = state["weight_decay"], state["decay_biases"]
        for name, w, _, device in self.parameters:
            saved = state["velocity"].get(name)
            if saved is None or tuple(saved.shape) != tuple(w.shape):
                raise ValueError(f"optimiser state does not match parameter {name}")
            with device:
                self.velocity[name][...] = device.receive(np.asarray(saved, dtype=w.dtype))
