"""The SO-100 task's configuration: one immutable value, Hydra friendly.

Lists and mappings coming from Hydra (``ListConfig`` / ``DictConfig``) are converted to
tuples and read-only mappings, so a config is hashable in spirit and never changes after
it is built.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import attrs

from fedkit.tasks.so100.episodes import SPLITS

POLICIES = ("smolvla", "act", "diffusion")
OPTIMIZERS = ("adamw", "sgd")


def _plain(value: Any) -> Any:
    """Hydra containers to plain Python: mappings to read-only dicts, sequences to tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): _plain(v) for k, v in value.items()})
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return tuple(_plain(v) for v in value)
    return value


def _strings(value: str | Sequence[str] | None) -> tuple[str | None, ...]:
    if value is None:
        return (None,)
    if isinstance(value, str):
        return (value,)
    return tuple(None if v is None else str(v) for v in value)


def _mapping(value: Mapping | None) -> Mapping:
    return _plain(value or {})


def _holdout(value: int | Sequence[int]) -> int | tuple[int, ...]:
    return value if isinstance(value, int) else tuple(int(v) for v in value)


def _client_episodes(value: Sequence[Sequence[int]] | None) -> tuple[tuple[int, ...], ...] | None:
    return None if value is None else tuple(tuple(int(e) for e in c) for c in value)


def _positive(instance, attribute, value) -> None:
    if value is not None and value < 1:
        raise ValueError(f"{attribute.name} must be >= 1, got {value}")


@attrs.frozen
class So100Config:
    """Everything that defines an SO-100 task except its key.

    Data: ``repo_id`` and ``root`` name one source dataset each (``root=None``: the hub
    cache, which needs hub access). A source is one arm, so ``split="robot"`` gives one
    client per source. ``holdout_episodes``: an int holds out that many episodes of each
    source (chosen by the key), a sequence holds out those episode ids (row numbers of the
    episode table: sources in order, then episodes). ``client_episodes`` overrides
    ``split`` with explicit episode ids per client.

    Policy: ``policy`` names a LeRobot policy type; ``policy_overrides`` are its config
    fields (e.g. ``chunk_size``); ``vlm_model_name`` is SmolVLA's VLM (a hub name or a local
    directory); ``pretrained_path`` loads a saved policy (e.g. ``lerobot/smolvla_base``) and
    its processors; ``rename_map`` maps dataset keys to the policy's (pretrained SmolVLA
    expects ``observation.images.camera1`` ...).

    Training: the optimizer is the policy's preset (AdamW betas, eps, weight decay, gradient
    clipping) with the learning rate the engine passes; ``optimizer="sgd"`` uses plain SGD.
    ``max_eval_frames`` caps the held-out frames evaluated (evenly spaced), ``cache_frames``
    keeps decoded frames in memory (for small datasets: decoding dominates a tiny model's
    step).

    Privacy: a ``ClientConfig.dp_sgd`` setting trains with episode-level DP-SGD
    (:mod:`fedkit.tasks.so100.dp`; its ``batch_size`` counts episodes);
    ``dp_frames_per_episode`` caps the frames of a sampled episode that its loss averages
    over (``None``: all of them).
    """

    repo_id: tuple[str, ...] = attrs.field(converter=_strings)
    root: tuple[str | None, ...] = attrs.field(default=None, converter=_strings)
    policy: str = "smolvla"
    vlm_model_name: str | None = None
    pretrained_path: str | None = None
    policy_overrides: Mapping = attrs.field(factory=dict, converter=_mapping)
    rename_map: Mapping = attrs.field(factory=dict, converter=_mapping)
    num_clients: int = attrs.field(default=3, validator=_positive)
    split: str = "episodes"
    client_episodes: tuple[tuple[int, ...], ...] | None = attrs.field(
        default=None, converter=_client_episodes
    )
    holdout_episodes: int | tuple[int, ...] = attrs.field(default=1, converter=_holdout)
    batch_size: int = attrs.field(default=8, validator=_positive)
    eval_batch_size: int = attrs.field(default=16, validator=_positive)
    max_eval_frames: int | None = attrs.field(default=256, validator=_positive)
    optimizer: str = "adamw"
    device: str = "cpu"
    cache_frames: bool = False
    dp_frames_per_episode: int | None = attrs.field(default=None, validator=_positive)

    def __attrs_post_init__(self) -> None:
        if None in self.repo_id:
            raise ValueError("repo_id is required (one per source dataset)")
        if len(self.root) == 1 and len(self.repo_id) > 1:
            object.__setattr__(self, "root", self.root * len(self.repo_id))
        if len(self.root) != len(self.repo_id):
            raise ValueError(
                f"root has {len(self.root)} entries for {len(self.repo_id)} repo_ids; give one "
                "root per source dataset (or None for the hub cache)"
            )
        if self.policy not in POLICIES:
            raise ValueError(f"unknown policy {self.policy!r}; choose one of {POLICIES}")
        if self.split not in SPLITS:
            raise ValueError(f"unknown split {self.split!r}; choose one of {SPLITS}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose one of {OPTIMIZERS}")
        if self.client_episodes is not None and len(self.client_episodes) != self.num_clients:
            raise ValueError(
                f"client_episodes lists {len(self.client_episodes)} clients, num_clients is "
                f"{self.num_clients}"
            )
        if self.vlm_model_name is not None and self.policy != "smolvla":
            raise ValueError(f"vlm_model_name applies to SmolVLA only, not to {self.policy!r}")
