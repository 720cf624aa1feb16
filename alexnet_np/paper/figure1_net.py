"""Figure 1's network (§3.1): a four-layer convolutional net for 32x32 images (CIFAR-10).

Dimensions:
    N  batch    S  input size (32)    K  classes (10)

The paper: "A four-layer convolutional neural network with ReLUs (solid line) reaches a 25%
training error rate on CIFAR-10 six times faster than an equivalent network with tanh
neurons (dashed line). The learning rates for each network were chosen independently to
make training as fast as possible. No regularization of any kind was employed." The paper
does not print the net. This one has four learned layers in the style of the authors'
cuda-convnet CIFAR-10 examples (three 5x5 convolutions, then one fully connected layer):

    image (3, S, S)
    conv1 32 kernels 5x5 pad 2, activation, max-pool 3x3 stride 2    S=32: 32 -> 15
    conv2 32 kernels 5x5 pad 2, activation, max-pool 3x3 stride 2             15 -> 7
    conv3 64 kernels 5x5 pad 2, activation, max-pool 3x3 stride 2              7 -> 3
    fc    K units over all 64 x 3 x 3, softmax

The activation is ``config.activation`` (ReLU or tanh, the only difference between the two
arms of Figure 1); pooling follows ``config.pool_size`` / ``pool_stride`` (floor: windows
inside the map only). No LRN, no dropout, biases 0, weights N(0, config.init_std); the
training loop is the project's (``trainer.Trainer(..., model=Figure1Net(...))``), which
this class serves with AlexNet's interface: ``forward``, ``forward_loss``, ``backward``,
``parameters``, ``named_layers``, ``state_dict``, ``logits``.
"""
import numpy as np

from ..nn.backend import Device, move
from ..nn.layers import Flatten, SoftmaxCrossEntropy, pool_output_size
from ..nn.model import FAST, LayerParameters, activation_layer, init_bias, init_weight, layer_forms

CHANNELS = (32, 32, 64)   # conv1, conv2, conv3
KERNEL = 5


def figure1_sizes(config):
    """Spatial sizes after each pooling, asserted to leave a map (conventions 15)."""
    sizes, size = {}, config.input_size
    for name in ("pool1", "pool2", "pool3"):
        size = pool_output_size(size, config.pool_size, config.pool_stride, f"Figure 1 net, {name}")
        sizes[name] = size
    return sizes


class Figure1Net(LayerParameters):
    """The four-layer net of Figure 1 on one device (no towers, hence ``towers = ()``)."""

    towers = ()   # nothing split between devices

    def __init__(self, config, devices=None):
        device = (devices or [Device()])[0]
        self.config, self.devices, self.device = config, [device], device
        rng = np.random.default_rng(config.seed)  # initialisation only
        std, dt = config.init_std, config.dtype
        P3 = figure1_sizes(config)["pool3"]
        C1, C2, C3 = CHANNELS
        self.forms = forms = layer_forms(config, device)   # the plain layers or the fast ones, once

        def conv(in_ch, out_ch):
            return forms.conv(device, init_weight(rng, (out_ch, in_ch, KERNEL, KERNEL), std, dt),
                          init_bias(out_ch, 0.0, dt), pad=KERNEL // 2)

        def block(conv_layer):
            return [conv_layer, activation_layer(config, forms)(device),
                    forms.pool(device, config.pool_size, config.pool_stride)]

        self.conv1, self.conv2, self.conv3 = conv(3, C1), conv(C1, C2), conv(C2, C3)
        self.fc = forms.linear(device, init_weight(rng, (config.num_classes, C3 * P3 * P3), std, dt),
                         init_bias(config.num_classes, 0.0, dt))
        self.layers = block(self.conv1) + block(self.conv2) + block(self.conv3) + [Flatten(device), self.fc]
        self.loss_layer = SoftmaxCrossEntropy(device)
        if forms is FAST:
            self.pack_parameters()

    def infer(self, images):
        """Test-time logits, keeping nothing for backward (as ``AlexNet.infer``)."""
        return self.forward(images, train=False, infer=True)

    def forward(self, images, train=False, step=0, rows=None, infer=False):
        """images (N, 3, S, S) -> logits (N, K), a fresh array. ``step`` and ``rows`` (AlexNet's
        dropout positions) do not matter here: the net has no dropout."""
        if infer and train:
            raise ValueError("infer is the test-time forward: it cannot train")
        with self.device:
            x = self.device.xp.ascontiguousarray(move(images, self.device).transpose(1, 0, 2, 3),
                                                 dtype=self.config.dtype)    # (3, N, S, S)
            for layer in self.layers:
                x = layer.infer(x) if infer else layer.forward(x, train)
            self.fc7_features = x   # (N, K): the last layer's output (no fc7 here)
            return x

    def forward_loss(self, images, labels, train=True, step=0, rows=None):
        """The mean cross-entropy; with ``rows = (first, B)`` these rows' part of a batch of B."""
        self.logits = self.forward(images, train)
        with self.device:
            return self.loss_layer.forward(self.logits, move(labels, self.device), None if rows is None else rows[1])

    def backward(self, finished=None):
        """Gradients into every layer's ``grads``; ``finished`` (data-parallel buckets) is told
        at the end that every layer is done."""
        with self.device:
            d = self.loss_layer.backward()
            for layer in reversed(self.layers):
                d = layer.backward(d)
        if finished is not None:
            finished([name for name, _ in self.named_layers()])

    def named_layers(self):
        return [("conv1", self.conv1), ("conv2", self.conv2), ("conv3", self.conv3), ("fc", self.fc)]
