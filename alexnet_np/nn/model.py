"""The paper's network (§3, Figure 2): two towers that talk at conv3, fc6, fc7 and fc8.

Dimensions:
    N  batch    S  input size (227)    G  towers (2)    K  classes (1000)

Each tower holds half of the kernels of every layer on its own device. Within a tower,
conv1 -> conv2 and conv4 -> conv5 see only that tower's maps. At the four places where
Figure 2 draws lines between the GPUs, an ``Exchange`` gives every receiving tower the
concatenation of *all* towers' outputs, each moved with ``backend.move`` (a no-op when
both towers share a device). The forward pass is a straight list of those calls; the
backward pass is the same list read in reverse.

    image ─┬─ tower 0: conv1 relu lrn pool  conv2 relu lrn pool ─┐
           └─ tower 1: (the same, its own 48 and 128 kernels)   ─┴─ exchange3 ─┐
      tower g: conv3 relu  conv4 relu  conv5 relu pool  flatten  ── exchange6 ─┤
      tower g: fc6 relu dropout                                  ── exchange7 ─┤
      tower g: fc7 relu dropout                                  ── gather8 ───┘
      tower 0's device: fc8 -> softmax cross-entropy
"""
import collections

import numpy as np

from . import fast
from .backend import Device, SideBySide, crossing, move
from .flat import FlatParameters
from ..config import ConfigError
from .layers import (ChannelSlice, Conv2D, Dropout, Flatten, Linear, LocalResponseNorm,
                     MaxPool, ReLU, SoftmaxCrossEntropy, Tanh, conv_output_size, pool_output_size)
from .optim import SGD

# The classes a net is built from: the plain forms (layers.py) or the fast ones beside them
# (fast.py), chosen once, when the net is built (``layer_form``). Dropout, Flatten and the
# loss have one form.
Forms = collections.namedtuple("Forms", "conv relu tanh lrn pool linear channel_slice")
PLAIN = Forms(Conv2D, ReLU, Tanh, LocalResponseNorm, MaxPool, Linear, ChannelSlice)
FAST = Forms(fast.FastConv2D, fast.FastReLU, fast.FastTanh, fast.FastLocalResponseNorm, fast.FastMaxPool,
             fast.FastLinear, fast.FastChannelSlice)

# ``layer_form`` "auto": the forms measured fastest on each kind of device (docs/speed.md,
# docs/design.md): the CPU the fast ones; a GPU the fast ones too, for their fewer kernel
# launches (``benchmarks/bench.py --count-ops``).
FASTEST = {"cpu": FAST, "gpu": FAST}


def layer_forms(config, device):
    """The ``Forms`` of a net of ``config`` whose first tower is on ``device``: ``config.layer_form``,
    "plain" or "fast", or for "auto" the fastest on the device's kind (``FASTEST``)."""
    if config.layer_form == "auto":
        return FASTEST[device.kind]
    return FAST if config.layer_form == "fast" else PLAIN


def activation_layer(config, forms):
    """The class of config.activation (§3.1): ReLU, or tanh (Figure 1's comparison)."""
    return forms.relu if config.activation == "relu" else forms.tanh

DROPOUT_STREAM = 0xD0  # keeps the dropout masks' generators apart from other users of the seed


def pooled_size(size, size_z, stride, what):
    """A pooling layer's output size in Figure 2's net (conventions 15).

    Overlapping windows (§3.4's 3x3 at stride 2) must cover the map exactly, as they do from
    227 (55 -> 27 -> 13 -> 6): ``(size - z)`` must divide by the stride. Windows that do not
    overlap (the 2x2, stride 2 comparison) cannot tile an odd map: the last row and column
    are left out (floor), which gives the paper's 27, 13 and 6 from 55.
    """
    if stride < size_z and size >= size_z and (size - size_z) % stride:
        raise ValueError(f"{what}: input size {size} with overlapping {size_z}x{size_z} windows at stride "
                         f"{stride} does not fit: (size - {size_z}) = {size - size_z} must divide by the stride")
    return pool_output_size(size, size_z, stride, what)


