"""fedkit on Flower: the run driver's Flower transport, ServerApp/ClientApp factories, the
node registry, the client runtime with its privacy floor, and the local deployment
(:mod:`fedkit.flower.local`) and Flower simulation engine (:mod:`fedkit.flower.sim`) that
run them. The Flower App that deploys an experiment config is ``experiments.flower_app``."""

from fedkit.flower.apps import ServerSetup, make_client_app, make_server_app, serve
from fedkit.flower.client import ClientRuntime, HonestClient, Refused, Trained
from fedkit.flower.privacy_floor import PrivacyFloor
from fedkit.flower.registry import NodeRegistry
from fedkit.flower.transport import FlowerTransport, LoopConfig

__all__ = [
    "ClientRuntime",
    "FlowerTransport",
    "HonestClient",
    "LoopConfig",
    "NodeRegistry",
    "PrivacyFloor",
    "Refused",
    "ServerSetup",
    "Trained",
    "make_client_app",
    "make_server_app",
    "serve",
]
