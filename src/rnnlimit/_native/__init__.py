"""Native kernels (C sources built as optional extensions; loaded by :mod:`rnnlimit.nativelib`)."""
