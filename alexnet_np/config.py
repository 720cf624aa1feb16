"""The one configuration record: the paper's values as defaults, each with its section.

``Config()`` is the paper's network and training. Smaller configurations for tests and
CPU demos change a few fields (``Config(input_size=67, conv_channels=(16, 32, 48, 48, 32),
...)``). The command line of train.py is generated from these fields; the record is
printed at start and saved in every checkpoint, and a checkpoint whose *architecture*
fields differ is refused.

Choices the paper leaves open (docs/design.md, "Choices the paper leaves open") are fields here, each named:
``input_size``, ``lrn_alpha_over_n``, ``lrn_k`` and ``lrn_across_towers``, ``dropout_inverted``,
``decay_biases``, ``lighting_std`` (units: see ``alexnet_np.data``), ``mean``.

Every field says what it accepts: ``name: type = option(default, ACCEPTS)  # §: why``, with
ACCEPTS a record from ``alexnet_np.accepts`` (POSITIVE_INT, PROBABILITY, Choice("a", "b"), ...).
One check, ``__post_init__``, tests every field against it and the relations between fields
(``check_relations``), whoever builds the record (command line, checkpoint, code), and
refuses with ``ConfigError``: one line, ``--option value: what is allowed``.
"""
import argparse
import dataclasses
import json
import textwrap

from .accepts import (FLAG, NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE, POSITIVE_INT, PROBABILITY,
                      Choice, Flag, Number, Several, show)


class ConfigError(ValueError):
    """A value a Config field does not accept; ``str()`` is one line: ``--option value: what is allowed``."""

    def __init__(self, field, value, allowed):
        self.field, self.value, self.allowed = field, value, allowed
        super().__init__(f"{flag(field)} {show(value)}: {allowed}")


def flag(name):
    """The command-line option of a field: ``lrn_alpha_over_n`` -> ``--lrn-alpha-over-n``."""
    return "--" + name.replace("_", "-")


def option(default, accepts, also=""):
    """A Config field: its default and what it accepts (an ``accepts`` record); ``also``
    names, for the help, what it must satisfy besides (a relation checked in Config)."""
    return dataclasses.field(default=default, metadata={"accepts": accepts, "also": also and f"; {also}"})


ACTIVATIONS = ("relu", "tanh")   # §3.1: the paper's ReLU, and the saturating tanh it compares with


