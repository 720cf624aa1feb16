"""The paper's claims rerun and shown: ``experiments`` (one switch per trick, over seeds),
``figure1_net`` (Figure 1's four-layer net), ``trace`` (one step, layer by layer) and
``summary`` (Figure 2 printed, with every choice the paper leaves open).

Imports anything below it (top, ``nn``, ``data``, ``parallel``, ``train``); nothing imports it
but the scripts."""
