"""Stochastic gradient descent with momentum and weight decay, as §5 writes it.

    v <- momentum * v - weight_decay * lr * w - lr * dL/dw
    w <- w + v

The learning rate multiplies the weight decay (this differs from PyTorch's SGD, which
keeps lr outside the velocity: the two agree while lr is constant, and differ for a few
steps after each lr change). Whether biases are decayed is a choice the paper leaves open
(``decay_biases``; cuda-convnet decayed weights only). Every update is in place, on the
parameter's own device. This is the plain form; ``fast.PackedSGD`` beside it runs the same
update over a device's parameters packed end to end.
"""
import numpy as np

from .backend import SideBySide


class SGD:
    """§5's update of the parameters ``[(name, w, dw, device)]``, holding their momentum
    buffers ("velocity"), one array like each w. Tests: ``tests/test_model.py: test_sgd_*``."""

    def __init__(self, parameters, lr=0.01, momentum=0.9, weight_decay=0.0005, decay_biases=False):
        self.parameters = list(parameters)
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.decay_biases = decay_biases
        self.devices = list({id(device): device for _, _, _, device in self.parameters}.values())
        self.velocity = self.zero_velocity()                          # {name: v}, v like w
        self.side_by_side = SideBySide(self.devices)

    def zero_velocity(self):
        """{name: zeros like w} for every parameter, on its device."""
        velocity = {}
        for name, w, _, device in self.parameters:
            with device:
                velocity[name] = device.xp.zeros_like(w)              # like w
        return velocity

    @property
    def bias_decay(self):
        """The weight decay of the biases: the choice the paper leaves open (``decay_biases``)."""
        return self.weight_decay if self.decay_biases else 0.0

    def decay_of(self, name):
        """The weight decay applied to the parameter ``name`` (biases end in ".b")."""
        return self.bias_decay if name.endswith(".b") else self.weight_decay

    def step(self):
        """One update of every parameter from its gradient; the devices' CPU towers side by side."""
        self.side_by_side.run([lambda device=device: self.update(device) for device in self.devices])

    def update(self, device):
        """Update the parameters that live on ``device``, one array at a time."""
        for name, w, dw, owner in self.parameters:
            if owner is device:
                with device:
                    self.update_array(w, dw, self.velocity[name], self.decay_of(name))

    def update_array(self, w, dw, v, decay):
        """§5's two lines, in place on v and w."""
        v[...] = self.momentum * v - decay * self.lr * w - self.lr * dw   # like w
        w += v

    def state_dict(self):
        """The momentum buffers on the host, and the hyper-parameters."""
        return {"lr": self.lr, "momentum": self.momentum, "weight_decay": self.weight_decay,
                "decay_biases": self.decay_biases, "velocity": self.host_velocity()}

    def host_velocity(self):
        """{name: the momentum buffer on the host}, one copy per array."""
        return {name: np.array(device.to_host(self.velocity[name])) for name, _, _, device in self.parameters}

    def load_state_dict(self, state):
        self.lr, self.momentum = state["lr"], state["momentum"]
        self.weight_decay, self.decay_biases = state["weight_decay"], state["decay_biases"]
        for name, w, _, device in self.parameters:
            saved = state["velocity"].get(name)
            if saved is None or tuple(saved.shape) != tuple(w.shape):
                raise ValueError(f"optimiser state does not match parameter {name}")
            with device:
                self.velocity[name][...] = device.receive(np.asarray(saved, dtype=w.dtype))
