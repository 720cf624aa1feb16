"""The paper's network, what a learner reads first: ``backend`` (devices, ``move``: the one
tower crossing), ``memory`` (a device's reusable output buffers and workspace), ``layers``
(the plain form of each layer, forward and backward, one screen each: read these first),
``fast`` (the fast forms beside them, tested equal), ``winograd`` (conv3-conv5's fast
algorithm on the CPU),
``model`` (Figure 2's two towers), ``flat`` (a device's parameters packed end to end),
``optim`` (§5's SGD) and ``counter_rng`` (the dropout masks' bits).

Imports only the package's top (``config``); nothing here knows about data, ranks or runs."""
