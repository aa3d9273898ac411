"""fedkit on Flower: the run driver's Flower transport, the ServerApp/ClientApp pair, the
node registry, and the local deployment (:mod:`fedkit.flower.local`) and Flower simulation
engine (:mod:`fedkit.flower.sim`) that run them."""

from fedkit.flower.apps import make_client_app, make_server_app
from fedkit.flower.registry import NodeRegistry
from fedkit.flower.settings import Settings, build_strategy, build_task
from fedkit.flower.transport import FlowerTransport, LoopConfig

__all__ = [
    "FlowerTransport",
    "LoopConfig",
    "NodeRegistry",
    "Settings",
    "build_strategy",
    "build_task",
    "make_client_app",
    "make_server_app",
]
