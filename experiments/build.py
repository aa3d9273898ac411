"""From a composed config to the values ``fedkit.simulate`` takes.

Every object is made by Hydra's ``instantiate`` from its ``_target_`` (config mirrors code);
this module only decides the order of the server chain and fills in what depends on other
groups: the privacy group's mechanisms go around the server components (``pre`` first,
``post`` right after the reducer, before server optimizers; under central DP a lone plain mean
becomes the privacy group's fixed-denominator ``reducer`` and clients are Poisson-sampled with
quorum 0, see :func:`experiments.dp.with_chain_status`), a DP component's
``expected_clients: null`` becomes the number of clients sampled per round, client DP-SGD
(``privacy=dpsgd``) goes into the client config, and the privacy accountant (ε per round,
the stop at ``privacy.target_epsilon``) onto the strategy. A chain with a trust anchor
(FLTrust, MoNNA with the server pivot) gets ``strategy.root_examples`` =
:data:`ROOT_EXAMPLES` unless the config sets it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from experiments import dp
from fedkit import Strategy, chain
from fedkit.core.components import Component, Role
from fedkit.filters.bucketing import check_bucketed_reducer
from fedkit.protocols import DPUnitTask

ROOT_EXAMPLES = 100  # the server's root dataset when a trust anchor needs one (FLTrust)


@attrs.frozen(eq=False)
class Experiment:
    """Everything one simulation needs, built from a config."""

    task: Any
    strategy: Strategy
    adversary: Any
    faults: Any
    rounds: int
    seed: int
    engine: str
    eval_every: int
    checkpoint: bool
    privacy: dp.Privacy


def as_config(cfg: DictConfig | Mapping[str, Any]) -> DictConfig:
    """``cfg`` as an OmegaConf config (a plain dict is wrapped)."""
    return cfg if isinstance(cfg, DictConfig) else OmegaConf.create(dict(cfg))


def make(node: Any, **kwargs: Any) -> Any:
    """Instantiate one ``_target_`` node with plain Python containers as arguments."""
    return instantiate(node, _convert_="all", **kwargs)


def server_components(cfg: DictConfig) -> list[Component]:
    """The server group's components, in the order they were listed."""
    server = cfg.get("server") or {}
    if not isinstance(server, DictConfig) or not server:
        raise ValueError(
            "config has no server components: pick some with server=[...] or defense=<preset>"
        )
    return [make(node) for node in server.values()]


def dp_sizes(task: Any) -> list[int]:
    """Every client's count of DP-SGD privacy units: episodes for a
    :class:`~fedkit.protocols.DPUnitTask`, examples otherwise."""
    count = task.dp_units if isinstance(task, DPUnitTask) else task.client_size
    return [int(count(c)) for c in range(int(task.num_clients))]


def compose_chain(
    components: list[Component], pre: list[Component], post: list[Component]
) -> list[Component]:
    """``pre`` + the components up to their reducer + ``post`` + the server transforms."""
    cut = len(components)
    while cut > 0 and getattr(components[cut - 1], "role", None) is Role.SERVER:
        cut -= 1
    return [*pre, *components[:cut], *post, *components[cut:]]


def build(cfg: DictConfig | Mapping[str, Any], *, task: Any = None) -> Experiment:
    """The task, strategy, adversary and fault model described by ``cfg`` (nothing runs).
    ``task``: an already built task for ``cfg.task`` (e.g. shared by a sweep's points)."""
    cfg = as_config(cfg)
    task = make(cfg.task) if task is None else task
    client = make(cfg.client)
    # Objects are set with attrs.evolve, not passed to instantiate (which would turn an attrs
    # value back into a config).
    sampling = make(cfg.strategy)  # sampling, quorum, deadline; default client and chain
    dpsgd = str((cfg.get("privacy") or {}).get("mechanism", "none")) == "dpsgd"
    privacy = dp.resolve(
        cfg,
        per_round=sampling.num_sampled(int(task.num_clients)),
        total=int(task.num_clients),
        client=client,
        sizes=dp_sizes(task) if dpsgd else None,
    )
    if privacy.dp_sgd is not None:  # client DP-SGD rides on the client config
        client = attrs.evolve(client, dp_sgd=make(privacy.dp_sgd))
    privacy, server = dp.with_chain_status(privacy, server_components(cfg))
    components = compose_chain(
        server,
        [make(node) for node in privacy.pre],
        [make(node) for node in privacy.post],
    )
    if privacy.sampling == "poisson":  # the sampling the accountant analyses
        sampling = attrs.evolve(sampling, sampling="poisson")
    if privacy.mechanism in dp.EVERY_ROUND and privacy.sound:
        # the analysed mechanism releases noise every round, even if nobody replied (a
        # nominal chain keeps its quorum: a robust reducer needs its rows, and the ε is not
        # proven there anyway)
        sampling = attrs.evolve(sampling, quorum=0)
    # bucket counts against the reducer's row rule, with the clients sampled per round
    per_round = sampling.num_sampled(int(task.num_clients))
    server_chain = check_bucketed_reducer(chain(*components), per_round)
    if server_chain.needs_reference and sampling.root_examples is None:
        # a trust anchor (FLTrust, MoNNA's server pivot): the server's own root data, the
        # size Cao et al. 2021 use, unless the config says otherwise
        sampling = attrs.evolve(sampling, root_examples=ROOT_EXAMPLES)
    strategy = attrs.evolve(
        sampling, client=client, server=server_chain, accountant=privacy.accountant()
    )
    return Experiment(
        task=task,
        strategy=strategy,
        adversary=make(cfg.attack),
        faults=make(cfg.chaos),
        rounds=int(cfg.rounds),
        seed=int(cfg.seed),
        engine=str(cfg.engine.name),
        eval_every=int(cfg.eval_every),
        checkpoint=bool(cfg.get("checkpoint", False)),
        privacy=privacy,
    )
