"""Convert a pretrained Caffe AlexNet (BVLC's ``bvlc_alexnet.caffemodel``) into our checkpoint.

    python -m alexnet_np.interop.convert caffe bvlc_alexnet.caffemodel OUT.npz [--mean imagenet_mean.binaryproto]
        [--classes synset_words.txt]

Dimensions:
    F  filters / units    C  input channels    KH, KW  kernel    G  towers (2)    K  classes

BVLC's model is the paper's two-tower net (Figure 2): Caffe's ``group: 2`` in conv2, conv4
and conv5 *is* the split over two GPUs, group g being tower g. So every layer is cut in two
along its output axis, the first half going to tower 0 and the second to tower 1:

    Caffe blob                      our parameter               cut / note
    conv1 W (96, 3, 11, 11)      -> tower{g}.conv1.W (48, 3, 11, 11)   rows g*48.., input channels
                                                                        reversed: Caffe reads BGR, we RGB
    conv2 W (256, 48, 5, 5) g=2  -> tower{g}.conv2.W (128, 48, 5, 5)   group g reads tower g's 48 maps
    conv3 W (384, 256, 3, 3) g=1 -> tower{g}.conv3.W (192, 256, 3, 3)  crossing: reads both towers' pool2,
                                                                        tower 0's 128 maps first, as ours
    conv4 W (384, 192, 3, 3) g=2 -> tower{g}.conv4.W (192, 192, 3, 3)
    conv5 W (256, 192, 3, 3) g=2 -> tower{g}.conv5.W (128, 192, 3, 3)
    fc6 W (4096, 9216)           -> tower{g}.fc6.W (2048, 9216)        crossing: pool5 flattened C-order
                                                                        over (channel, row, column), group 0's
                                                                        128 channels first, as our exchange
    fc7 W (4096, 4096)           -> tower{g}.fc7.W (2048, 4096)        crossing
    fc8 W (1000, 4096)           -> fc8.W (1000, 4096)                 on tower 0's device
    every bias b (F,)            -> cut as its layer's rows

Caffe's conventions, carried into the checkpoint's configuration:
- LRN: ``k`` and ``alpha`` from the model (BVLC: k = 1, alpha = 1e-4), and Caffe divides
  alpha by the window size n (``lrn_alpha_over_n = True``).
- LRN's window runs over all of conv1's 96 (conv2's 256) maps, crossing the towers'
  boundary, where the paper's two GPUs normalised each their own (``lrn_across_towers``).
- Dropout scales at training time (``dropout_inverted = True``); at test time it is the identity.
- Input 227 (found from fc6's input size: 6 x 6 pool5 maps). Caffe's pooling rounds output
  sizes up, ours requires an exact fit; at 227 every pooling fits exactly (55 -> 27 -> 13 -> 6),
  so the two agree, and a model whose sizes do not fit is refused.
- Pixels: 0-255 levels minus the mean image, no scaling, which is what our pipeline feeds.
  Caffe's images are BGR: reversing conv1's input channels lets our RGB pipeline feed it.
- The mean: Caffe's mean image (``--mean``, a 256 x 256 BGR blob) is converted to RGB and
  stored in the checkpoint; evaluation then subtracts it instead of the data's own mean.
  Without ``--mean`` the data's (training) mean image is used. A mean of another side R
  (>= the input) makes the checkpoint's images R x R, said in one line; a smaller one, or a
  file of several images, is refused.
- Classes: output k is the k-th WordNet id in sorted order (the order of Caffe's
  synset_words.txt), stored in the checkpoint so that evaluation can match any data set's
  class folders to outputs by WordNet id. Default list: ``alexnet_np/ilsvrc2012_synset_words.txt``.

Refused with one line ``error: ...`` (exit status 2): a file that is not a Caffe model, a net
that is not this architecture (e.g. CaffeNet, which pools before normalising; a one-tower
net), a mean or class list that does not fit.
"""
import hashlib
import os
import sys

import numpy as np

from ..train import checkpoint
from ..data import ilsvrc
from .caffe_proto import CaffeError, layers_of, read_blob, read_net
from ..cli import Parser, existing_file, output_file
from ..config import Config
from ..nn.model import AlexNet, layer_sizes

