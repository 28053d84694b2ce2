"""Doctest collection: the Flower engine's modules import flwr, an optional extra (``prunefl[flower]``)."""

import importlib.util

collect_ignore_glob = [] if importlib.util.find_spec("flwr") else ["flower/*.py"]
