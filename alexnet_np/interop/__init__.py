"""Other frameworks: ``convert`` (BVLC's Caffe model into a checkpoint) with ``caffe_proto``
(the Caffe messages it reads), and ``reference_torch`` (the same net in PyTorch, for the
agreement tests and the benchmark).

Imports anything below it (top, ``nn``, ``data``, ``parallel``, ``train``); nothing imports it
but the scripts and the tests."""