# The layer sequence of the paper's net, one letter per layer: Convolution, ReLU, LRN,
# Pooling, InnerProduct, Dropout. Data, loss, accuracy and softmax layers are skipped.
LETTERS = {"Convolution": "C", "ReLU": "R", "LRN": "L", "Pooling": "P", "InnerProduct": "I", "Dropout": "D"}
ALEXNET = "CRLP" "CRLP" "CR" "CR" "CRP" "IRD" "IRD" "I"      # §3, Figure 2: ReLU, then LRN, then pooling
CAFFENET = "CRPL" "CRPL" "CR" "CR" "CRP" "IRD" "IRD" "I"     # bvlc_reference_caffenet: pooling before LRN
CONV_SHAPE = [  # (kernel, stride, pad, group) of conv1..conv5 in Figure 2, the towers as groups
    (11, 4, 0, 1), (5, 1, 2, 2), (3, 1, 1, 1), (3, 1, 1, 2), (3, 1, 1, 2)]
CONV_NAMES = ["conv1", "conv2", "conv3", "conv4", "conv5"]
FC_NAMES = ["fc6", "fc7", "fc8"]
CAFFE_IMAGE_SIZE = 256   # BVLC's images (and mean) are 256 x 256; the net's crops are cut from them


def _one(values, default):
    """Caffe's repeated kernel/stride/pad fields: one value for both axes (or the default)."""
    values = list(values)
    if len(set(values)) > 1:
        raise CaffeError(f"different values per axis ({values}): AlexNet's kernels are square")
    return values[0] if values else default


def paper_layers(path, layers):
    """The convolutions, inner products, LRN and dropout layers of a net that is AlexNet, checked."""
    compute = [l for l in layers if l.type in LETTERS]
    found = "".join(LETTERS[l.type] for l in compute)
    if found == CAFFENET:
        raise CaffeError(f"{path} is CaffeNet (pooling before LRN), not the paper's AlexNet "
                         "(LRN before pooling, §3.4): our network cannot run it unchanged")
    if found != ALEXNET:
        raise CaffeError(f"{path}: its layers {found} (C conv, R ReLU, L LRN, P pool, I fc, D dropout) "
                         f"are not AlexNet's {ALEXNET}")
    convs = [l for l in compute if l.type == "Convolution"]
    fcs = [l for l in compute if l.type == "InnerProduct"]
    lrns = [l for l in compute if l.type == "LRN"]
    pools = [l for l in compute if l.type == "Pooling"]
    drops = [l for l in compute if l.type == "Dropout"]
    for name, layer, (kernel, stride, pad, group) in zip(CONV_NAMES, convs, CONV_SHAPE):
        p = layer.param
        got = (_one(p.kernel_size, None), _one(p.stride, 1), _one(p.pad, 0), p.group)
        if got != (kernel, stride, pad, group):
            what = " (a one-tower net: the paper's has two, Caffe's group 2)" if group == 2 and p.group == 1 else ""
            raise CaffeError(f"{path}: {name} ({layer.name}) has kernel, stride, pad, group {got}, "
                             f"AlexNet's are {(kernel, stride, pad, group)}{what}")
        if len(layer.blobs) != 2:
            raise CaffeError(f"{path}: {name} ({layer.name}) has {len(layer.blobs)} blobs, not weights and bias")
    for name, layer in zip(FC_NAMES, fcs):
        if len(layer.blobs) != 2 or layer.param.transpose:
            raise CaffeError(f"{path}: {name} ({layer.name}) is not a plain fully connected layer with a bias")
    for layer in pools:
        p = layer.param
        if (p.pool, p.kernel_size, p.stride, p.pad) != (0, 3, 2, 0):
            raise CaffeError(f"{path}: pooling {layer.name} is not max pooling 3x3 at stride 2 (§3.4)")
    lrn = [(l.param.local_size, l.param.alpha, l.param.beta, l.param.k, l.param.norm_region) for l in lrns]
    if lrn[0] != lrn[1] or lrn[0][4] != 0:
        raise CaffeError(f"{path}: the two LRN layers differ or do not normalise across channels: {lrn}")
    ratios = {l.param.dropout_ratio for l in drops}
    if len(ratios) != 1:
        raise CaffeError(f"{path}: the two dropout layers have different ratios {sorted(ratios)}")
    return convs, fcs, lrns[0].param, ratios.pop()


def input_size_for(pool5):
    """The input side S whose maps fit exactly and end at ``pool5`` x ``pool5`` (227 for 6)."""
    size = pool5
    for _ in range(3):            # pool5, pool2, pool1: 3x3 at stride 2
        size = (size - 1) * 2 + 3
    return (size - 1) * 4 + 11    # conv1: 11x11 at stride 4 (conv2-5 keep the size)