@dataclasses.dataclass(frozen=True)
class Config:
    # --- Architecture (§3, Figure 2). Channel and unit counts are of both towers together.
    num_classes: int = option(1000, Number(int, low=2))              # §2: ILSVRC's 1000 classes
    input_size: int = option(227, POSITIVE_INT,                      # §3: "224" printed; 227 makes 11x11/4 give 55 exactly (as Caffe)
                             "must fit the layers exactly, e.g. 67, 195, 227")
    towers: int = option(2, POSITIVE_INT)                            # §3.2: two GPUs, half of each layer's kernels on each
    conv_channels: tuple = option((96, 256, 384, 384, 256),          # Figure 2: conv1..conv5
                                  Several(POSITIVE_INT, 5), "each divisible by --towers")
    fc_units: tuple = option((4096, 4096),                           # Figure 2: fc6, fc7 (fc8 = num_classes)
                             Several(POSITIVE_INT, 2), "each divisible by --towers")
    lrn_size: int = option(5, Number(int, low=1, odd=True))          # §3.3: n (a window centred on the channel)
    lrn_k: float = option(2.0, POSITIVE)                             # §3.3: k (Caffe's default is 1)
    lrn_alpha: float = option(1e-4, NON_NEGATIVE)                    # §3.3: alpha
    lrn_beta: float = option(0.75, NON_NEGATIVE)                     # §3.3: beta
    lrn_alpha_over_n: bool = option(False, FLAG)                     # False: the printed formula (coefficient alpha on the sum);
                                                                     # True: cuda-convnet/Caffe/PyTorch (coefficient alpha / n)
    lrn_across_towers: bool = option(False, FLAG)                    # False: each tower normalises its own maps (two GPUs, §3.2);
                                                                     # True: the window crosses the towers' boundary (Caffe's
                                                                     # bvlc_alexnet: one LRN over all 96 / 256 maps)
    activation: str = option("relu", Choice(*ACTIVATIONS))           # §3.1: ReLU (the paper) or tanh (Figure 1's comparison)
    lrn: bool = option(True, FLAG)                                   # §3.3: LRN after conv1's and conv2's ReLU (off: +1.4% top-1 claimed)
    pool_size: int = option(3, POSITIVE_INT)                         # §3.4: overlapping pooling, z = 3 ...
    pool_stride: int = option(2, POSITIVE_INT, "at most --pool-size")  # §3.4: ... s = 2 (non-overlapping: 2 and 2)
    dropout: float = option(0.5, PROBABILITY)                        # §4.2: probability of dropping an fc6/fc7 unit
    dropout_inverted: bool = option(False, FLAG)                     # False: as §4.2, outputs x (1 - p) at test time;
                                                                     # True: outputs x 1/(1 - p) at training time instead
    init_std: float = option(0.01, POSITIVE)                         # §5: weights ~ N(0, 0.01); biases 1 in conv2, conv4, conv5, fc6, fc7
    dtype: str = option("float32", Choice("float32", "float64"))     # float64 for gradient checks
    # --- Learning (§5)
    batch_size: int = option(128, POSITIVE_INT)                      # §5
    lr: float = option(0.01, POSITIVE)                               # §5: initial learning rate, one for all layers
    momentum: float = option(0.9, Number(float, low=0, high=1, high_open=True))  # §5
    weight_decay: float = option(0.0005, NON_NEGATIVE)               # §5: multiplied by the learning rate in the update
    decay_biases: bool = option(False, FLAG)                         # open: §5's rule names "w"; cuda-convnet decayed weights only
    epochs: int = option(90, POSITIVE_INT)                           # §5: "roughly 90 cycles"
    lr_patience: int = option(5, POSITIVE_INT)                       # §5: "when the validation error stopped improving" (epochs)
    lr_drops: int = option(3, NON_NEGATIVE_INT)                      # §5: "reduced three times prior to termination"
    # --- Data and augmentation (§2, §4.1)
    image_size: int = option(256, POSITIVE_INT, "at least --input-size")   # §2: shorter side to 256, central 256x256 crop
    random_crop: bool = option(True, FLAG)                           # §4.1: random crops in training (off: centre crops)
    flip: bool = option(True, FLAG)                                  # §4.1: horizontal reflections
    lighting_std: float = option(0.1, NON_NEGATIVE)                  # §4.1: a_i ~ N(0, 0.1), in units of sqrt(eigenvalue) of 0-255 pixels
    mean: str = option("pixel", Choice("pixel", "channel"))          # §2: per-pixel mean image ("pixel") or per-channel ("channel")
    seed: int = option(0, NON_NEGATIVE_INT)                          # every generator is derived from this
    # --- Implementation (not the paper's; not part of the architecture: either form loads the other's checkpoints)
    layer_form: str = option("auto", Choice("auto", "plain", "fast"))  # the layers' plain form (nn/layers.py) or the fast one
                                                                     # beside it (nn/fast.py); auto: the fastest on the device
                                                                     # (docs/design.md, "Two forms of every layer")

    ARCHITECTURE = (
        "num_classes", "input_size", "towers", "conv_channels", "fc_units",
        "lrn_size", "lrn_k", "lrn_alpha", "lrn_beta", "lrn_alpha_over_n", "lrn_across_towers",
        "activation", "lrn", "pool_size", "pool_stride",
        "dropout", "dropout_inverted", "dtype",
    )

    def __post_init__(self):
        """The one check, whoever builds the record (command line, checkpoint, code)."""
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, list):  # JSON turns tuples into lists: equality after a round trip
                object.__setattr__(self, field.name, tuple(value))
            accepts = field.metadata.get("accepts")
            assert accepts is not None, f"Config.{field.name}: declare what it accepts, = option(default, ACCEPTS)"
            if not accepts.allows(value):
                raise ConfigError(field.name, value, accepts.describe())
        self.check_relations()

    def check_relations(self):
        """What one field asks of another."""
        for name in ("conv_channels", "fc_units"):   # §3.2: each tower holds 1/towers of every layer
            if any(count % self.towers for count in getattr(self, name)):
                raise ConfigError(name, getattr(self, name), f"every count must divide by the towers "
                                  f"(--towers {self.towers})")
        if self.lrn_across_towers and not self.lrn:  # §3.3: there is no window to widen without LRN
            raise ConfigError("lrn_across_towers", True, "needs --lrn (LRN is switched off by --no-lrn)")
        if self.pool_stride > self.pool_size:        # §3.4: windows that touch or overlap
            raise ConfigError("pool_stride", self.pool_stride, f"at most --pool-size {self.pool_size} "
                              "(3/2 overlapping as §3.4, 2/2 not; a larger stride would skip pixels)")
        if self.image_size < self.input_size:        # §4.1: crops are cut from the stored images
            raise ConfigError("image_size", self.image_size, f"at least --input-size {self.input_size} "
                              "(the crops are cut from the stored images)")

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


