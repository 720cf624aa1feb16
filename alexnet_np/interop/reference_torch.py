"""The same two-tower network in PyTorch: the independent reference (conventions 9).

Dimensions:
    N  batch    S  input size    G  towers (2)    F  filters (all towers)    K  classes

PyTorch is a development dependency only: nothing in the package imports this module;
the agreement tests (tests/test_torch_reference.py) and benchmarks/bench.py import it when PyTorch
is installed. PyTorch holds both towers in one tensor per layer, NCHW, and expresses the
towers as the paper's Figure 2 does with its own primitives:

    layer  | here                                   | our model (alexnet_np.nn.model)
    -------+----------------------------------------+-----------------------------------
    conv1  | Conv2d(3, F1): both towers see the image| tower g: F1/G kernels
    lrn1,2 | LocalResponseNorm on each tower's half  | one LRN layer per tower
    conv2  | Conv2d(..., groups=G)                  | own tower's maps only
    conv3  | Conv2d(..., groups=1)                  | exchange3: both towers' maps
    conv4,5| Conv2d(..., groups=G)                  | own tower's maps only
    fc6,7  | Linear over all inputs                 | exchange6/7: all towers' features
    fc8    | Linear                                 | fc8 on tower 0's device

Tower g's kernels / units are output channels ``g*F/G .. (g+1)*F/G - 1``, and inputs are
concatenated tower 0 first, so the weights of a whole PyTorch layer are our towers'
weights concatenated along the output axis (``load_state``), and its gradient split the
same way gives ours (``gradients``).

LRN (§3.3): PyTorch's ``LocalResponseNorm`` averages the squares over the window, i.e.
its coefficient on the *sum* is alpha / size. Our ``Config.lrn_alpha_over_n=False`` (the
printed formula) puts ``lrn_alpha`` on the sum, so PyTorch must get ``alpha * size``;
with ``True`` it gets ``lrn_alpha`` itself (``torch_lrn_alpha``).

Dropout (§4.2) multiplies by explicit masks: ``forward(..., masks={"drop6": m6, "drop7": m7})``
with the masks *as our layers store them* (0/1, times 1/(1-p) when inverted;
``masks_from`` reads them from our model after a training forward). Without masks at
training time the masks are drawn here (benchmarks/bench.py). At test time outputs are multiplied by
(1 - p) (the paper) or left alone (inverted), exactly as in our Dropout.
"""
import numpy as np

from ..nn.model import layer_sizes

try:
    import torch
    from torch import nn
    import torch.nn.functional as F
except ImportError as error:  # the message says what to do
    raise ImportError("alexnet_np.interop.reference_torch needs PyTorch, a development dependency: "
                      f"pip install -r requirements-dev.txt ({error})") from None

# Parameterised layers, in our naming (tower{g}.<name> for all but fc8).
TOWER_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7")


def torch_dtype(name):
    return {"float32": torch.float32, "float64": torch.float64}[name]


def torch_lrn_alpha(config):
    """The ``alpha`` to give torch.nn.LocalResponseNorm: coefficient on the sum times size."""
    if config.lrn_size % 2 == 0:
        # PyTorch pads an even window unevenly (n/2 before, n/2 - 1 after); §3.3's sum runs
        # over i - n/2 .. i + n/2, as our layer does: the two agree only for odd n.
        raise ValueError(f"lrn_size={config.lrn_size}: the PyTorch reference needs an odd LRN window")
    coef = config.lrn_alpha / config.lrn_size if config.lrn_alpha_over_n else config.lrn_alpha
    return coef * config.lrn_size


class TowerLRN(nn.Module):
    """LRN (§3.3) within each tower: the channel window never crosses the tower boundary.

    x (N, F, H, W): split into G channel groups, normalise each, concatenate.
    """

    def __init__(self, towers, size, alpha, beta, k):
        super().__init__()
        self.towers = towers
        self.lrn = nn.LocalResponseNorm(size, alpha=alpha, beta=beta, k=k)

    def forward(self, x):
        return torch.cat([self.lrn(part) for part in x.chunk(self.towers, dim=1)], dim=1)