def caffe_config(path, convs, fcs, lrn, dropout, image_size):
    """Our ``Config`` for the Caffe model: widths from its blobs, Caffe's conventions named."""
    channels = tuple(int(l.blobs[0].shape[0]) for l in convs)
    W6, W7, W8 = (l.blobs[0].reshape(l.blobs[0].shape[-2:]) if l.blobs[0].ndim == 4 else l.blobs[0] for l in fcs)
    pool5 = int(round(np.sqrt(W6.shape[1] / channels[4])))
    if pool5 * pool5 * channels[4] != W6.shape[1]:
        raise CaffeError(f"{path}: fc6 reads {W6.shape[1]} values, not a square map of conv5's {channels[4]} channels")
    try:
        config = Config(num_classes=int(W8.shape[0]), input_size=input_size_for(pool5), towers=2,
                        conv_channels=channels, fc_units=(int(W6.shape[0]), int(W7.shape[0])),
                        lrn_size=int(lrn.local_size), lrn_k=float(lrn.k), lrn_alpha=float(lrn.alpha),
                        lrn_beta=float(lrn.beta), lrn_alpha_over_n=True,   # Caffe: alpha / n
                        lrn_across_towers=True,                            # Caffe: one LRN over all maps
                        dropout=float(dropout), dropout_inverted=True,     # Caffe: scaled at training time
                        image_size=image_size, dtype="float32")
    except ValueError as error:   # e.g. a width that does not halve into two towers
        raise CaffeError(f"{path}: {error}") from None
    assert layer_sizes(config)["pool5"] == pool5
    if config.input_size > image_size:
        raise CaffeError(f"{path}: input {config.input_size} does not fit in {image_size} x {image_size} images")
    return config


def tower_weights(convs, fcs, config):
    """{our parameter name: array} from Caffe's blobs (the table in the module docstring)."""
    G = config.towers
    state = {}
    for name, layer in zip(CONV_NAMES, convs):
        W, b = layer.blobs                                       # (F, C/group, KH, KW), bias (F,) or (1,1,1,F)
        W, b = W.reshape(W.shape[-4:]), b.reshape(-1)
        if name == "conv1":
            W = W[:, ::-1]                                       # BGR -> RGB input channels
        F = W.shape[0] // G
        for g in range(G):
            state[f"tower{g}.{name}.W"] = W[g * F:(g + 1) * F]  # (F/G, C, KH, KW): group g = tower g
            state[f"tower{g}.{name}.b"] = b[g * F:(g + 1) * F]  # (F/G,)
    for name, layer in zip(FC_NAMES, fcs):
        W, b = layer.blobs
        W, b = W.reshape(W.shape[-2:]), b.reshape(-1)            # V1 stores (1, 1, K, D)
        if name == "fc8":
            state["fc8.W"], state["fc8.b"] = W, b               # (K, D), (K,)
            continue
        F = W.shape[0] // G
        for g in range(G):
            state[f"tower{g}.{name}.W"] = W[g * F:(g + 1) * F]  # (F/G, D): reads all of the layer below
            state[f"tower{g}.{name}.b"] = b[g * F:(g + 1) * F]
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in state.items()}


def mean_image_rgb(path):
    """Caffe's mean blob (1, 3, R, R) BGR -> (R, R, 3) float32 RGB, in 0-255 levels."""
    blob = read_blob(path)
    if blob.ndim > 3 and int(np.prod(blob.shape[:-3])) != 1:
        raise CaffeError(f"mean {path}: shape {blob.shape} holds {int(np.prod(blob.shape[:-3]))} images, "
                         "a mean file one: (1, 3, R, R) (Caffe's BGR mean image)")
    squeezed = blob.reshape(blob.shape[-3:]) if blob.ndim >= 3 else blob
    if squeezed.ndim != 3 or squeezed.shape[0] != 3 or squeezed.shape[1] != squeezed.shape[2]:
        raise CaffeError(f"mean {path}: shape {blob.shape}, expected (1, 3, R, R) (Caffe's BGR mean image)")
    return np.ascontiguousarray(squeezed[::-1].transpose(1, 2, 0), dtype=np.float32)   # (R, R, C) RGB


