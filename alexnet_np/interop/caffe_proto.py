"""Reading Caffe's files (``.caffemodel``, ``.binaryproto``) with the protobuf package.

Dimensions:
    F  filters / output units    C  input channels per group    KH, KW  kernel size

A ``.caffemodel`` is one serialised ``NetParameter`` message; a mean file
(``imagenet_mean.binaryproto``) one ``BlobProto``. Rather than compile Caffe's whole
``caffe.proto`` (1,400 lines), this module declares the few messages and fields the
converter reads, with **Caffe's own field numbers** (BVLC/caffe ``src/caffe/proto/caffe.proto``),
as a ``FileDescriptorProto`` built in Python; the protobuf runtime turns it into message
classes (``message_factory.GetMessageClass``) and does all the decoding. Fields not declared
here are kept by protobuf as unknown fields and ignored.

Both layouts of a net are declared:
    NetParameter.layer  (100)  LayerParameter:   type is a string ("Convolution", "LRN", ...)
    NetParameter.layers (2)    V1LayerParameter: type is an enum (CONVOLUTION = 4, ...);
                               the layout of 2014, in which bvlc_alexnet.caffemodel was saved.
``layers_of(net)`` gives either as a list of ``CaffeLayer`` with one type vocabulary.

Blobs: ``BlobProto.shape.dim`` (newer) or ``num, channels, height, width`` (V1, always 4-D:
an InnerProduct weight is stored as (1, 1, F, D)); values in ``data`` (float32) or
``double_data``. ``blob_array`` returns them as a NumPy array of the 4-D or N-D shape.

The protobuf package is an optional dependency: only the converter needs it.
"""
import numpy as np

PROTOBUF_MISSING = "reading Caffe files needs the protobuf package: pip install protobuf"

# V1LayerParameter.LayerType numbers of the layers AlexNet uses, as the strings of the newer layout.
V1_TYPES = {4: "Convolution", 5: "Data", 6: "Dropout", 14: "InnerProduct", 15: "LRN", 17: "Pooling",
            18: "ReLU", 20: "Softmax", 21: "SoftmaxWithLoss", 1: "Accuracy", 22: "Split",
            3: "Concat", 12: "ImageData", 29: "MemoryData", 8: "Flatten"}

# (message, [(field name, number, type, label, message type or None, default or None)]).
# type: "float", "double", "int32", "int64", "uint32", "bool", "string", "enum" (as int32
# on the wire), "message". label: "optional" or "repeated".
_SCHEMA = [
    ("BlobShape", [("dim", 1, "int64", "repeated", None, None)]),
    ("BlobProto", [("num", 1, "int32", "optional", None, None),
                   ("channels", 2, "int32", "optional", None, None),
                   ("height", 3, "int32", "optional", None, None),
                   ("width", 4, "int32", "optional", None, None),
                   ("data", 5, "float", "repeated", None, None),
                   ("shape", 7, "message", "optional", "BlobShape", None),
                   ("double_data", 8, "double", "repeated", None, None)]),
    ("ConvolutionParameter", [("num_output", 1, "uint32", "optional", None, None),
                              ("bias_term", 2, "bool", "optional", None, "true"),
                              ("pad", 3, "uint32", "repeated", None, None),
                              ("kernel_size", 4, "uint32", "repeated", None, None),
                              ("group", 5, "uint32", "optional", None, "1"),
                              ("stride", 6, "uint32", "repeated", None, None)]),
    ("PoolingParameter", [("pool", 1, "int32", "optional", None, "0"),      # enum: MAX = 0, AVE = 1
                          ("kernel_size", 2, "uint32", "optional", None, None),
                          ("stride", 3, "uint32", "optional", None, "1"),
                          ("pad", 4, "uint32", "optional", None, "0")]),
    ("LRNParameter", [("local_size", 1, "uint32", "optional", None, "5"),
                      ("alpha", 2, "float", "optional", None, "1"),
                      ("beta", 3, "float", "optional", None, "0.75"),
                      ("norm_region", 4, "int32", "optional", None, "0"),  # enum: ACROSS_CHANNELS = 0
                      ("k", 5, "float", "optional", None, "1")]),
    ("InnerProductParameter", [("num_output", 1, "uint32", "optional", None, None),
                               ("bias_term", 2, "bool", "optional", None, "true"),
                               ("transpose", 6, "bool", "optional", None, "false")]),
    ("DropoutParameter", [("dropout_ratio", 1, "float", "optional", None, "0.5")]),
    ("LayerParameter", [("name", 1, "string", "optional", None, None),
                        ("type", 2, "string", "optional", None, None),
                        ("blobs", 7, "message", "repeated", "BlobProto", None),
                        ("convolution_param", 106, "message", "optional", "ConvolutionParameter", None),
                        ("dropout_param", 108, "message", "optional", "DropoutParameter", None),
                        ("inner_product_param", 117, "message", "optional", "InnerProductParameter", None),
                        ("lrn_param", 118, "message", "optional", "LRNParameter", None),
                        ("pooling_param", 121, "message", "optional", "PoolingParameter", None)]),
    ("V1LayerParameter", [("name", 4, "string", "optional", None, None),
                          ("type", 5, "int32", "optional", None, None),                # enum LayerType
                          ("blobs", 6, "message", "repeated", "BlobProto", None),
                          ("convolution_param", 10, "message", "optional", "ConvolutionParameter", None),
                          ("dropout_param", 12, "message", "optional", "DropoutParameter", None),
                          ("inner_product_param", 17, "message", "optional", "InnerProductParameter", None),
                          ("lrn_param", 18, "message", "optional", "LRNParameter", None),
                          ("pooling_param", 19, "message", "optional", "PoolingParameter", None)]),
    ("NetParameter", [("name", 1, "string", "optional", None, None),
                      ("layers", 2, "message", "repeated", "V1LayerParameter", None),
                      ("input_dim", 4, "int32", "repeated", None, None),
                      ("layer", 100, "message", "repeated", "LayerParameter", None)]),
]

