"""alexnet_np: the AlexNet paper (Krizhevsky et al. 2012) at array level on NumPy and CuPy.

The folders, bottom to top (imports run that way only: nothing imports a folder above its
own, and no two modules import each other; tests/test_layering.py checks it):

    alexnet_np/            config (the paper's defaults), accepts and cli (the options), files, gpu_check
    alexnet_np/nn/         the paper's network: backend (devices, move), memory, layers (plain), fast, winograd, model, flat, optim, counter_rng
    alexnet_np/data/       prepare and its sources (folders, ilsvrc, cifar10, demo), loader, augment
    alexnet_np/parallel/   ranks: distributed, buckets
    alexnet_np/train/      trainer, runs, evaluation, checkpoint, metrics, schedule, figures, classmap, trained
    alexnet_np/interop/    convert and caffe_proto (BVLC's Caffe model), reference_torch (PyTorch)
    alexnet_np/paper/      experiments, figure1_net, trace, summary    (beside interop, neither imports the other)

Tools run as ``python -m alexnet_np.<folder>.<tool>`` (``alexnet_np.data.prepare``,
``alexnet_np.paper.summary``, ...); the commands train.py, evaluate.py, classify.py, figures.py
and experiments.py, and benchmarks/, sit at the repository's top.

Importing the package loads nothing; ``alexnet_np.load`` opens a trained net
(``alexnet_np.train.trained``):

    import alexnet_np
    net = alexnet_np.load("runs/<run>/best.npz", device="cpu")
    net.classify("photo.jpg")        # [(name, probability), ...]
"""


def load(path=None, device="auto", gpus=None, batch_size=None):
    """A trained net (``alexnet_np.train.trained.TrainedNet``) of the checkpoint at ``path``
    (None: best.npz of the newest run under runs/); see ``alexnet_np.train.trained.load``."""
    from .train.trained import load as load_trained   # here, so that importing the package stays light
    return load_trained(path, device, gpus, batch_size)