def layer_sizes(config):
    """Spatial sizes after each stage, asserted to fit (conventions 15). Returns a dict."""
    S = config.input_size
    z, s = config.pool_size, config.pool_stride
    conv1 = conv_output_size(S, 11, 4, 0, "conv1 (11x11, stride 4) on the input image")
    pool1 = pooled_size(conv1, z, s, f"pool1 ({z}x{z}, stride {s})")
    pool2 = pooled_size(pool1, z, s, f"pool2 ({z}x{z}, stride {s})")  # conv2 keeps the size (pad 2)
    pool5 = pooled_size(pool2, z, s, f"pool5 ({z}x{z}, stride {s})")  # conv3-5 keep it (pad 1)
    return {"input": S, "conv1": conv1, "pool1": pool1, "conv2": pool1,
            "pool2": pool2, "conv3": pool2, "pool5": pool5}


def init_weight(rng, shape, std, dtype):
    """Weights ~ N(0, std) (§5), drawn on the host so every device layout gets the same net."""
    return (rng.standard_normal(shape, dtype=np.float64) * std).astype(dtype)


def init_bias(count, value, dtype):
    """Biases: 1 in conv2, conv4, conv5, fc6, fc7 ("accelerates the early stages"); 0 elsewhere (§5)."""
    return np.full(count, value, dtype=dtype)