_MESSAGES = None  # {name: message class}, made on first use


class CaffeError(Exception):
    """A Caffe file that cannot be read or converted; the message is one line."""


def _protobuf():
    try:
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    except ImportError:
        raise CaffeError(PROTOBUF_MISSING) from None
    return descriptor_pb2, descriptor_pool, message_factory


def messages():
    """{message name: class}: Caffe's messages as far as declared in ``_SCHEMA``."""
    global _MESSAGES
    if _MESSAGES is None:
        descriptor_pb2, descriptor_pool, message_factory = _protobuf()
        F = descriptor_pb2.FieldDescriptorProto
        types = {"float": F.TYPE_FLOAT, "double": F.TYPE_DOUBLE, "int32": F.TYPE_INT32,
                 "int64": F.TYPE_INT64, "uint32": F.TYPE_UINT32, "bool": F.TYPE_BOOL,
                 "string": F.TYPE_STRING, "message": F.TYPE_MESSAGE}
        labels = {"optional": F.LABEL_OPTIONAL, "repeated": F.LABEL_REPEATED}
        file = descriptor_pb2.FileDescriptorProto(name="alexnet_np_caffe_subset.proto",
                                                  package="caffe", syntax="proto2")
        for name, fields in _SCHEMA:
            message = file.message_type.add(name=name)
            for field, number, kind, label, type_name, default in fields:
                f = message.field.add(name=field, number=number, type=types[kind], label=labels[label])
                if type_name:
                    f.type_name = f".caffe.{type_name}"
                if default is not None:
                    f.default_value = default
        pool = descriptor_pool.DescriptorPool()   # a pool of our own: no clash with a real caffe_pb2
        pool.Add(file)
        # GetMessageClass since protobuf 4.22; the factory's GetPrototype before (removed in 5.x)
        get_class = getattr(message_factory, "GetMessageClass", None) or message_factory.MessageFactory(pool).GetPrototype
        _MESSAGES = {name: get_class(pool.FindMessageTypeByName(f"caffe.{name}")) for name, _ in _SCHEMA}
    return _MESSAGES


def _parse(path, message_name):
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as error:
        raise CaffeError(f"{path}: cannot read ({error.strerror or error})") from None
    message = messages()[message_name]()
    try:
        message.ParseFromString(raw)
    except Exception as error:  # protobuf's DecodeError, or a field of the wrong wire type
        raise CaffeError(f"{path}: not a Caffe {message_name} file ({type(error).__name__}: {error})") from None
    return message


def read_net(path):
    """A ``.caffemodel`` as a ``NetParameter`` message; ``CaffeError`` (one line) when it is not one."""
    net = _parse(path, "NetParameter")
    if not len(net.layer) and not len(net.layers):
        raise CaffeError(f"{path}: no layers in it (not a .caffemodel?)")
    return net


def read_blob(path):
    """A ``.binaryproto`` (e.g. Caffe's mean image) as an array of its shape, float32/float64."""
    blob = _parse(path, "BlobProto")
    array = blob_array(blob)
    if array.size == 0:
        raise CaffeError(f"{path}: not a Caffe blob (no values in it)")
    return array


def blob_array(blob):
    """A ``BlobProto`` as a NumPy array: shape from ``shape.dim`` or (num, channels, height, width)."""
    if blob.HasField("shape"):
        shape = tuple(int(d) for d in blob.shape.dim)
    else:
        shape = (blob.num, blob.channels, blob.height, blob.width)
    values = (np.array(blob.double_data, dtype=np.float64) if len(blob.double_data)
              else np.array(blob.data, dtype=np.float32))
    if values.size != int(np.prod(shape)):
        raise CaffeError(f"a blob of shape {shape} holds {values.size} values")
    return values.reshape(shape)


class CaffeLayer:
    """One layer of either layout: ``name``, ``type`` (newer layout's string), ``blobs``
    (arrays), and its parameter message, ``param`` (None for layers without one)."""

    PARAMS = {"Convolution": "convolution_param", "Pooling": "pooling_param", "LRN": "lrn_param",
              "InnerProduct": "inner_product_param", "Dropout": "dropout_param"}

    def __init__(self, name, type_, blobs, message):
        self.name, self.type = name, type_
        self.blobs = [blob_array(b) for b in blobs]
        field = self.PARAMS.get(type_)
        self.param = getattr(message, field) if field else None

    def __repr__(self):
        return f"<{self.type} {self.name}: blobs {[b.shape for b in self.blobs]}>"


def layers_of(net):
    """[CaffeLayer] of a ``NetParameter`` in either layout, in file order. Returns (layers, layout)."""
    if len(net.layer):
        return [CaffeLayer(l.name, l.type, l.blobs, l) for l in net.layer], "layer (LayerParameter)"
    return ([CaffeLayer(l.name, V1_TYPES.get(l.type, f"V1 type {l.type}"), l.blobs, l) for l in net.layers],
            "layers (V1LayerParameter)")
