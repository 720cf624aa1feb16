"""The Caffe converter: a small two-tower Caffe AlexNet, written here with the protobuf package
in both of Caffe's layouts, converted, and run through our net and data pipeline, must give
the logits of an independent PyTorch implementation of Caffe's conventions (float64).

Dimensions: N images, S input side (99 here: pool5 is 2 x 2, so fc6's flatten order over
(channel, row, column) is tested), R stored side, C channels, K classes.

The Caffe messages are declared here again, from BVLC's caffe.proto, independently of
``alexnet_np/interop/caffe_proto.py``: the field numbers typed twice must agree for the test to pass.
"""
import json
import os

import numpy as np
import pytest

pytest.importorskip("google.protobuf")
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory  # noqa: E402
from PIL import Image  # noqa: E402

from alexnet_np.train import checkpoint, classmap  # noqa: E402
from alexnet_np.interop import convert  # noqa: E402
from alexnet_np.nn.backend import Device  # noqa: E402
from alexnet_np.data.loader import Cache, eval_batches  # noqa: E402
from alexnet_np.data.ilsvrc import read_synsets, ILSVRC2012_SYNSETS  # noqa: E402
from alexnet_np.nn.model import AlexNet  # noqa: E402
from alexnet_np.data.prepare import prepare  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
S, R = 99, 110
CONV = (16, 32, 48, 48, 32)      # conv1..conv5, both towers
FC = (64, 64)
K = 1000
LRN = dict(local_size=5, alpha=0.05, beta=0.75, k=1.0)   # a large alpha, so that LRN matters


# --------------------------------------------------------------------------- Caffe's messages, again

def _caffe_classes():
    """Message classes for BlobShape, BlobProto, the layer parameters, both layer layouts, NetParameter."""
    F = descriptor_pb2.FieldDescriptorProto
    OPT, REP = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    spec = {
        "BlobShape": [("dim", 1, F.TYPE_INT64, REP, None)],
        "BlobProto": [("num", 1, F.TYPE_INT32, OPT, None), ("channels", 2, F.TYPE_INT32, OPT, None),
                      ("height", 3, F.TYPE_INT32, OPT, None), ("width", 4, F.TYPE_INT32, OPT, None),
                      ("data", 5, F.TYPE_FLOAT, REP, None), ("shape", 7, F.TYPE_MESSAGE, OPT, "BlobShape")],
        "ConvolutionParameter": [("num_output", 1, F.TYPE_UINT32, OPT, None), ("pad", 3, F.TYPE_UINT32, REP, None),
                                 ("kernel_size", 4, F.TYPE_UINT32, REP, None), ("group", 5, F.TYPE_UINT32, OPT, None),
                                 ("stride", 6, F.TYPE_UINT32, REP, None)],
        "PoolingParameter": [("pool", 1, F.TYPE_INT32, OPT, None), ("kernel_size", 2, F.TYPE_UINT32, OPT, None),
                             ("stride", 3, F.TYPE_UINT32, OPT, None)],
        "LRNParameter": [("local_size", 1, F.TYPE_UINT32, OPT, None), ("alpha", 2, F.TYPE_FLOAT, OPT, None),
                         ("beta", 3, F.TYPE_FLOAT, OPT, None), ("k", 5, F.TYPE_FLOAT, OPT, None)],
        "InnerProductParameter": [("num_output", 1, F.TYPE_UINT32, OPT, None)],
        "DropoutParameter": [("dropout_ratio", 1, F.TYPE_FLOAT, OPT, None)],
        "LayerParameter": [("name", 1, F.TYPE_STRING, OPT, None), ("type", 2, F.TYPE_STRING, OPT, None),
                           ("bottom", 3, F.TYPE_STRING, REP, None), ("top", 4, F.TYPE_STRING, REP, None),
                           ("blobs", 7, F.TYPE_MESSAGE, REP, "BlobProto"),
                           ("convolution_param", 106, F.TYPE_MESSAGE, OPT, "ConvolutionParameter"),
                           ("dropout_param", 108, F.TYPE_MESSAGE, OPT, "DropoutParameter"),
                           ("inner_product_param", 117, F.TYPE_MESSAGE, OPT, "InnerProductParameter"),
                           ("lrn_param", 118, F.TYPE_MESSAGE, OPT, "LRNParameter"),
                           ("pooling_param", 121, F.TYPE_MESSAGE, OPT, "PoolingParameter")],
        "V1LayerParameter": [("bottom", 2, F.TYPE_STRING, REP, None), ("top", 3, F.TYPE_STRING, REP, None),
                             ("name", 4, F.TYPE_STRING, OPT, None), ("type", 5, F.TYPE_INT32, OPT, None),
                             ("blobs", 6, F.TYPE_MESSAGE, REP, "BlobProto"),
                             ("convolution_param", 10, F.TYPE_MESSAGE, OPT, "ConvolutionParameter"),
                             ("dropout_param", 12, F.TYPE_MESSAGE, OPT, "DropoutParameter"),
                             ("inner_product_param", 17, F.TYPE_MESSAGE, OPT, "InnerProductParameter"),
                             ("lrn_param", 18, F.TYPE_MESSAGE, OPT, "LRNParameter"),
                             ("pooling_param", 19, F.TYPE_MESSAGE, OPT, "PoolingParameter")],
        "NetParameter": [("name", 1, F.TYPE_STRING, OPT, None),
                         ("layers", 2, F.TYPE_MESSAGE, REP, "V1LayerParameter"),
                         ("layer", 100, F.TYPE_MESSAGE, REP, "LayerParameter")],
    }
    file = descriptor_pb2.FileDescriptorProto(name="test_caffe.proto", package="testcaffe", syntax="proto2")
    for name, fields in spec.items():
        m = file.message_type.add(name=name)
        for fname, number, ftype, label, tname in fields:
            f = m.field.add(name=fname, number=number, type=ftype, label=label)
            if tname:
                f.type_name = f".testcaffe.{tname}"
            if (name, fname) in (("BlobProto", "data"), ("BlobShape", "dim")):
                f.options.packed = True          # as caffe.proto declares them, and Caffe writes them
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"testcaffe.{n}")) for n in spec}


