"""The one configuration record: the paper's values as defaults, each with its section.

``Config()`` is the paper's network and training. Smaller configurations for tests and
CPU demos change a few fields (``Config(input_size=67, conv_channels=(16, 32, 48, 48, 32),
...)``). The command line of train.py is generated from these fields; the record is
printed at start and saved in every checkpoint, and a checkpoint whose *architecture*
fields differ is refused.

Choices the paper leaves open (PAPER.md, last section) are fields here, each named:
``input_size``, ``lrn_alpha_over_n`` and ``lrn_k``, ``dropout_inverted``,
``decay_biases``, ``lighting_std`` (units: see ``alexnet_np.data``), ``mean``.
"""
import argparse
import dataclasses
import json


@dataclasses.dataclass(frozen=True)
class Config:
    # --- Architecture (§3, Figure 2). Channel and unit counts are of both towers together.
    num_classes: int = 1000                                # §2: ILSVRC's 1000 classes
    input_size: int = 227                                  # §3: "224" printed; 227 makes 11x11/4 give 55 exactly (as Caffe)
    towers: int = 2                                        # §3.2: two GPUs, half of each layer's kernels on each
    conv_channels: tuple = (96, 256, 384, 384, 256)        # Figure 2: conv1..conv5
    fc_units: tuple = (4096, 4096)                         # Figure 2: fc6, fc7 (fc8 = num_classes)
    lrn_size: int = 5                                      # §3.3: n
    lrn_k: float = 2.0                                     # §3.3: k (Caffe's default is 1)
    lrn_alpha: float = 1e-4                                # §3.3: alpha
    lrn_beta: float = 0.75                                 # §3.3: beta
    lrn_alpha_over_n: bool = False                         # False: the printed formula (coefficient alpha on the sum);
                                                           # True: cuda-convnet/Caffe/PyTorch (coefficient alpha / n)
    dropout: float = 0.5                                   # §4.2: probability of dropping an fc6/fc7 unit
    dropout_inverted: bool = False                         # False: as §4.2, outputs x (1 - p) at test time;
                                                           # True: outputs x 1/(1 - p) at training time instead
    init_std: float = 0.01                                 # §5: weights ~ N(0, 0.01); biases 1 in conv2, conv4, conv5, fc6, fc7
    dtype: str = "float32"                                 # float64 for gradient checks
    # --- Learning (§5)
    batch_size: int = 128                                  # §5
    lr: float = 0.01                                       # §5: initial learning rate, one for all layers
    momentum: float = 0.9                                  # §5
    weight_decay: float = 0.0005                           # §5: multiplied by the learning rate in the update
    decay_biases: bool = False                             # open: §5's rule names "w"; cuda-convnet decayed weights only
    epochs: int = 90                                       # §5: "roughly 90 cycles"
    lr_patience: int = 5                                   # §5: "when the validation error stopped improving" (epochs)
    lr_drops: int = 3                                      # §5: "reduced three times prior to termination"
    # --- Data and augmentation (§2, §4.1)
    image_size: int = 256                                  # §2: shorter side to 256, central 256x256 crop
    flip: bool = True                                      # §4.1: horizontal reflections
    lighting_std: float = 0.1                              # §4.1: a_i ~ N(0, 0.1), in units of sqrt(eigenvalue) of 0-255 pixels
    mean: str = "pixel"                                    # §2: per-pixel mean image ("pixel") or per-channel ("channel")
    seed: int = 0                                          # every generator is derived from this

    ARCHITECTURE = (
        "num_classes", "input_size", "towers", "conv_channels", "fc_units",
        "lrn_size", "lrn_k", "lrn_alpha", "lrn_beta", "lrn_alpha_over_n",
        "dropout", "dropout_inverted", "dtype",
    )

    def __post_init__(self):
        # JSON turns tuples into lists: normalise so that equality works after a round trip.
        object.__setattr__(self, "conv_channels", tuple(self.conv_channels))
        object.__setattr__(self, "fc_units", tuple(self.fc_units))
        for name, count in [("conv_channels", self.conv_channels), ("fc_units", self.fc_units)]:
            for c in count:
                if c % self.towers:
                    raise ValueError(f"{name}={count}: every count must divide by towers={self.towers}")
        if len(self.conv_channels) != 5 or len(self.fc_units) != 2:
            raise ValueError("the network has five conv layers and two hidden fc layers (Figure 2)")

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def to_dict(self):
        return dataclasses.asdict(self)

    def to_json(self):
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, values):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown configuration fields: {sorted(unknown)}")
        return cls(**values)

    def architecture(self):
        """The fields a checkpoint's weights depend on."""
        return {name: getattr(self, name) for name in self.ARCHITECTURE}

    def architecture_differences(self, other):
        """``[(field, ours, theirs), ...]`` where the two architectures differ."""
        mine, theirs = self.architecture(), other.architecture()
        return [(k, mine[k], theirs[k]) for k in self.ARCHITECTURE if mine[k] != theirs[k]]


# A configuration small enough to train in about two minutes on a laptop CPU (the demo),
# with the paper's structure: two towers, the same layers, kernel sizes and crossings.
# Measured on the demo data set (validation top-1 error on 300 images; chance is 90%):
# - init_std 0.05: with the paper's 0.01, layers this narrow pass almost no signal (conv1-conv4
#   gradients ~1e-7, fc7 nearly the same for every image): the loss sits at ln 10 and the
#   validation error stayed at 90% for 12 epochs; 0.03 still stalled (86-90%), 0.1 blew up
#   (loss 13 in epoch 1, then dead units).
# - lrn_alpha_over_n (cuda-convnet's alpha / n, a 5x weaker normalisation): 30 epochs reach
#   13-20% instead of 61-65% with the printed formula.
# - 30 epochs (about 85 s on two cores) with the paper's patience of 5 epochs.
DEMO = Config(
    num_classes=10,
    input_size=67,             # conv1 15x15, pool1 7x7, conv2 7x7, pool2 3x3, conv3-5 3x3, pool5 1x1
    conv_channels=(32, 64, 96, 96, 64),
    fc_units=(256, 256),
    lrn_alpha_over_n=True,
    init_std=0.05,
    image_size=76,
    batch_size=64,
    lr=0.01,
    epochs=30,
    lr_patience=5,
)


# --------------------------------------------------------------------------- command line

def add_config_arguments(parser, defaults=None):
    """One option per Config field (``--input-size``, ``--lrn-alpha-over-n`` / ``--no-...``).

    Every option defaults to None ("not given"), so that ``config_from_arguments`` can
    tell what the user set from what the base configuration supplies.
    """
    defaults = defaults or Config()
    group = parser.add_argument_group("configuration (defaults: the paper's values, §-numbers in config.py)")
    for field in dataclasses.fields(Config):
        flag = "--" + field.name.replace("_", "-")
        value = getattr(defaults, field.name)
        if isinstance(value, bool):
            group.add_argument(flag, dest=field.name, action=argparse.BooleanOptionalAction,
                               default=None, help=f"(default {value})")
        elif isinstance(value, tuple):
            group.add_argument(flag, dest=field.name, default=None, metavar="N,N,...",
                               type=lambda text: tuple(int(v) for v in text.split(",")),
                               help=f"(default {','.join(map(str, value))})")
        else:
            group.add_argument(flag, dest=field.name, type=type(value), default=None,
                               help=f"(default {value})")
    return group


def config_from_arguments(args, base=None):
    """``base`` (default: the paper's Config) with every option the user gave."""
    base = base or Config()
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config)
             if getattr(args, f.name, None) is not None}
    return base.replace(**given)
