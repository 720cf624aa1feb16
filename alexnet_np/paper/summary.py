"""``python -m alexnet_np.paper.summary``: the network of Figure 2 as a table, and every open choice.

For each layer: output shape (both towers), neurons, parameters, multiply-adds per image
(all towers, and per tower), and the paper's neuron count beside ours. Any configuration
can be given on the command line (``--input-size 67 --conv-channels 32,64,96,96,64 ...``).
Computed from the configuration alone: nothing is allocated.
"""
import dataclasses

from ..cli import Parser
from ..config import Config, add_config_arguments, config_from_arguments
from ..nn.model import check_input_size, layer_sizes

# §3: "the number of neurons in the network's remaining layers is given by
# 253,440-186,624-64,896-64,896-43,264-4096-4096-1000" (counted at the conv outputs).
PAPER_NEURONS = {"conv1": 253_440, "conv2": 186_624, "conv3": 64_896, "conv4": 64_896,
                 "conv5": 43_264, "fc6": 4096, "fc7": 4096, "fc8": 1000}


def layer_table(config):
    """Rows: (name, output shape, neurons, parameters, multiply-adds per image, per tower, input from)."""
    c, G = config, config.towers
    s = layer_sizes(c)
    C1, C2, C3, C4, C5 = c.conv_channels
    F6, F7 = c.fc_units
    K = c.num_classes
    rows = []

    def conv(name, size, out_ch, in_ch_per_kernel, kernel, source):
        params = out_ch * in_ch_per_kernel * kernel * kernel + out_ch
        macs = size * size * out_ch * in_ch_per_kernel * kernel * kernel
        rows.append((name, (out_ch, size, size), out_ch * size * size, params, macs, macs // G, source))

    def pool(name, size, ch):
        rows.append((name, (ch, size, size), ch * size * size, 0, 0, 0,
                     f"max {c.pool_size}x{c.pool_size}, stride {c.pool_stride}"))

    act = "ReLU" if c.activation == "relu" else "tanh"
    norm = f"{act}, LRN" if c.lrn else act
    own = "own tower" if G > 1 else "the one tower"
    both = "BOTH towers" if G > 1 else "all of pool2"

    def fc(name, out_units, in_units, source, towers):
        macs = out_units * in_units
        rows.append((name, (out_units,), out_units, macs + out_units, macs, macs // towers, source))

    conv("conv1", s["conv1"], C1, 3, 11, f"image; 11x11 stride 4; {norm}")
    pool("pool1", s["pool1"], C1)
    conv("conv2", s["conv2"], C2, C1 // G, 5, f"{own}; 5x5 pad 2; {norm}")
    pool("pool2", s["pool2"], C2)
    conv("conv3", s["conv3"], C3, C2, 3, f"{both}; 3x3 pad 1; {act}")
    conv("conv4", s["conv3"], C4, C3 // G, 3, f"{own}; 3x3 pad 1; {act}")
    conv("conv5", s["conv3"], C5, C4 // G, 3, f"{own}; 3x3 pad 1; {act}")
    pool("pool5", s["pool5"], C5)
    fc("fc6", F6, C5 * s["pool5"] ** 2, f"ALL of pool5; {act}, dropout", G)
    fc("fc7", F7, F6, f"ALL of fc6; {act}, dropout", G)
    fc("fc8", K, F7, "ALL of fc7 (tower 0's device); softmax", 1)
    return rows


def choices(config):
    """The choices docs/design.md says the paper leaves open, as this configuration makes them."""
    c = config
    coef = c.lrn_alpha / c.lrn_size if c.lrn_alpha_over_n else c.lrn_alpha
    s = layer_sizes(c)
    return [
        ("input size", f"{c.input_size}x{c.input_size} crops of {c.image_size}x{c.image_size} images: "
                       f"11x11 kernels at stride 4 give {s['conv1']}x{s['conv1']} exactly "
                       "(the paper prints 224, which needs padding or rounding; Caffe uses 227)"),
        ("LRN", f"k={c.lrn_k}, n={c.lrn_size}, beta={c.lrn_beta}, coefficient on the sum of squares "
                f"{coef:g} = " + ("alpha/n (cuda-convnet, Caffe, PyTorch)" if c.lrn_alpha_over_n
                                  else "alpha, as printed in §3.3")
                + ("; the window crosses the towers (one LRN over all maps, as Caffe)" if c.lrn_across_towers
                   else "; each tower normalises its own maps")),
        ("dropout", f"p={c.dropout}; " + ("kept units x 1/(1-p) at training, identity at test (inverted)"
                                          if c.dropout_inverted else
                                          "mask only at training, outputs x (1-p) at test, as §4.2")),
        ("weight decay", f"{c.weight_decay} x lr, on weights" + (" and biases" if c.decay_biases
                                                                  else " only (biases not decayed)")),
        ("PCA lighting", f"a_i ~ N(0, {c.lighting_std}) scaled by sqrt(eigenvalue) of the 0-255 RGB "
                         "covariance of the training pixels (the authors' code)"),
        ("mean", "per-pixel mean image of the training set, cropped and flipped with the image"
                 if c.mean == "pixel" else "per-channel mean of the training set"),
        ("init", f"weights N(0, {c.init_std}); biases 1 in conv2, conv4, conv5, fc6, fc7, else 0 (§5)"),
        ("switches", switches(c)),
        ("dtype", c.dtype),
    ]


def switches(config):
    """The paper's tricks as this configuration sets them (experiments.py switches each off)."""
    c = config
    pooling = "overlapping" if c.pool_stride < c.pool_size else "non-overlapping"
    return ", ".join([
        f"activation {c.activation} (§3.1)", f"towers {c.towers} (§3.2)",
        f"LRN {'on' if c.lrn else 'off'} (§3.3)",
        f"pooling {c.pool_size}/{c.pool_stride}, {pooling} (§3.4)",
        f"random crops {'on' if c.random_crop else 'off (centre crops)'}, "
        f"flips {'on' if c.flip else 'off'}, lighting std {c.lighting_std} (§4.1)",
        f"dropout {c.dropout} (§4.2)"])


def format_summary(config):
    rows = layer_table(config)
    paper = config == Config() or config.architecture() == Config().architecture()
    towers = f"{config.towers} tower" + ("s" if config.towers > 1 else "")
    lines = [f"AlexNet, {towers}, {config.num_classes} classes, input "
             f"3x{config.input_size}x{config.input_size}",
             "",
             f"{'layer':6} {'output (C,H,W)':>16} {'neurons':>10} {'paper':>10} {'parameters':>12} "
             f"{'mult-adds/img':>14} {'per tower':>13}  input from",
             "-" * 112]
    for name, shape, neurons, params, macs, per_tower, source in rows:
        paper_neurons = f"{PAPER_NEURONS[name]:,}" if paper and name in PAPER_NEURONS else ""
        shape_text = "x".join(map(str, shape))
        lines.append(f"{name:6} {shape_text:>16} {neurons:>10,} {paper_neurons:>10} {params:>12,} "
                     f"{macs:>14,} {per_tower:>13,}  {source}")
    total_params = sum(r[3] for r in rows)
    total_macs = sum(r[4] for r in rows)
    lines += ["-" * 112,
              f"{'total':6} {'':>16} {'':>10} {'':>10} {total_params:>12,} {total_macs:>14,}"]
    if paper:
        lines += ["",
                  "Neurons: the paper prints 253,440 for conv1; its output is 55x55x96 = 290,400 "
                  "(a known misprint). The other figures agree.",
                  f"Parameters: {total_params:,} (the paper: \"60 million\"; exactly 60,965,224 expected)."]
    lines += ["", "Choices the paper leaves open (docs/design.md, the section of that name):"]
    lines += [f"  {name:13} {text}" for name, text in choices(config)]
    return "\n".join(lines)


# The fields the summary shows: all but the schedule's and the seed (nothing is trained or drawn).
FIELDS = tuple(f.name for f in dataclasses.fields(Config)
               if f.name not in ("batch_size", "lr", "momentum", "epochs", "lr_patience", "lr_drops", "seed"))


def main(argv=None):
    parser = Parser(prog="python -m alexnet_np.paper.summary", description=__doc__.splitlines()[0])
    add_config_arguments(parser, fields=FIELDS)
    args = parser.parse_args(argv)
    try:
        config = config_from_arguments(args)
        check_input_size(config)
        print(format_summary(config))
    except ValueError as error:
        parser.exit(2, f"error: {error}\n")


if __name__ == "__main__":
    main()