MSG = _caffe_classes()
V1_ENUM = {"Data": 5, "Convolution": 4, "ReLU": 18, "LRN": 15, "Pooling": 17, "InnerProduct": 14,
           "Dropout": 6, "SoftmaxWithLoss": 21}


def caffe_blobs(seed=0):
    """Random weights of a small two-tower Caffe AlexNet, Caffe's shapes: {layer: (W, b)}."""
    rng = np.random.default_rng(seed)
    c1, c2, c3, c4, c5 = CONV
    shapes = {"conv1": (c1, 3, 11, 11), "conv2": (c2, c1 // 2, 5, 5), "conv3": (c3, c2, 3, 3),
              "conv4": (c4, c3 // 2, 3, 3), "conv5": (c5, c4 // 2, 3, 3),
              "fc6": (FC[0], c5 * 2 * 2), "fc7": (FC[1], FC[0]), "fc8": (K, FC[1])}
    blobs = {}
    for name, shape in shapes.items():
        fan_in = int(np.prod(shape[1:]))
        W = (rng.standard_normal(shape) * 1.5 / np.sqrt(fan_in)).astype(np.float32)
        b = rng.uniform(-0.5, 0.5, shape[0]).astype(np.float32)
        blobs[name] = (W, b)
    return blobs


def net_layers(caffenet=False, one_tower=False):
    """[(name, type, params)] in Caffe's order for AlexNet (or CaffeNet: pooling before LRN)."""
    groups = {"conv1": 1, "conv2": 2, "conv3": 1, "conv4": 2, "conv5": 2}
    if one_tower:
        groups = dict.fromkeys(groups, 1)
    conv = {"conv1": (11, 4, 0), "conv2": (5, 1, 2), "conv3": (3, 1, 1), "conv4": (3, 1, 1), "conv5": (3, 1, 1)}
    out = [("data", "Data", {})]
    for i, name in enumerate(["conv1", "conv2", "conv3", "conv4", "conv5"], 1):
        out.append((name, "Convolution", {"conv": conv[name] + (groups[name],)}))
        out.append((f"relu{i}", "ReLU", {}))
        norm_pool = [(f"norm{i}", "LRN", {}), (f"pool{i}", "Pooling", {})] if i <= 2 else []
        if i == 5:
            norm_pool = [("pool5", "Pooling", {})]
        out += norm_pool[::-1] if caffenet else norm_pool
    for i, name in enumerate(["fc6", "fc7", "fc8"], 6):
        out.append((name, "InnerProduct", {}))
        if name != "fc8":
            out += [(f"relu{i}", "ReLU", {}), (f"drop{i}", "Dropout", {})]
    out.append(("loss", "SoftmaxWithLoss", {}))
    return out


def _fill_blob(blob, array, v1):
    if v1:   # the 2014 layout: always num, channels, height, width
        shape = (1,) * (4 - array.ndim) + array.shape
        blob.num, blob.channels, blob.height, blob.width = shape
    else:
        blob.shape.dim.extend(array.shape)
    blob.data.extend(array.ravel().tolist())


def write_caffemodel(path, blobs, v1, **variant):
    net = MSG["NetParameter"](name="AlexNet")
    for name, kind, params in net_layers(**variant):
        layer = net.layers.add() if v1 else net.layer.add()
        layer.name = name
        layer.type = V1_ENUM[kind] if v1 else kind
        if kind == "Convolution":
            kernel, stride, pad, group = params["conv"]
            p = layer.convolution_param
            p.num_output = blobs[name][0].shape[0]
            p.kernel_size.append(kernel)
            p.stride.append(stride)
            if pad:
                p.pad.append(pad)
            if group != 1:
                p.group = group
        elif kind == "LRN":
            for key, value in LRN.items():
                setattr(layer.lrn_param, key, value)
        elif kind == "Pooling":
            layer.pooling_param.pool = 0
            layer.pooling_param.kernel_size = 3
            layer.pooling_param.stride = 2
        elif kind == "InnerProduct":
            layer.inner_product_param.num_output = blobs[name][0].shape[0]
        elif kind == "Dropout":
            layer.dropout_param.dropout_ratio = 0.5
        if name in blobs:
            for array in blobs[name]:
                _fill_blob(layer.blobs.add(), array, v1)
    with open(path, "wb") as f:
        f.write(net.SerializeToString())


def write_mean(path, mean_bgr):
    """Caffe's mean file: one BlobProto (1, 3, R, R), BGR."""
    blob = MSG["BlobProto"]()
    _fill_blob(blob, mean_bgr[None], v1=True)
    with open(path, "wb") as f:
        f.write(blob.SerializeToString())


# --------------------------------------------------------------------------- the independent reference

def caffe_logits(blobs, images_bgr):
    """Caffe's forward pass at test time in PyTorch, float64: images (N, 3, S, S) BGR, mean subtracted."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    t = {k: (torch.from_numpy(W.astype(np.float64)), torch.from_numpy(b.astype(np.float64)))
         for k, (W, b) in blobs.items()}
    x = torch.from_numpy(images_bgr.astype(np.float64))

    def lrn(a):  # Caffe: a / (k + alpha/n * sum of squares over n channels)^beta; PyTorch divides alpha by n too
        alpha, beta, k = (float(np.float32(LRN[key])) for key in ("alpha", "beta", "k"))  # Caffe stores float32
        return F.local_response_norm(a, LRN["local_size"], alpha=alpha, beta=beta, k=k)

    def pool(a):  # Caffe rounds the output size up
        return F.max_pool2d(a, 3, 2, ceil_mode=True)

    x = pool(lrn(F.relu(F.conv2d(x, *t["conv1"], stride=4))))
    x = pool(lrn(F.relu(F.conv2d(x, *t["conv2"], padding=2, groups=2))))
    x = F.relu(F.conv2d(x, *t["conv3"], padding=1))
    x = F.relu(F.conv2d(x, *t["conv4"], padding=1, groups=2))
    x = pool(F.relu(F.conv2d(x, *t["conv5"], padding=1, groups=2)))
    x = x.reshape(x.shape[0], -1)                   # Caffe's flatten: (channel, row, column), C-order
    x = F.relu(F.linear(x, *t["fc6"]))              # dropout: the identity at test time
    x = F.relu(F.linear(x, *t["fc7"]))
    return F.linear(x, *t["fc8"]).numpy()           # (N, K)


# --------------------------------------------------------------------------- fixtures

def convert_small_model(folder, layouts=("v1", "v2")):
    """The small Caffe model written in each layout (``v1``: ``layers``, ``v2``: ``layer``) with
    its mean image into ``folder`` (a pathlib.Path), and converted: ``(blobs, mean_bgr (C, R, R),
    {layout: checkpoint path})``. Also used by tests/test_classify.py."""
    blobs = caffe_blobs()
    mean_bgr = np.random.default_rng(1).uniform(60, 180, (3, R, R)).astype(np.float32)   # (C, R, R) BGR
    write_mean(folder / "mean.binaryproto", mean_bgr)
    out = {}
    for v in layouts:
        write_caffemodel(folder / f"alexnet_{v}.caffemodel", blobs, v1=v == "v1")
        out[v] = str(folder / f"{v}.npz")
        convert.convert_caffe(str(folder / f"alexnet_{v}.caffemodel"), out[v], str(folder / "mean.binaryproto"),
                              print_fn=lambda *a: None)
    return blobs, mean_bgr, out


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("caffe")
    blobs, mean_bgr, out = convert_small_model(folder)
    return folder, blobs, mean_bgr, out


def _model64(ckpt):
    config = ckpt.config.replace(dtype="float64")
    model = AlexNet(config, [Device(), Device()])
    model.load_state_dict(ckpt.params)
    return config, model


# --------------------------------------------------------------------------- tests

def test_both_layouts_give_the_same_checkpoint_with_caffes_conventions(model_files):
    _, blobs, mean_bgr, out = model_files
    v1, v2 = checkpoint.load(out["v1"]), checkpoint.load(out["v2"])
    assert v1.params.keys() == v2.params.keys()
    for name in v1.params:
        np.testing.assert_array_equal(v1.params[name], v2.params[name])
    c = v1.config
    assert (c.input_size, c.conv_channels, c.fc_units, c.num_classes, c.image_size) == (S, CONV, FC, K, R)
    assert (c.lrn_k, c.lrn_alpha_over_n, c.dropout_inverted, c.lrn_size, c.lrn_beta) == (1.0, True, True, 5, 0.75)
    assert c.lrn_alpha == pytest.approx(LRN["alpha"])
    np.testing.assert_array_equal(v1.mean_image, mean_bgr[::-1].transpose(1, 2, 0))    # RGB, (R, R, C)
    wnids, _ = read_synsets(ILSVRC2012_SYNSETS)
    assert v1.meta["classes"] == wnids and v1.meta["classes"] == sorted(wnids) and len(wnids) == K
    assert not v1.velocity and v1.meta["converted_from"]["layout"].startswith("layers (V1")
    # group g of Caffe's conv2 is tower g; conv1 reads RGB: Caffe's input channels reversed
    np.testing.assert_array_equal(v1.params["tower1.conv2.W"], blobs["conv2"][0][CONV[1] // 2:])
    np.testing.assert_array_equal(v1.params["tower0.conv1.W"][:, 0], blobs["conv1"][0][:CONV[0] // 2, 2])


def test_logits_equal_caffes_conventions_in_pytorch(model_files):
    """Our net on RGB images minus the RGB mean == PyTorch-as-Caffe on BGR images minus the BGR mean."""
    _, blobs, mean_bgr, out = model_files
    _, model = _model64(checkpoint.load(out["v2"]))
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (3, S, S, 3)).astype(np.float64)                    # (N, S, S, C) RGB
    top = (R - S) // 2
    mean_crop_bgr = mean_bgr[:, top:top + S, top:top + S].astype(np.float64)       # (C, S, S)
    bgr_input = rgb[..., ::-1].transpose(0, 3, 1, 2) - mean_crop_bgr               # (N, C, S, S) BGR
    rgb_input = rgb.transpose(0, 3, 1, 2) - mean_crop_bgr[::-1]                    # (N, C, S, S) RGB
    expected = caffe_logits(blobs, bgr_input)                                      # (N, K)
    ours = model.forward(rgb_input, train=False)
    assert np.abs(expected).max() > 1.0 and expected.std(axis=1).min() > 0.1      # not a degenerate net
    np.testing.assert_allclose(ours, expected, rtol=1e-10, atol=1e-10 * np.abs(expected).max())


@pytest.fixture(scope="module")
def photo_cache(tmp_path_factory):
    """A folder of a few photos in three ILSVRC class folders (wnids), prepared at R."""
    src = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(3)
    for wnid in ("n01440764", "n02119789", "n15075141"):
        (src / "train" / wnid).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (130, 150, 3), dtype=np.uint8)).save(src / "train" / wnid / f"{i}.png")
    dst = str(tmp_path_factory.mktemp("photos_cache") / "c")
    prepare(str(src), dst, image_size=R, workers=1, progress=False, print_fn=lambda *a: None)
    return dst


def test_pipeline_maps_classes_by_wnid_and_uses_caffes_mean(model_files, photo_cache):
    """Prepared photos -> CheckpointView (labels by wnid, Caffe's mean) -> our net == PyTorch-as-Caffe."""
    _, blobs, mean_bgr, out = model_files
    ckpt = checkpoint.load(out["v1"])
    config, model = _model64(ckpt)
    cache = Cache(photo_cache)
    view = classmap.for_checkpoint(cache, ckpt)
    wnids, _ = read_synsets(ILSVRC2012_SYNSETS)
    assert view.split("train").labels.tolist() == [wnids.index(w) for w in cache.classes for _ in range(2)]
    assert view.class_names[0].startswith("tench")
    (views, labels), = list(eval_batches(view, "train", config, Device(), batch_size=6, threads=0))
    top = (R - S) // 2
    stored = cache.split("train").images[:, top:top + S, top:top + S].astype(np.float64)  # (N, S, S, C) RGB
    bgr_input = stored[..., ::-1].transpose(0, 3, 1, 2) - mean_bgr[:, top:top + S, top:top + S]
    expected = caffe_logits(blobs, bgr_input)
    np.testing.assert_allclose(model.forward(views, train=False), expected, rtol=1e-10,
                               atol=1e-10 * np.abs(expected).max())
    assert labels.tolist() == view.split("train").labels.tolist()


def test_evaluate_and_figures_run_on_the_converted_model(model_files, photo_cache, tmp_path, capsys):
    import evaluate
    import figures as figures_script
    _, _, _, out = model_files
    record = tmp_path / "eval.json"
    assert evaluate.main(["--checkpoint", out["v2"], "--data", photo_cache, "--split", "train", "--device", "cpu",
                          "--no-progress", "--json", str(record), "--ten-crop",
                          "--predictions", str(tmp_path / "p.csv")]) == 0
    result = json.loads(record.read_text())
    assert result["images"] == 6 and result["procedure"] == "ten-crop"
    assert "tench" in (tmp_path / "p.csv").read_text()
    said = capsys.readouterr().out
    assert "3 classes (mapped by WordNet id onto 1000 classes of the checkpoint)" in said, said
    assert figures_script.main(["--checkpoint", out["v2"], "--data", photo_cache, "--split", "train",
                                "--device", "cpu", "--no-progress", "--out", str(tmp_path / "figs")]) == 0
    assert (tmp_path / "figs" / "figure4_neighbours.png").is_file()
    assert not (tmp_path / "figs" / "curves.png").exists()           # no history: no empty axes
    assert "curves.png not drawn" in capsys.readouterr().out


def test_evaluate_replaces_its_json_whole_or_not_at_all(model_files, photo_cache, tmp_path, monkeypatch):
    """A write that fails midway (a full disk) leaves the previous result whole and no temporary."""
    import evaluate
    record = tmp_path / "eval.json"
    record.write_text('{"previous": true}')

    def full_disk(obj, f, **kwargs):
        f.write('{"split": "tr')
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(json, "dump", full_disk)   # the json module evaluate.py writes with
    with pytest.raises(OSError, match="No space"):
        evaluate.main(["--checkpoint", model_files[3]["v2"], "--data", photo_cache, "--split", "train",
                       "--device", "cpu", "--no-progress", "--json", str(record)])
    assert json.loads(record.read_text()) == {"previous": True}
    assert os.listdir(tmp_path) == ["eval.json"]


def test_unknown_class_folder_is_one_line(model_files, tmp_path, capsys):
    import evaluate
    src = tmp_path / "src"
    (src / "train" / "cats").mkdir(parents=True)
    Image.fromarray(np.zeros((120, 120, 3), np.uint8)).save(src / "train" / "cats" / "a.png")
    dst = str(tmp_path / "cache")
    prepare(str(src), dst, image_size=R, workers=1, progress=False, print_fn=lambda *a: None)
    assert evaluate.main(["--checkpoint", model_files[3]["v1"], "--data", dst, "--split", "train",
                          "--device", "cpu", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "cats" in err[0]


@pytest.mark.parametrize("variant, message", [
    (dict(caffenet=True), "CaffeNet"),
    (dict(one_tower=True), "one-tower"),
])
def test_other_architectures_are_refused(tmp_path, capsys, variant, message):
    path = tmp_path / "other.caffemodel"
    blobs = caffe_blobs()
    if variant.get("one_tower"):
        blobs = {k: (np.concatenate([W, W], axis=1) if k in ("conv2", "conv4", "conv5") else W, b)
                 for k, (W, b) in blobs.items()}
    write_caffemodel(path, blobs, v1=False, **variant)
    assert convert.main(["caffe", str(path), str(tmp_path / "out.npz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and not (tmp_path / "out.npz").exists()


def test_bad_files_are_one_line(model_files, tmp_path, capsys):
    folder = model_files[0]
    junk = tmp_path / "junk.caffemodel"
    junk.write_bytes(b"\xff\xfe not a protobuf \x00\x01" * 10)
    classes = tmp_path / "ten.txt"
    classes.write_text("".join(f"n{i:08d} class {i}\n" for i in range(10)))
    cases = [["caffe", str(junk), str(tmp_path / "o.npz")],
             ["caffe", str(tmp_path / "missing.caffemodel"), str(tmp_path / "o.npz")],
             ["caffe", str(folder / "alexnet_v1.caffemodel"), str(tmp_path / "o.npz"), "--mean", str(junk)],
             ["caffe", str(folder / "alexnet_v1.caffemodel"), str(tmp_path / "o.npz"), "--classes", str(classes)]]
    for argv in cases:
        try:
            status = convert.main(argv)
        except SystemExit as exit_:           # refused by the parser (a file that is not there)
            status = exit_.code
        assert status == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: "), (argv, err)
    assert not (tmp_path / "o.npz").exists()


def test_weights_only_checkpoint_cannot_be_resumed(model_files, tmp_path, capsys):
    ckpt = checkpoint.load(model_files[3]["v1"])
    model = AlexNet(ckpt.config)
    from alexnet_np.nn.optim import SGD
    with pytest.raises(checkpoint.CheckpointError, match="weights only"):
        checkpoint.restore(ckpt, model, SGD(model.parameters(), lr=0.01))
    import train
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.npz").write_bytes(open(model_files[3]["v1"], "rb").read())
    assert train.main(["--resume", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "weights only" in err[0]


def test_packaged_class_list_is_ilsvrc2012s():
    wnids, names = read_synsets(ILSVRC2012_SYNSETS)
    assert len(wnids) == 1000 and wnids == sorted(wnids) and wnids[0] == "n01440764" and names[999].startswith("toilet")
    shared = os.path.join(ROOT, "..", "shared", "data", "imagenet-classes", "synset_words.txt")
    if os.path.isfile(shared):
        assert read_synsets(shared) == (wnids, names)


def test_mean_files_of_other_shapes(model_files, tmp_path, capsys):
    """Two images in one mean file, or a mean smaller than the input: one line naming the mean
    file; a larger mean is taken, and the line says the stored image size follows it."""
    folder = model_files[0]
    model = str(folder / "alexnet_v1.caffemodel")
    rng = np.random.default_rng(4)
    two = MSG["BlobProto"]()
    _fill_blob(two, rng.uniform(0, 255, (2, 3, R, R)).astype(np.float32), v1=True)
    (tmp_path / "two.binaryproto").write_bytes(two.SerializeToString())
    write_mean(tmp_path / "small.binaryproto", rng.uniform(0, 255, (3, S - 1, S - 1)).astype(np.float32))
    for name, expected in (("two", "holds 2 images"), ("small", f"smaller than the net's input {S}")):
        assert convert.main(["caffe", model, str(tmp_path / "o.npz"), "--mean", str(tmp_path / f"{name}.binaryproto")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0] and f"{name}.binaryproto" in err[0], err
        assert "caffemodel" not in err[0] and "--input-size" not in err[0]
    write_mean(tmp_path / "big.binaryproto", rng.uniform(0, 255, (3, 2 * R, 2 * R)).astype(np.float32))
    lines = []
    _, config = convert.convert_caffe(model, str(tmp_path / "big.npz"), str(tmp_path / "big.binaryproto"),
                                      print_fn=lines.append)
    assert config.image_size == 2 * R and checkpoint.load(str(tmp_path / "big.npz")).config.image_size == 2 * R
    assert any(f"--image-size {2 * R}" in line for line in lines), lines
