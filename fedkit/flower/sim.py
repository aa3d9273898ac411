"""A ServerApp/ClientApp pair on Flower's simulation engine (Ray), for runs that outgrow one
process. Ray stays on loopback, without its dashboard or usage statistics, with its
temporary directory under the run directory (under a short system temp directory, removed
afterwards, when that path is too long for Ray's sockets).

Flower's simulation engine gives its virtual SuperNodes random node ids; they are
interchangeable workers over one dataset, so their ClientApp should train the partition of
the client the server's registry assigned to the node (``experiments.flower_app`` does).

``ray_address`` attaches the engine to a running Ray cluster (``ray start --head``; the
address ``ray start`` prints, or ``auto``; default ``$RAY_ADDRESS``) instead of starting Ray
here: the cluster's CPUs, temporary directory and dashboard hold, and its nodes must import
fedkit (docs/sweeps.md).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from fedkit.flower.env import FLOWER_ENV

RAY_TMP_MAX = 40  # longer temp dirs go to a short directory under the system temp dir
RAY_START_ATTEMPTS = 2  # Ray's node start (not the run) is retried once when it times out


def run_flower_simulation(
    server_app: Any,
    client_app: Any,
    run_dir: str | Path,
    *,
    num_supernodes: int,
    num_cpus: int = 2,
    cpus_per_client: float = 1.0,
    ray_address: str | None = None,
) -> None:
    """Run ``server_app`` and ``client_app`` on Flower's simulation engine with
    ``num_supernodes`` virtual SuperNodes (needs ``flwr[simulation]``), on a Ray started
    here with ``num_cpus`` or, given ``ray_address``, on that running cluster."""
    from flwr.simulation import run_simulation

    ray_address = ray_address or os.environ.get("RAY_ADDRESS")  # Ray's own convention
    if ray_address:
        os.environ.update(FLOWER_ENV)
        backend = {
            "client_resources": {"num_cpus": cpus_per_client, "num_gpus": 0.0},
            # ray.init refuses num_cpus (and a temp dir of its own) when it attaches
            "init_args": {"address": ray_address, "include_dashboard": False},
        }
        run_simulation(
            server_app=server_app,
            client_app=client_app,
            num_supernodes=num_supernodes,
            backend_config=backend,
        )
        return
    run_dir = Path(run_dir).resolve()
    ray_tmp = run_dir / "ray"
    own_tmp = len(str(ray_tmp)) > RAY_TMP_MAX  # Ray's socket paths must fit in 107 bytes
    if own_tmp:
        ray_tmp = Path(tempfile.mkdtemp(prefix="fkray-"))
    ray_tmp.mkdir(parents=True, exist_ok=True)
    os.environ.update({**FLOWER_ENV, "RAY_TMPDIR": str(ray_tmp)})
    backend = {
        "client_resources": {"num_cpus": cpus_per_client, "num_gpus": 0.0},
        "init_args": {
            "num_cpus": num_cpus,
            "include_dashboard": False,
            "_temp_dir": str(ray_tmp),
            "_node_ip_address": "127.0.0.1",
        },
    }
    try:
        for attempt in range(1, RAY_START_ATTEMPTS + 1):
            try:
                run_simulation(
                    server_app=server_app,
                    client_app=client_app,
                    num_supernodes=num_supernodes,
                    backend_config=backend,
                )
                break
            except RuntimeError as exc:
                # Ray gives its raylet a fixed 30 s to register; on a loaded machine that
                # start can miss it before any round ran: start Ray again, once
                if attempt == RAY_START_ATTEMPTS or not _ray_start_timed_out(exc):
                    raise
                _shutdown_ray()
    finally:
        if own_tmp:
            shutil.rmtree(ray_tmp, ignore_errors=True)


def _ray_start_timed_out(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) is Ray's node start timeout."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if "timed out during startup" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _shutdown_ray() -> None:
    import ray

    ray.shutdown()