class MaskedDropout(nn.Module):
    """Dropout (§4.2) with an explicit mask, either convention (see our layers.Dropout).

    train: x * mask, mask (N, D) given (0/1 or 0/(1/(1-p)), as our layer stores it) or
    drawn here; test: x * (1 - p) (paper) or x (inverted).
    """

    def __init__(self, p, inverted):
        super().__init__()
        self.p = p
        self.train_scale = 1.0 / (1.0 - p) if inverted else 1.0
        self.test_scale = 1.0 if inverted else 1.0 - p

    def forward(self, x, train, mask=None):
        if not train:
            return x * self.test_scale if self.test_scale != 1.0 else x
        if mask is None:
            mask = (torch.rand_like(x) >= self.p).to(x.dtype)   # (N, D)
            if self.train_scale != 1.0:
                mask *= self.train_scale
        return x * mask


class TorchAlexNet(nn.Module):
    """The paper's two-tower net (§3, Figure 2) as one PyTorch module, NCHW.

    ``inplace_relu``: True is how PyTorch users write it (torchvision's AlexNet); it saves
    one activation per ReLU and changes nothing else. benchmarks/bench.py's per-layer breakdown,
    which feeds each layer a fresh leaf tensor, needs False.
    """

    def __init__(self, config, inplace_relu=True):
        super().__init__()
        c, G = config, config.towers
        C1, C2, C3, C4, C5 = c.conv_channels
        F6, F7 = c.fc_units
        P5 = layer_sizes(c)["pool5"]
        self.config = config

        def relu():   # config.activation (§3.1); the name stays relu* for either
            return nn.Tanh() if c.activation == "tanh" else nn.ReLU(inplace=inplace_relu)

        def lrn():    # config.lrn (§3.3): off is the identity
            return TowerLRN(G, c.lrn_size, torch_lrn_alpha(c), c.lrn_beta, c.lrn_k) if c.lrn else nn.Identity()

        def pool():   # config.pool_size, pool_stride (§3.4); floor mode, as ours
            return nn.MaxPool2d(c.pool_size, c.pool_stride)

        self.conv1 = nn.Conv2d(3, C1, 11, stride=4)                 # both towers see the image
        self.relu1, self.lrn1, self.pool1 = relu(), lrn(), pool()
        self.conv2 = nn.Conv2d(C1, C2, 5, padding=2, groups=G)       # own tower only
        self.relu2, self.lrn2, self.pool2 = relu(), lrn(), pool()
        self.conv3 = nn.Conv2d(C2, C3, 3, padding=1)                # both towers (crossing)
        self.relu3 = relu()
        self.conv4 = nn.Conv2d(C3, C4, 3, padding=1, groups=G)       # own tower only
        self.relu4 = relu()
        self.conv5 = nn.Conv2d(C4, C5, 3, padding=1, groups=G)       # own tower only
        self.relu5, self.pool5 = relu(), pool()
        self.flatten = nn.Flatten()                                 # (N, C5*P5*P5), C-major
        self.fc6 = nn.Linear(C5 * P5 * P5, F6)                      # all of pool5 (crossing)
        self.relu6, self.drop6 = relu(), MaskedDropout(c.dropout, c.dropout_inverted)
        self.fc7 = nn.Linear(F6, F7)                                # all of fc6 (crossing)
        self.relu7, self.drop7 = relu(), MaskedDropout(c.dropout, c.dropout_inverted)
        self.fc8 = nn.Linear(F7, c.num_classes)                     # all of fc7
        self.order = ["conv1", "relu1", "lrn1", "pool1", "conv2", "relu2", "lrn2", "pool2",
                      "conv3", "relu3", "conv4", "relu4", "conv5", "relu5", "pool5", "flatten",
                      "fc6", "relu6", "drop6", "fc7", "relu7", "drop7", "fc8"]
        self.to(torch_dtype(c.dtype))

    def layers(self):
        """[(name, module)] in the order of the forward pass (Figure 2, read left to right)."""
        return [(name, getattr(self, name)) for name in self.order]

    def forward(self, images, train=False, masks=None):
        """images (N, 3, S, S) -> logits (N, K). masks: {"drop6": (N, F6), "drop7": (N, F7)}."""
        masks = masks or {}
        x = images
        for name, layer in self.layers():
            if isinstance(layer, MaskedDropout):
                x = layer(x, train, masks.get(name))
            else:
                x = layer(x)
        return x

    def forward_loss(self, images, labels, train=True, masks=None):
        """The mean cross-entropy (§3's objective); keeps the logits in ``self.logits``."""
        self.logits = self.forward(images, train, masks)
        return F.cross_entropy(self.logits, labels)


# --------------------------------------------------------------------------- our model <-> PyTorch

def _whole(state, name, towers):
    """Our parameter ``name`` ("conv3.W") as one array: towers concatenated on the output axis."""
    return np.concatenate([state[f"tower{g}.{name}"] for g in range(towers)], axis=0)


