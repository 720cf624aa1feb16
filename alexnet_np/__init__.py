"""alexnet_np: the AlexNet paper (Krizhevsky et al. 2012) at array level on NumPy and CuPy.

Importing the package loads nothing; ``alexnet_np.load`` opens a trained net
(``alexnet_np.train.trained``):

    import alexnet_np
    net = alexnet_np.load("runs/<run>/best.npz", device="cpu")
    net.classify("photo.jpg")        # [(name, probability), ...]
"""


def load(path=None, device="auto", gpus=None, batch_size=None):
    """A trained net (``alexnet_np.trained.TrainedNet``) of the checkpoint at ``path``
    (None: best.npz of the newest run under runs/); see ``alexnet_np.trained.load``."""
    from .train.trained import load as load_trained   # here, so that importing the package stays light
    return load_trained(path, device, gpus, batch_size)
