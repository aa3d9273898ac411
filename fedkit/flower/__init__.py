"""fedkit on Flower: the same strategy as a ServerApp/ClientApp pair, a local deployment
launcher (``fedkit deploy local``) and Flower's simulation engine as ``engine=flower-sim``."""

from fedkit.flower.apps import make_client_app, make_server_app
from fedkit.flower.server_loop import LoopConfig, ServerLoop
from fedkit.flower.settings import Settings, build_strategy, build_task

__all__ = [
    "LoopConfig",
    "ServerLoop",
    "Settings",
    "build_strategy",
    "build_task",
    "make_client_app",
    "make_server_app",
]
