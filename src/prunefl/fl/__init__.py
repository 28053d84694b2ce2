"""The FL protocol, engine-agnostic: messages, client step, server step, aggregation, links, the round protocol.

Only the dependency-free parts are re-exported here: ``prunefl.sparse`` builds on ``fl.messages``, so
``fl.client``, ``fl.links`` and ``fl.round`` (which build on ``prunefl.sparse``) are imported from their modules.
"""

from prunefl.fl.aggregate import masked_aggregate, sum_importance
from prunefl.fl.messages import TrainIns, TrainRes
from prunefl.fl.server import RoundUpdate, Server, ServerSettings

__all__ = [
    "RoundUpdate",
    "Server",
    "ServerSettings",
    "TrainIns",
    "TrainRes",
    "masked_aggregate",
    "sum_importance",
]