def load_state(net, state):
    """Copy our weights (``AlexNet.state_dict()``: {name: NumPy array}) into ``net``."""
    G = net.config.towers
    with torch.no_grad():
        for layer in TOWER_LAYERS + ("fc8",):
            module = getattr(net, layer)
            for key, param in (("W", module.weight), ("b", module.bias)):
                value = state[f"fc8.{key}"] if layer == "fc8" else _whole(state, f"{layer}.{key}", G)
                if tuple(value.shape) != tuple(param.shape):
                    raise ValueError(f"{layer}.{key}: ours {value.shape}, PyTorch {tuple(param.shape)}")
                param.copy_(torch.from_numpy(np.ascontiguousarray(value)))


def build(config, state=None, device="cpu", inplace_relu=True):
    """A TorchAlexNet of ``config`` on ``device``, with our weights ``state`` if given."""
    net = TorchAlexNet(config, inplace_relu=inplace_relu)
    if state is not None:
        load_state(net, state)
    return net.to(device)


def split_named(net, tensors):
    """{our name: NumPy array} from {"conv1.weight": tensor, ...} (e.g. weights or grads)."""
    G = net.config.towers
    out = {}
    for layer in TOWER_LAYERS + ("fc8",):
        for key, suffix in (("W", "weight"), ("b", "bias")):
            whole = tensors[f"{layer}.{suffix}"].detach().cpu().numpy()
            if layer == "fc8":
                out[f"fc8.{key}"] = whole
            else:
                for g, part in enumerate(np.split(whole, G, axis=0)):
                    out[f"tower{g}.{layer}.{key}"] = part
    return out


def gradients(net):
    """Every parameter gradient of ``net``, in OUR naming: {"tower0.conv1.W": array, ...}."""
    return split_named(net, {name: p.grad for name, p in net.named_parameters()})


def weights(net):
    """Every parameter of ``net``, in our naming (compare with ``AlexNet.state_dict()``)."""
    return split_named(net, dict(net.named_parameters()))


def masks_from(model):
    """The dropout masks our ``model`` (alexnet_np.nn.model.AlexNet) used in its last training
    forward, as {"drop6": tensor, "drop7": tensor} for TorchAlexNet.forward (towers concatenated)."""
    masks = {}
    for name in ("drop6", "drop7"):
        parts = [tower.device.to_host(getattr(tower, name).mask) for tower in model.towers]
        masks[name] = torch.from_numpy(np.concatenate(parts, axis=1))   # (N, F)
    return masks


# --------------------------------------------------------------------------- SGD (§5)

def _decay(name, config):
    return config.weight_decay if (config.decay_biases or not name.endswith("bias")) else 0.0


class PaperSGD:
    """§5's update, written as the paper writes it (and as alexnet_np.nn.optim.SGD does):

        v <- momentum v - weight_decay lr w - lr dL/dw;   w <- w + v
    """

    def __init__(self, net, config, lr=None):
        self.params = list(net.named_parameters())
        self.config, self.lr = config, config.lr if lr is None else lr
        self.velocity = {name: torch.zeros_like(p) for name, p in self.params}

    @torch.no_grad()
    def step(self):
        c = self.config
        for name, w in self.params:
            v = self.velocity[name]
            step = w * _decay(name, c)       # the same operation order as alexnet_np.nn.optim.SGD
            step += w.grad
            step *= self.lr
            v *= c.momentum
            v -= step
            w += v

    def zero_grad(self):
        for _, p in self.params:
            p.grad = None


def torch_sgd(net, config, lr=None):
    """torch.optim.SGD giving §5's update while the learning rate is constant.

    PyTorch keeps lr outside its buffer: b <- m b + (g + wd w); w <- w - lr b. With
    b = -v / lr this is the paper's v <- m v - wd lr w - lr g; w <- w + v, step for step,
    as long as lr does not change (after a change the two differ for a few steps).
    Biases are decayed only when ``config.decay_biases``.
    """
    lr = config.lr if lr is None else lr
    weights_, biases = [], []
    for name, p in net.named_parameters():
        (biases if name.endswith("bias") else weights_).append(p)
    groups = [{"params": weights_, "weight_decay": config.weight_decay},
              {"params": biases, "weight_decay": config.weight_decay if config.decay_biases else 0.0}]
    return torch.optim.SGD(groups, lr=lr, momentum=config.momentum, dampening=0.0, nesterov=False)
