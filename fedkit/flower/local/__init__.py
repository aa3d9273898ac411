"""A Flower federation on this machine: processes, the Control API, the staged app and the
deployment that ties them together (``fedkit deploy local``)."""

from fedkit.flower.local.deployment import LocalDeployment, Node, follow
from fedkit.flower.local.processes import DeployError, flower_bin, free_port, stop_group
from fedkit.flower.local.staging import AppSource, stage_app, toml_value

__all__ = [
    "AppSource",
    "DeployError",
    "LocalDeployment",
    "Node",
    "flower_bin",
    "follow",
    "free_port",
    "stage_app",
    "stop_group",
    "toml_value",
]