class Tower:
    """One GPU's half of the net (§3.2): ``G``-th of every layer's kernels, on ``device``."""

    def __init__(self, config, index, device, rng, forms=PLAIN):
        c, G = config, config.towers
        self.index, self.device = index, device
        C1, C2, C3, C4, C5 = (n // G for n in c.conv_channels)
        F6, F7 = (n // G for n in c.fc_units)
        P5 = layer_sizes(c)["pool5"]
        std, dt = c.init_std, c.dtype

        def conv(in_ch, out_ch, kernel, bias, **kw):
            return forms.conv(device, init_weight(rng, (out_ch, in_ch, kernel, kernel), std, dt),
                          init_bias(out_ch, bias, dt), **kw)

        def linear(inputs, outputs, bias):
            return forms.linear(device, init_weight(rng, (outputs, inputs), std, dt), init_bias(outputs, bias, dt))

        def lrn():
            return forms.lrn(device, c.lrn_size, c.lrn_k, c.lrn_alpha, c.lrn_beta, c.lrn_alpha_over_n)

        # Masks from (seed, stream, layer, tower) and the step: the same on any device layout,
        # any number of ranks, and after a resume (layers.Dropout).
        dropout_key = (c.seed, DROPOUT_STREAM)

        def activation():
            return activation_layer(c, forms)(device)                   # §3.1: ReLU (or tanh)

        def pool():
            return forms.pool(device, c.pool_size, c.pool_stride)         # §3.4: 3x3, stride 2

        self.conv1 = conv(3, C1, 11, 0.0, stride=4, input_grad=False)
        self.conv2 = conv(C1, C2, 5, 1.0, pad=2)
        self.conv3 = conv(C2 * G, C3, 3, 0.0, pad=1)    # input: pool2 of every tower
        self.conv4 = conv(C3, C4, 3, 1.0, pad=1)
        self.conv5 = conv(C4, C5, 3, 1.0, pad=1)
        self.fc6 = linear(C5 * G * P5 * P5, F6, 1.0)     # input: pool5 of every tower
        self.fc7 = linear(F6 * G, F7, 1.0)               # input: fc6 of every tower
        self.drop6 = Dropout(device, c.dropout, dropout_key + (6, index), c.dropout_inverted)
        self.drop7 = Dropout(device, c.dropout, dropout_key + (7, index), c.dropout_inverted)
        # Every other layer has a name too (the trace prints them): relu1 ... relu7 are the
        # activations (tanh with config.activation == "tanh"), lrn1 and lrn2 exist only
        # with config.lrn (§3.3).
        self.relu1, self.relu2, self.relu3, self.relu4, self.relu5, self.relu6, self.relu7 = (
            activation() for _ in range(7))
        self.lrn1, self.lrn2 = (lrn(), lrn()) if c.lrn else (None, None)
        self.pool1, self.pool2, self.pool5 = pool(), pool(), pool()
        self.flatten = Flatten(device)

        # The four stages between crossings, each a straight list of layers.
        self.conv1_to_pool2 = [layer for layer in (
            self.conv1, self.relu1, self.lrn1, self.pool1,
            self.conv2, self.relu2, self.lrn2, self.pool2) if layer is not None]
        self.conv3_to_pool5 = [self.conv3, self.relu3,
                               self.conv4, self.relu4,
                               self.conv5, self.relu5, self.pool5, self.flatten]
        self.fc6_stage = [self.fc6, self.relu6, self.drop6]
        self.fc7_stage = [self.fc7, self.relu7, self.drop7]
        self.stages = [self.conv1_to_pool2, self.conv3_to_pool5, self.fc6_stage, self.fc7_stage]
        self.stage_names = ["conv1_to_pool2", "conv3_to_pool5", "fc6_stage", "fc7_stage"]   # forward order
        if c.lrn_across_towers:
            # Caffe's bvlc_alexnet normalises conv1's 96 (conv2's 256) maps as one: the window of
            # a map at a tower's edge reaches into the other tower. Each tower gets all maps
            # (``AlexNet.exchange_lrn1/2``), normalises them, and keeps its own channels.
            self.slice1 = forms.channel_slice(device, index * C1, (index + 1) * C1)
            self.slice2 = forms.channel_slice(device, index * C2, (index + 1) * C2)
            self.conv1_relu = [self.conv1, self.relu1]
            self.lrn1_to_relu2 = [self.lrn1, self.slice1, self.pool1, self.conv2, self.relu2]
            self.lrn2_pool2 = [self.lrn2, self.slice2, self.pool2]
            self.conv1_to_pool2 = None
            self.stages = [self.conv1_relu, self.lrn1_to_relu2, self.lrn2_pool2] + self.stages[1:]
            self.stage_names = ["conv1_relu", "lrn1_to_relu2", "lrn2_pool2"] + self.stage_names[1:]

    def layer_name(self, layer):
        """The attribute name of one of this tower's layers ("conv1", "lrn2", "drop7", ...)."""
        return next(name for name, value in vars(self).items() if value is layer)

    def take_images(self, images):
        """images (N, 3, S, S) from the host or any device -> (3, N, S, S) here, in the model's
        dtype. ``images`` may be a tuple of the same batch on several devices (the loader's,
        ``data.loader.TrainLoader``): the copy on this device is taken, else the first moved."""
        copies = list(images) if isinstance(images, (list, tuple)) else [images]
        here = [im for im in copies if self.device.holds(im)]
        with self.device:
            x = here[0] if here else move(copies[0], self.device)
            return self.device.xp.ascontiguousarray(x.transpose(1, 0, 2, 3), dtype=self.conv1.params["W"].dtype)

    def forward(self, stage, x, train, infer=False, last=True):
        """The layers of ``stage`` on x; ``infer``: their ``infer`` (nothing kept for backward);
        ``last``: ``stage`` ends where the output leaves the tower (see below)."""
        with self.device:
            for layer in stage:
                x = layer.infer(x) if infer else layer.forward(x, train)
            if not last or not self.device.memory.is_output(x):
                return x
            # An output still in the device's output buffers (an inference ReLU's, where the
            # towers exchange before LRN) would be overwritten by the other tower's stage on
            # the same device before the exchange reads it: copy.
            return x.copy()

    def backward(self, stage, dy, last=True):
        """The layers of ``stage`` in reverse on dy; ``last``: ``stage`` ends where the
        gradient leaves the tower (copied out of the output buffers, see below)."""
        with self.device:
            for layer in reversed(stage):
                dy = layer.backward(dy)
            if dy is None or not last:
                return dy
            # conv3's input gradient lives in the device's output buffers, which the other
            # tower's stage (on the same device) reuses before the exchange reads it: copy.
            return dy.copy()

    def named_layers(self):
        """[(name, layer)] of the layers with parameters, named as in Figure 2."""
        return [(f"tower{self.index}.{name}", getattr(self, name))
                for name in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7")]

    def stage_layer_names(self, stage):
        """Names (as ``named_layers``) of the layers with parameters in ``stage``."""
        return [name for name, layer in self.named_layers() if any(layer is x for x in getattr(self, stage))]


class Exchange:
    """Where the towers talk (Figure 2): each destination gets all sources, concatenated.

    forward:  [x_0, ..., x_{G-1}] (one per source tower) -> [concat(move(x_g, dest)) per dest]
    backward: each source's gradient is the sum, over destinations, of the slice of that
              destination's gradient that came from it, moved back to the source.
    ``axis`` is the channel axis: 0 for (C, N, H, W) maps, 1 for (N, D) features.
    ``crossings`` counts the arrays that actually changed device (0 on one device).
    """

    def __init__(self, sources, destinations, axis):
        self.sources, self.destinations, self.axis = sources, destinations, axis
        self.crossings = 0

    def _cross(self, requests):
        """``backend.crossing`` of [(array, device)], counting the arrays that change device."""
        self.crossings += sum(not device.holds(x) for x, device in requests)
        return crossing(requests)

    def forward(self, xs):
        self.sizes = [x.shape[self.axis] for x in xs]
        moved = self._cross([(x, dest) for dest in self.destinations for x in xs])   # all copies at once
        outs = []
        for d, dest in enumerate(self.destinations):
            with dest:
                outs.append(dest.xp.concatenate(moved[d * len(xs):(d + 1) * len(xs)], axis=self.axis))
        return outs

    def backward(self, dys):
        edges = np.cumsum(self.sizes)[:-1].tolist()
        pieces = []  # pieces[d][g]: the part of destination d's gradient that came from source g
        for dest, dy in zip(self.destinations, dys):
            with dest:
                pieces.append(dest.xp.split(dy, edges, axis=self.axis))
        D = len(self.destinations)
        moved = self._cross([(pieces[d][g], source) for g, source in enumerate(self.sources) for d in range(D)])
        dxs = []
        for g, source in enumerate(self.sources):
            with source:
                parts = moved[g * D:(g + 1) * D]
                dx = parts[0].copy() if parts[0] is pieces[0][g] else parts[0]   # a fresh array to add into
                for part in parts[1:]:
                    dx += part
                dxs.append(dx)
        return dxs


class LayerParameters:
    """The parameter bookkeeping of a network made of layers: everything here is derived from
    the network's ``named_layers()`` ([(name, layer)] of the layers with parameters), so a
    network (``AlexNet``, ``figure1_net.Figure1Net``) only says which layers it has."""

    inference_only = False   # set by ``for_inference``
    flat = ()                # one FlatParameters per device, once ``pack_parameters`` ran
    forms = None             # the layers' forms (``PLAIN`` or ``FAST``), set by the network

    def optimizer(self, config):
        """§5's SGD of this net's parameters with ``config``'s lr, momentum and weight decay: the
        plain ``optim.SGD``, or for the fast forms (packed parameters) ``fast.PackedSGD``. (The
        ranks' gradient buckets pack a plain net's parameters too; its update stays plain.)"""
        hyper = (config.lr, config.momentum, config.weight_decay, config.decay_biases)
        if self.flat and self.forms is FAST:
            return fast.PackedSGD(self.parameters(), *hyper, flat=self.flat)
        return SGD(self.parameters(), *hyper)

    def pack_parameters(self):
        """Put each device's parameters end to end in one flat array and their gradients in
        another (``flat.FlatParameters``), in the order backward finishes them
        (``backward_order``: the ranks' gradient buckets are ranges of it): the optimiser's
        update is then a few array operations a device. The networks call it once they are
        built."""
        by_device = {}
        layers = dict(self.named_layers())
        for lname in self.backward_order():
            layer = layers[lname]
            device_entries = by_device.setdefault(id(layer.device), (layer.device, []))[1]
            device_entries.extend((f"{lname}.{key}", layer, key) for key in layer.params)
        self.flat = [FlatParameters(device, entries) for device, entries in by_device.values()]

    def backward_order(self):
        """Layer names (as ``named_layers``) in the order backward finishes their gradients:
        here the reverse of ``named_layers``; a network whose backward finishes several
        layers at once (``AlexNet``'s towers) says so."""
        return [name for name, _ in reversed(self.named_layers())]

    def parameters(self):
        """[(name, array, grad, device)], e.g. ("tower1.conv3.W", W, dW, device); grad is
        None after ``for_inference``."""
        return [(f"{lname}.{key}", layer.params[key], layer.grads.get(key), layer.device)
                for lname, layer in self.named_layers() for key in layer.params]

    def for_inference(self):
        """Free the gradient arrays of a network that will only be run forward (evaluation,
        classification): as large as the weights, 0.24 GB for the paper's net. Backward is
        refused afterwards. Returns the network."""
        for _, layer in self.named_layers():
            layer.grads = {}
        for flat in self.flat:
            flat.drop_grads()
        self.inference_only = True
        return self

    def first_not_finite(self):
        """The name of the first parameter holding a value that is not finite, or None.

        One check (one host read) per device over its packed parameters; the parameters are
        looked at one by one only where that finds something."""
        suspects = self.parameters()
        if self.flat and all(packed.holds_weights() for packed in self.flat):
            bad_devices = set()
            for packed in self.flat:
                with packed.device:
                    if not bool(packed.device.xp.isfinite(packed.weights).all()):
                        bad_devices.add(id(packed.device))
            suspects = [p for p in suspects if id(p[3]) in bad_devices]
        for name, w, _, device in suspects:
            with device:
                if not bool(device.xp.isfinite(w).all()):
                    return name
        return None

    def num_parameters(self):
        return sum(int(p.size) for _, p, _, _ in self.parameters())

    def state_dict(self):
        """{name: NumPy array} of every parameter (a copy on the host): one copy a device of
        its packed parameters where they are packed."""
        host = {}
        for packed in self.flat:
            if packed.holds_weights():
                host.update(packed.lay_out(np.array(packed.device.to_host(packed.weights))))
        return {name: host[name] if name in host else np.array(device.to_host(p))
                for name, p, _, device in self.parameters()}

    def load_state_dict(self, state):
        """Copy ``state`` ({name: array}) into the parameters; names and shapes must match."""
        mine = {name: (p, device) for name, p, _, device in self.parameters()}
        missing, unexpected = set(mine) - set(state), set(state) - set(mine)
        if missing or unexpected:
            raise ValueError(f"parameters do not match: missing {sorted(missing)[:3]}, "
                             f"unexpected {sorted(unexpected)[:3]}")
        for name, (p, device) in mine.items():
            if tuple(state[name].shape) != tuple(p.shape):
                raise ValueError(f"{name}: shape {tuple(state[name].shape)} != {tuple(p.shape)}")
            with device:
                p[...] = device.receive(np.asarray(state[name], dtype=p.dtype))


class AlexNet(LayerParameters):
    """The whole net. ``devices``: one per tower (default: all on the CPU).

    Usage (one training step, without the optimiser):
        loss = net.forward_loss(images, labels, train=True)   # images (N, 3, S, S), labels (N,)
        net.backward()   # writes every gradient: nothing to zero first

    Data parallel (``distributed``): a rank computes rows ``first ..`` of a global batch of
    B; ``forward_loss(images, labels, step=s, rows=(first, B))`` gives its part of the
    loss (the sum of its rows' losses / B) and draws its rows of step s's dropout masks,
    so that the ranks' gradients add up to one process's.
    """

    def __init__(self, config, devices=None):
        if devices is None:
            devices = [Device() for _ in range(config.towers)]
        if len(devices) != config.towers:
            raise ValueError(f"{config.towers} towers need {config.towers} devices, got {len(devices)}")
        self.config, self.devices = config, list(devices)
        self.side_by_side = SideBySide(self.devices)   # towers at once where they can be
        # Towers on distinct GPUs: their layers are queued alternately (``in_lockstep``).
        self.lockstep = (not self.side_by_side.parallel and len(devices) > 1
                         and len({id(d) for d in devices}) == len(devices))
        self.sizes = layer_sizes(config)
        self.forms = layer_forms(config, devices[0])   # the plain layers or the fast ones, once
        rng = np.random.default_rng(config.seed)  # initialisation only
        self.towers = [Tower(config, g, d, rng, self.forms) for g, d in enumerate(devices)]
        head = devices[0]
        self.exchange3 = Exchange(devices, devices, axis=0)   # pool2 -> conv3 of every tower
        self.exchange6 = Exchange(devices, devices, axis=1)   # pool5 -> fc6 of every tower
        self.exchange7 = Exchange(devices, devices, axis=1)   # fc6 -> fc7 of every tower
        self.gather8 = Exchange(devices, [head], axis=1)      # fc7 -> fc8, on tower 0's device
        self.exchanges = [self.exchange3, self.exchange6, self.exchange7, self.gather8]
        if config.lrn_across_towers:
            self.exchange_lrn1 = Exchange(devices, devices, axis=0)   # conv1's maps -> LRN1 of every tower
            self.exchange_lrn2 = Exchange(devices, devices, axis=0)   # conv2's maps -> LRN2 of every tower
        fc7_all = config.fc_units[1]
        self.fc8 = self.forms.linear(head, init_weight(rng, (config.num_classes, fc7_all), config.init_std, config.dtype),
                          init_bias(config.num_classes, 0.0, config.dtype))
        self.loss_layer = SoftmaxCrossEntropy(head)
        if self.forms is FAST:
            self.pack_parameters()

    # ---------------------------------------------------------------- forward / backward
    def infer(self, images):
        """The test-time logits (N, K) of images (N, 3, S, S), keeping nothing for backward
        (no layer's kept input, no pooling winners): ``forward(images, train=False)`` for
        evaluation, in less memory and fewer operations. Backward cannot follow it."""
        return self.forward(images, train=False, infer=True)

    def forward(self, images, train=False, step=0, rows=None, infer=False):
        """images (N, 3, S, S), on any device (or a tuple of it on several) -> logits (N, K)
        on tower 0's device.

        Training draws the dropout masks of ``step``; ``rows = (first, B)``: the images are
        rows first .. first+N of a global batch of B (default: the whole batch).
        ``infer``: see ``infer``.
        """
        if infer and train:
            raise ValueError("infer is the test-time forward: it cannot train")
        N, C, H, W = (images[0] if isinstance(images, (list, tuple)) else images).shape
        S = self.config.input_size
        if (C, H, W) != (3, S, S):
            raise ValueError(f"images must be (N, 3, {S}, {S}), got {(N, C, H, W)}")
        first, total = rows if rows is not None else (0, N)
        for tower in self.towers:
            tower.drop6.position = tower.drop7.position = (step, first, total)
        x = []                                                       # the image, to each tower
        for tower in self.towers:
            # CPU towers share memory: the second reuses the first one's (read-only) copy.
            held = [xg for xg in x if tower.device.holds(xg)]
            x.append(held[0] if held else tower.take_images(images))  # (3, N, S, S)
        if self.config.lrn_across_towers:                          # Caffe's LRN over both towers' maps
            x = self.towers_forward("conv1_relu", x, train, infer)
            x = self.exchange_lrn1.forward(x)
            x = self.towers_forward("lrn1_to_relu2", x, train, infer)
            x = self.exchange_lrn2.forward(x)
            x = self.towers_forward("lrn2_pool2", x, train, infer)
        else:
            x = self.towers_forward("conv1_to_pool2", x, train, infer)
        x = self.exchange3.forward(x)                                # conv3 sees both towers
        x = self.towers_forward("conv3_to_pool5", x, train, infer)
        x = self.exchange6.forward(x)                                # fc6 sees all of pool5
        x = self.towers_forward("fc6_stage", x, train, infer)
        x = self.exchange7.forward(x)                                # fc7 sees all of fc6
        x = self.towers_forward("fc7_stage", x, train, infer)
        (self.fc7_features,) = self.gather8.forward(x)               # (N, 4096): Figure 4's features
        with self.fc8.device:
            if infer:
                return self.fc8.infer(self.fc7_features)              # (N, K)
            return self.fc8.forward(self.fc7_features, train)         # (N, K)

    def forward_loss(self, images, labels, train=True, step=0, rows=None):
        """The mean cross-entropy of the batch (a 0-d array on tower 0's device); with
        ``rows = (first, B)`` these rows' part of the global batch's mean (see ``forward``)."""
        logits = self.forward(images, train, step, rows)
        with self.loss_layer.device:
            self.logits = logits
            total = None if rows is None else rows[1]
            return self.loss_layer.forward(logits, move(labels, self.loss_layer.device), total)

    def backward(self, finished=None):
        """Gradients of the last ``forward_loss`` into every layer's ``grads`` (written, not
        added: nothing to zero first).

        ``finished``: called with the names of the layers (as ``named_layers``) whose
        gradients are complete, as soon as they are: data-parallel training starts summing
        them across ranks there, while backward goes on (``buckets.GradientBuckets``).
        """
        if self.inference_only:
            raise RuntimeError("this network was opened for inference (for_inference): it has no "
                               "gradient arrays, and backward cannot run")
        finished = finished or (lambda names: None)
        with self.fc8.device:
            d = self.fc8.backward(self.loss_layer.backward())
        finished(["fc8"])
        d = self.gather8.backward([d])
        d = self.towers_backward("fc7_stage", d)
        finished(self.stage_layer_names("fc7_stage"))
        d = self.exchange7.backward(d)
        d = self.towers_backward("fc6_stage", d)
        finished(self.stage_layer_names("fc6_stage"))
        d = self.exchange6.backward(d)
        d = self.towers_backward("conv3_to_pool5", d)
        finished(self.stage_layer_names("conv3_to_pool5"))
        d = self.exchange3.backward(d)
        if self.config.lrn_across_towers:
            d = self.towers_backward("lrn2_pool2", d)
            d = self.exchange_lrn2.backward(d)
            d = self.towers_backward("lrn1_to_relu2", d)
            finished(self.stage_layer_names("lrn1_to_relu2"))
            d = self.exchange_lrn1.backward(d)
            self.towers_backward("conv1_relu", d)
            finished(self.stage_layer_names("conv1_relu"))
        else:
            self.towers_backward("conv1_to_pool2", d)   # conv1 returns no image gradient
            finished(self.stage_layer_names("conv1_to_pool2"))

    def towers_forward(self, stage, xs, train, infer=False):
        """Stage ``stage`` of every tower on its input: side by side on CPU cores, layer by
        layer in turn on distinct GPUs (``in_lockstep``), else one tower after the other."""
        if self.lockstep:
            return self.in_lockstep(stage, xs,
                                    lambda tower, layers, x: tower.forward(layers, x, train, infer, last=False))
        return self.side_by_side.run([lambda tower=tower, x=x: tower.forward(getattr(tower, stage), x, train, infer)
                                      for tower, x in zip(self.towers, xs)])

    def towers_backward(self, stage, dys):
        """The backward of ``towers_forward``: the stage's layers in reverse, per tower."""
        if self.lockstep:
            return self.in_lockstep(stage, dys, lambda tower, layers, dy: tower.backward(layers, dy, last=False),
                                    backward=True)
        return self.side_by_side.run([lambda tower=tower, dy=dy: tower.backward(getattr(tower, stage), dy)
                                      for tower, dy in zip(self.towers, dys)])

    def in_lockstep(self, stage, xs, run, backward=False):
        """Layer i of every tower, then layer i + 1 of every tower, ...: on distinct GPUs the
        host queues one GPU's next kernels while the other GPU runs its last ones, instead of
        leaving GPU 1 idle while a whole stage of tower 0 is queued. ``run(tower, [layer], x)``."""
        xs = list(xs)
        stages = [getattr(tower, stage) for tower in self.towers]
        for depth in range(len(stages[0])):
            for g, tower in enumerate(self.towers):
                layer = stages[g][-1 - depth] if backward else stages[g][depth]
                xs[g] = run(tower, [layer], xs[g])
        return xs

    # ---------------------------------------------------------------- parameters
    def backward_order(self):
        """Layer names in the order ``backward`` finishes them (its ``finished`` calls): fc8,
        then the towers' stages in reverse (``Tower.stage_names``), each stage's layers of
        every tower together."""
        stages = reversed(self.towers[0].stage_names)
        return ["fc8"] + [name for stage in stages for name in self.stage_layer_names(stage)]

    def stage_layer_names(self, stage):
        """Names of the layers with parameters in ``stage`` of every tower, e.g. fc6_stage ->
        ["tower0.fc6", "tower1.fc6"]."""
        return [name for tower in self.towers for name in tower.stage_layer_names(stage)]

    def named_layers(self):
        """[(name, layer)] for every layer with parameters: tower0.conv1 ... tower1.fc7, fc8."""
        return [pair for tower in self.towers for pair in tower.named_layers()] + [("fc8", self.fc8)]

    def crossings(self):
        """{exchange name: arrays that changed device so far}, forward and backward together."""
        return {name: ex.crossings for name, ex in
                zip(("conv3", "fc6", "fc7", "fc8"), self.exchanges)}


def check_input_size(config, search=1024):
    """Refuse, before anything is built, an input size the layers do not divide exactly.

    Raises ``ConfigError`` naming ``--input-size`` and the nearest sizes that fit (found
    with ``layer_sizes`` itself, so the rule follows the layers' kernels and strides).
    """
    def fits(size):
        try:
            layer_sizes(config.replace(input_size=size, image_size=max(size, config.image_size)))
            return True
        except ValueError:
            return False

    S = config.input_size
    if fits(S):
        return
    below = next((s for s in range(S - 1, max(0, S - search), -1) if fits(s)), None)
    above = next((s for s in range(S + 1, S + search) if fits(s)), None)
    nearest = " and ".join(str(s) for s in (below, above) if s is not None) or "none nearby"
    raise ConfigError("input_size", S, f"a size the layers of Figure 2 divide exactly (the nearest: {nearest})")