def sized_by_mean(mean_path, side, config, print_fn):
    """The configuration for a mean image of another side than Caffe's 256: the stored images
    are then ``side`` x ``side`` (said in one line); refused where crops of the input cannot be cut."""
    if side < config.input_size:
        raise CaffeError(f"mean {mean_path}: {side} x {side}, smaller than the net's input {config.input_size}: "
                         f"crops of {config.input_size} cannot be cut from it (Caffe's mean is {CAFFE_IMAGE_SIZE} x "
                         f"{CAFFE_IMAGE_SIZE})")
    print_fn(f"mean image: {side} x {side}, not Caffe's {CAFFE_IMAGE_SIZE}: the checkpoint's images are {side} x "
             f"{side}, so evaluation prepares (or needs) data at --image-size {side}")
    return config.replace(image_size=side)


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def convert_caffe(model_path, out_path, mean_path=None, classes_path=None, print_fn=print):
    """Write our checkpoint of a Caffe AlexNet. Returns ``(out_path, config)``; ``CaffeError`` (one line)."""
    net = read_net(model_path)
    try:
        layers, layout = layers_of(net)
    except CaffeError as error:
        raise CaffeError(f"{model_path}: {error}") from None
    convs, fcs, lrn, dropout = paper_layers(model_path, layers)
    mean = mean_image_rgb(mean_path) if mean_path else None                     # (R, R, C) or None
    config = caffe_config(model_path, convs, fcs, lrn, dropout, CAFFE_IMAGE_SIZE)
    if mean is not None and mean.shape[0] != CAFFE_IMAGE_SIZE:
        config = sized_by_mean(mean_path, mean.shape[0], config, print_fn)
    classes_path = classes_path or ilsvrc.ILSVRC2012_SYNSETS
    try:
        wnids, names = ilsvrc.read_synsets(classes_path)
    except ilsvrc.LabelError as error:
        raise CaffeError(str(error)) from None
    if len(wnids) != config.num_classes:
        raise CaffeError(f"{model_path}: fc8 has {config.num_classes} outputs, the class list {classes_path} "
                         f"{len(wnids)} classes: give --classes with one line per output")
    model = AlexNet(config)
    try:
        model.load_state_dict(tower_weights(convs, fcs, config))
    except ValueError as error:
        raise CaffeError(f"{model_path}: its blobs do not fit the two-tower net ({error})") from None
    meta = {"position": {"epoch": 0, "batch": 0, "step": 0},
            "classes": wnids, "class_names": names,
            "converted_from": {"framework": "caffe", "file": os.path.abspath(model_path),
                               "sha256": sha256(model_path), "net": net.name, "layout": layout,
                               "mean": os.path.abspath(mean_path) if mean_path else None,
                               "classes": os.path.abspath(classes_path),
                               "conventions": "BGR input (conv1 channels reversed), LRN k and alpha/n, "
                                              "dropout scaled at training time, input 227, 0-255 pixels "
                                              "minus the mean image"}}
    checkpoint.save_weights(out_path, model, meta, mean_image=mean)
    print_fn(f"{model_path}: {layout}, net {net.name!r}: conv {config.conv_channels}, fc {config.fc_units}, "
             f"{config.num_classes} classes, input {config.input_size}, LRN k={config.lrn_k:g} "
             f"alpha={config.lrn_alpha:g}/n beta={config.lrn_beta:g}, {model.num_parameters():,} parameters")
    print_fn(f"mean image: {mean_path} (BGR converted to RGB)" if mean_path
             else "mean image: none given; evaluation will subtract the data's own mean image")
    print_fn(f"wrote {out_path}")
    return out_path, config


def main(argv=None):
    parser = Parser(prog="python -m alexnet_np.interop.convert",
                    description="Convert a pretrained model into an alexnet_np checkpoint.")
    sub = parser.add_subparsers(dest="framework", required=True)
    caffe = sub.add_parser("caffe", help="a Caffe AlexNet (.caffemodel), e.g. BVLC's bvlc_alexnet")
    caffe.add_argument("model", type=existing_file, help="the .caffemodel file")
    caffe.add_argument("out", type=output_file, help="the checkpoint to write (.npz)")
    caffe.add_argument("--mean", type=existing_file, default=None,
                       help="Caffe's mean image (imagenet_mean.binaryproto); default: the data's mean at evaluation")
    caffe.add_argument("--classes", type=existing_file, default=None,
                       help="the classes of the outputs in order, '<wnid> <names>' per line (synset_words.txt, "
                            "LOC_synset_mapping.txt); default: ILSVRC-2012's 1000, sorted by WordNet id")
    args = parser.parse_args(argv)
    try:
        convert_caffe(args.model, args.out, args.mean, args.classes)
    except CaffeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
