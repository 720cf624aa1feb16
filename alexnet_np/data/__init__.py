"""Images in, batches out: ``prepare`` makes the 256 x 256 cache from a source (``folders``,
``ilsvrc`` with ``tars``, ``cifar10``, ``demo``), ``loader`` reads the cache into training
batches and evaluation views, ``augment`` holds §4.1's crops, flips and lighting.

Imports the package's top and ``nn`` (devices); nothing here knows about training."""