def one_tower_comparison(config):
    """§3.2's comparison net for ``config``: one tower, half the kernels of conv1-conv4.

    The paper compares its two-GPU net with "a net with half as many kernels in each
    convolutional layer trained on one GPU", and its footnote 2 says which layers are *not*
    halved: the last convolutional layer (conv5) and the fully connected layers after it,
    "to make the two nets have approximately the same number of parameters" (fc6 holds most
    of them and reads conv5). So conv1-conv4 get the kernels of one tower, conv5 and fc6-fc8
    keep the two-tower net's size (the comparison favours the one-GPU net, as the paper says).
    """
    c1, c2, c3, c4, c5 = config.conv_channels
    if any(n % 2 for n in (c1, c2, c3, c4)):
        raise ValueError(f"conv_channels={config.conv_channels}: conv1-conv4 must be even to be halved")
    return config.replace(towers=1, conv_channels=(c1 // 2, c2 // 2, c3 // 2, c4 // 2, c5))


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


# Named configurations (``train.py --preset NAME``): a whole configuration by one word, each
# value still open to an option given beside it (``--preset demo --epochs 60``).
PRESETS = {
    "paper": (Config(), "the paper's network and training (§3-§5), for ImageNet's 1000 classes at 256"),
    "demo": (DEMO, "the paper's structure, narrow enough to train in minutes on a CPU (the built-in demo's)"),
    "one-tower": (one_tower_comparison(Config()),
                  "§3.2's one-GPU comparison: one tower with half the kernels of conv1-conv4"),
}


def preset_changes(config, reference=None):
    """``--option value`` for each field where ``config`` differs from ``reference`` (the paper's)."""
    reference = reference or Config()
    changes = []
    for f in dataclasses.fields(Config):
        value = getattr(config, f.name)
        if value != getattr(reference, f.name):
            if isinstance(f.metadata["accepts"], Flag):
                changes.append(flag(f.name) if value else "--no-" + flag(f.name)[2:])
            else:
                changes.append(f"{flag(f.name)} {show(value)}")
    return changes


def describe_presets(width=88):
    """The presets for a help text: each name, what it is, and what it sets besides the paper's."""
    lines = []
    for name, (config, text) in PRESETS.items():
        changes = preset_changes(config)
        lines.append(f"  {name:10} {text}" + (f"; sets {', '.join(changes)}" if changes else ""))
    return "\n".join(textwrap.fill(line, width, subsequent_indent=" " * 13, break_on_hyphens=False)
                     for line in lines)


# --------------------------------------------------------------------------- command line

def add_config_arguments(parser, defaults=None, fields=None, title=None):
    """One option per Config field (``--input-size``, ``--lrn-alpha-over-n`` / ``--no-...``);
    ``fields``: only those (names), for a tool that uses no others.

    Each option parses and checks its value with the field's ``accepts`` record (its help,
    made by ``cli.Parser``, says what that accepts). Every option defaults to None ("not given"), so that
    ``config_from_arguments`` can tell what the user set from what the base supplies.
    ``title``: the group's heading (default: the defaults are the paper's values).
    """
    defaults = defaults or Config()
    group = parser.add_argument_group(title or "configuration (defaults: the paper's values, §-numbers in config.py)")
    for field in dataclasses.fields(Config):
        if fields is not None and field.name not in fields:
            continue
        accepts, value = field.metadata["accepts"], getattr(defaults, field.name)
        if isinstance(accepts, Flag):
            group.add_argument(flag(field.name), dest=field.name, action=argparse.BooleanOptionalAction,
                               default=None, help=f"(default {value})")
        else:
            group.add_argument(flag(field.name), dest=field.name, type=accepts, default=None,
                               help=f"(default {show(value)}{field.metadata['also']})")
    return group


def config_from_arguments(args, base=None):
    """``base`` (default: the paper's Config) with every option the user gave."""
    base = base or Config()
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config)
             if getattr(args, f.name, None) is not None}
    return base.replace(**given)
