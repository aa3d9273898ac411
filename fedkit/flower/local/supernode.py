"""Flower's own SuperNode with short idle sleeps.

    python -m fedkit.flower.local.supernode [flower-supernode arguments...]
    python -P path/to/fedkit/flower/local/supernode.py [...]   # no torch (fedkit's package)

Takes exactly ``flower-supernode``'s arguments and runs Flower's ``flower-supernode`` entry
point (:func:`flwr.supernode.cli.flower_supernode`) in this process; the only change is how
long it sleeps when it has nothing to do. Written against ``flwr==1.42.0`` (the version
``pyproject.toml`` pins); another version gets a warning, and a Flower whose internals no
longer look as expected is refused rather than silently left unpatched.

Why: in Flower 1.42 the SuperNode's fleet loop (``flwr/supernode/start_client_internal.py``)
sleeps a hard-coded 3 s after every empty pull from the SuperLink, 0.5 s per check while it
waits for the ClientApp's reply, and 0.5 s per check for a reply object's content. On a
local deployment a message therefore waits 1.5 s on average (up to 3 s) before its node even
sees it, every round. The patch replaces that module's ``time`` with :class:`ShortSleeps`, a
proxy whose ``sleep(s)`` sleeps ``min(s, cap)`` (``FEDKIT_SUPERNODE_POLL``, default 0.1 s) and
which otherwise is the ``time`` module. The cost is more idle pulls: one HTTPS request per
node every ``cap`` seconds instead of every 3 s, ~11 ms of CPU each between node and
SuperLink (:func:`fedkit.flower.local.deployment.idle_poll` scales the cap with nodes per
core).

Pulling a message's objects from the SuperLink retries an object that is not uploaded yet
after 1 s, doubling up to 10 s (``flwr/supercore/constant.py`` ``PULL_INITIAL_BACKOFF``,
``PULL_BACKOFF_CAP``; ``inflatable_utils.pull_objects``). The same cap applies to that
backoff (first retry after ``cap`` s, at most ``10 * cap`` s), bound into the name
``pull_objects`` that ``start_client_internal`` calls; everything else about the pull (tries,
time limit, concurrency) is Flower's default.

Heartbeats: with ``FEDKIT_SUPERNODE_HEARTBEAT`` set (seconds, at least Flower's minimum of
10) the node announces that heartbeat interval instead of Flower's 30 s (``flwr/common/
constant.py`` ``HEARTBEAT_DEFAULT_INTERVAL``, read by ``fleet_http_connection`` and
``supercore/heartbeat``). The SuperLink marks a node offline ``2 x interval`` after its last
heartbeat, so a killed node is known gone after at most 20 s instead of 60 s, and a
restarted one may re-activate that much sooner; it costs one small request per node every
~4 s.

Nothing else changes: node authentication, TLS, the Runtime API, task handling and the
ClientApp isolation are the real Flower SuperNode's.
"""

from __future__ import annotations

import functools
import os
import sys
import time
import types
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

FLOWER_VERSION = "1.42.0"
POLL_ENV = "FEDKIT_SUPERNODE_POLL"
HEARTBEAT_ENV = "FEDKIT_SUPERNODE_HEARTBEAT"
DEFAULT_POLL = 0.1
MIN_HEARTBEAT = 10.0  # flwr.common.constant.HEARTBEAT_MIN_INTERVAL: the SuperLink refuses less


class ShortSleeps:
    """Stands in for the ``time`` module: ``sleep(s)`` sleeps ``min(s, cap)`` seconds, every
    other attribute is ``time``'s."""

    def __init__(self, cap: float) -> None:
        if not cap > 0:
            raise ValueError(f"the sleep cap must be > 0 s, got {cap}")
        self.cap = float(cap)

    def sleep(self, seconds: float) -> None:
        time.sleep(min(seconds, self.cap))

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def poll_cap() -> float:
    """The cap in seconds: ``FEDKIT_SUPERNODE_POLL`` (default :data:`DEFAULT_POLL`)."""
    return float(os.environ.get(POLL_ENV, DEFAULT_POLL))


def patch(cap: float) -> None:
    """Shorten the sleeps of Flower's SuperNode loop to at most ``cap`` seconds (module doc)."""
    import flwr.supernode.start_client_internal as loop
    from flwr.supercore.inflatable import inflatable_utils

    found = version("flwr")
    if found != FLOWER_VERSION:
        print(
            f"fedkit.flower.local.supernode: written for flwr=={FLOWER_VERSION}, found {found}",
            file=sys.stderr,
        )
    if not (
        isinstance(loop.time, types.ModuleType | ShortSleeps)
        and (
            loop.pull_objects is inflatable_utils.pull_objects
            or getattr(loop.pull_objects, "func", None) is inflatable_utils.pull_objects
        )
    ):
        raise RuntimeError(
            "flwr.supernode.start_client_internal no longer uses the `time` module and "
            "`pull_objects` this patch shortens; re-read it before patching"
        )
    loop.time = ShortSleeps(cap)
    loop.pull_objects = short_backoff(inflatable_utils.pull_objects, cap)


def short_backoff(pull: Callable[..., Any], cap: float) -> Callable[..., Any]:
    """Flower's ``pull_objects`` retrying an object not uploaded yet after ``cap`` s,
    doubling up to ``10 * cap`` s (Flower: 1 s up to 10 s)."""
    return functools.partial(pull, initial_backoff=cap, backoff_cap=10 * cap)


def patch_heartbeat(interval: float) -> None:
    """Announce heartbeats every ``interval`` s instead of Flower's 30 s (module doc)."""
    import flwr.supercore.heartbeat as beat
    import flwr.supernode.fleet_http_connection as fleet

    if interval < MIN_HEARTBEAT:
        raise ValueError(f"heartbeat interval {interval} s < Flower's minimum {MIN_HEARTBEAT} s")
    if not all(hasattr(m, "HEARTBEAT_DEFAULT_INTERVAL") for m in (beat, fleet)):
        raise RuntimeError("Flower's heartbeat constant moved; re-read it before patching")
    beat.HEARTBEAT_DEFAULT_INTERVAL = fleet.HEARTBEAT_DEFAULT_INTERVAL = float(interval)


def main() -> None:
    """``flower-supernode`` with the sleeps (and, if asked, the heartbeat) patched;
    arguments as ``flower-supernode``'s."""
    patch(poll_cap())
    if os.environ.get(HEARTBEAT_ENV):
        patch_heartbeat(float(os.environ[HEARTBEAT_ENV]))
    from flwr.supernode.cli import flower_supernode

    sys.argv[0] = "flower-supernode"
    flower_supernode()


if __name__ == "__main__":
    main()
