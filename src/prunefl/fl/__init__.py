"""The FL protocol, engine-agnostic: messages, client step, server step, aggregation, transport."""

from prunefl.fl.aggregate import masked_aggregate, sum_importance
from prunefl.fl.client import ClientState, client_step
from prunefl.fl.messages import TrainIns, TrainRes
from prunefl.fl.server import RoundUpdate, Server, ServerSettings
from prunefl.fl.transport import Transport, WireSettings

__all__ = [
    "ClientState",
    "RoundUpdate",
    "Server",
    "ServerSettings",
    "TrainIns",
    "TrainRes",
    "Transport",
    "WireSettings",
    "client_step",
    "masked_aggregate",
    "sum_importance",
]
