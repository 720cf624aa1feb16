"""A run: ``trainer`` (the loop), ``runs`` (opening data, checkpoints and trained nets),
``evaluation``, ``checkpoint``, ``metrics``, ``schedule`` (§5's learning rate), ``figures``
(Figures 3 and 4), ``classmap`` (a checkpoint's classes matched to a data set's) and
``trained`` (``alexnet_np.load``: a trained net from code).

Imports the package's top, ``nn``, ``data`` and ``parallel``."""
