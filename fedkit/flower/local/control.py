"""Flower's Control API (what the ``flwr`` CLI uses) called in this process.

Each ``flwr`` CLI call starts a Python that imports Flower (seconds of CPU on a small
machine); the Control API client here answers a status query in milliseconds. It uses
``flwr.cli`` helpers that are not a public API: this module is the only place that does, so
a Flower upgrade that moves them breaks one file.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from fedkit.flower.local.processes import DeployError

FEDERATION = "fedkit-local"


class ControlClient:
    """Flower's Control API client (what ``flwr ls`` uses), in this process: a status
    query costs milliseconds instead of a Python start importing Flower and torch."""

    def __init__(self, cli_home: Path, federation: str = FEDERATION):
        from flwr.cli.flower_config import read_superlink_connection
        from flwr.cli.utils import init_http_client_from_connection

        saved = os.environ.get("FLWR_HOME")
        os.environ["FLWR_HOME"] = str(cli_home)  # where the federation's config.toml is
        try:
            with contextlib.redirect_stdout(None), contextlib.redirect_stderr(None):
                connection = read_superlink_connection(federation)
                self.client = init_http_client_from_connection(connection)
                self.federation = connection.federation or ""
        finally:
            if saved is None:
                os.environ.pop("FLWR_HOME", None)
            else:
                os.environ["FLWR_HOME"] = saved

    def runs(self, run_id: int | None = None) -> dict[int, str]:
        """``{run id: status}`` of every run (or of ``run_id``), status as ``flwr ls``
        prints it (``running``, ``finished:completed``, ...)."""
        from flwr.proto.control_pb2 import ListRunsRequest

        request = ListRunsRequest() if run_id is None else ListRunsRequest(run_id=run_id)
        out = {}
        for rid, run in self.client.ListRuns(request).run_dict.items():
            status, sub = run.status.status, run.status.sub_status
            out[int(rid)] = f"{status}:{sub}" if sub else status
        return out

    def start_run(self, app: Path, run_config: Path | None = None) -> int:
        """What ``flwr run APP --run-config RUN_CONFIG`` does: build the FAB of ``app``
        and ask the SuperLink to start it; the run id."""
        import hashlib

        from flwr.cli.build import build_fab_from_disk
        from flwr.cli.config_utils import load_and_validate
        from flwr.common.config import get_metadata_from_config, parse_config_args
        from flwr.common.serde import fab_to_proto, user_config_to_proto
        from flwr.proto.control_pb2 import StartRunRequest
        from flwr.supercore.fab import Fab

        config, _ = load_and_validate(Path(app) / "pyproject.toml", check_module=False)
        fab_bytes = build_fab_from_disk(Path(app))
        get_metadata_from_config(config)  # validates [project] name and version
        fab = Fab(hashlib.sha256(fab_bytes).hexdigest(), fab_bytes, {})
        overrides = parse_config_args(None if run_config is None else [str(run_config)])
        request = StartRunRequest(
            fab=fab_to_proto(fab),
            override_config=user_config_to_proto(overrides),
            federation=self.federation,
        )
        response = self.client.StartRun(request)
        if not response.HasField("run_id"):
            raise DeployError("the SuperLink did not start the run")
        return int(response.run_id)

    def register_node(self, public_key: Path) -> int:
        """What ``flwr supernode register KEY`` does; the new node id."""
        from flwr.cli.supernode.register import try_load_public_key
        from flwr.proto.control_pb2 import RegisterNodeRequest

        request = RegisterNodeRequest(public_key=try_load_public_key(Path(public_key)))
        return int(self.client.RegisterNode(request=request).node_id)

    def stop_run(self, run_id: int) -> bool:
        """What ``flwr stop RUN_ID`` does; whether the SuperLink stopped it."""
        from flwr.proto.control_pb2 import StopRunRequest

        return bool(self.client.StopRun(StopRunRequest(run_id=run_id)).success)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()
