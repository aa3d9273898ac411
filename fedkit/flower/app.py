"""The Flower App's components (``[tool.flwr.app.components]`` in pyproject.toml)."""

from fedkit.flower.apps import make_client_app, make_server_app

server_app = make_server_app()
client_app = make_client_app()
