"""Federated training of a LeRobot policy (SmolVLA by default) on SO-100 episodes.

A client is a set of episodes (by episode list, task or robot, see
:mod:`fedkit.tasks.so100.episodes`). Only the policy's trainable parameters travel, as one
flat vector over :attr:`So100Task.spec` (SmolVLA freezes its VLM: the action expert and the
projections travel). Clients train with the policy's own loss (``policy.forward(batch)``);
evaluation is the same loss on held-out episodes.

Keys. ``so100(key=k)`` splits ``k`` into three: episode hold-out and client split, the
build of the task's policy (which fixes the frozen weights every client shares: a VLM with
random weights when ``load_vlm_weights=False``), and the noise of evaluation (the same for
every call, so two evaluations differ only by their parameters). ``init(key)`` builds a
fresh policy from ``key`` and returns its trainable parameters. ``train_client(key=...)``
draws the batch order from one half of ``key`` and, step by step, the policy's internal
randomness (flow-matching noise and time, dropout) from the other.

Privacy. With ``ClientConfig(dp_sgd=setting)`` a client trains with episode-level DP-SGD
(:mod:`fedkit.tasks.so100.dp`): the privacy unit is an episode, ``setting.batch_size`` is
the expected number of episodes per step, and the accountant's rate is over the client's
episodes (:meth:`So100Task.dp_units`), not its frames.

LeRobot initialises weights and samples noise from torch's global RNG. Those calls run
inside :func:`~fedkit.tasks.so100.rng.seeded_global_rng`, which forks the global RNG,
seeds it from the key and restores it afterwards: results depend only on the keys, and the
caller's global RNG state is unchanged.

The task owns one private policy instance. Every call first loads the flat vector it is
given (and the build-time buffers) into it and builds a fresh optimizer, so no state is
carried from one call to the next.

LeRobot is imported only when a task is built, never by ``import fedkit``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from fedkit.client import ClientConfig
from fedkit.client_dp import dp_noise, poisson_schedule
from fedkit.core.flat import ParamSpec, flatten, spec_of, unflatten
from fedkit.core.keys import Key, fold_in, permutation
from fedkit.core.keys import key as make_key
from fedkit.core.keys import split as split_key
from fedkit.tasks.so100.config import So100Config
from fedkit.tasks.so100.dp import episode_dp_gradient, episode_subset, frames_by_episode
from fedkit.tasks.so100.episodes import Episode, assign_clients, holdout
from fedkit.tasks.so100.rng import seeded_global_rng


def so100(
    *,
    repo_id: str | Sequence[str],
    root: str | Path | Sequence[str | Path | None] | None = None,
    policy: str = "smolvla",
    vlm_model_name: str | Path | None = None,
    num_clients: int = 3,
    split: str = "episodes",
    holdout_episodes: int | Sequence[int] = 1,
    batch_size: int = 8,
    device: str = "cpu",
    key: Key | int = 0,
    **options: Any,
) -> So100Task:
    """Build an SO-100 task; see :class:`So100Config` for every option (``options`` are its
    remaining fields: ``policy_overrides``, ``pretrained_path``, ``client_episodes``,
    ``eval_batch_size``, ``max_eval_frames``, ``optimizer``, ``rename_map``,
    ``cache_frames``). ``key`` is a fedkit key or an int seed."""
    roots = None if root is None else [None if r is None else str(r) for r in _as_list(root)]
    config = So100Config(
        repo_id=_as_list(repo_id),
        root=roots,
        policy=policy,
        vlm_model_name=None if vlm_model_name is None else str(vlm_model_name),
        num_clients=num_clients,
        split=split,
        holdout_episodes=holdout_episodes,
        batch_size=batch_size,
        device=device,
        **options,
    )
    return So100Task(config, key if isinstance(key, Key) else make_key(key))


def _as_list(value: Any) -> list:
    return [value] if isinstance(value, str | Path) else list(value)


class So100Task:
    """An SO-100 task: clients, the policy, local training and evaluation.

    Implements :class:`fedkit.protocols.Task` (:attr:`name`, :attr:`meta`, :attr:`spec`,
    :attr:`num_clients`, :meth:`client_size`, :meth:`init`, :meth:`train_client`,
    :meth:`evaluate`); plus :meth:`save_pretrained`.
    """

    name = "so100"
    dp_unit = "episode"  # the privacy unit of its client DP-SGD (see the module doc)

    def __init__(self, config: So100Config, key: Key) -> None:
        from lerobot.datasets.lerobot_dataset import LeRobotDatasetMetadata

        self.config = config
        self.key = key
        k_split, k_build, k_eval = split_key(key, 3)
        self._eval_key = k_eval
        self.metas = tuple(
            LeRobotDatasetMetadata(r, root=root)
            for r, root in zip(config.repo_id, config.root, strict=True)
        )
        _check_sources(self.metas, config.repo_id)
        self.episodes = _episode_table(self.metas, config.repo_id)
        train, held = holdout(self.episodes, config.holdout_episodes, fold_in(k_split, 0))
        if config.client_episodes is None:
            clients = assign_clients(
                self.episodes, train, config.num_clients, config.split, fold_in(k_split, 1)
            )
        else:
            clients = _checked_client_episodes(config.client_episodes, train)
        self.train_episodes, self.holdout_episodes, self.client_episodes = train, held, clients
        self.stats = _merged_stats(self.metas)

        self._policy = self._build_policy(k_build)
        self._params = tuple(p for p in self._policy.parameters() if p.requires_grad)
        self.spec: ParamSpec = spec_of(
            {n: p for n, p in self._policy.named_parameters() if p.requires_grad}
        )
        if self.spec.size == 0:
            raise ValueError(f"policy {config.policy!r} has no trainable parameters")
        self._buffers = tuple((b, b.detach().clone()) for b in self._policy.buffers())
        self._initial = self._flat_trainable()
        self.preprocessor, self.postprocessor = self._processors()
        # Frames are loaded on first use (a Flower ClientApp process reads one client's only).
        self._data: dict[int, torch.utils.data.Dataset] = {}  # owner (-1: held out) -> frames
        self._cache: dict[tuple[int, int], dict] = {}

    # ----------------------------------------------------------------- engine interface
    @property
    def meta(self) -> dict[str, Any]:
        """What a results record says about the task: policy, sources and split."""
        c = self.config
        return {
            "policy": c.policy,
            "repo_id": list(c.repo_id),
            "split": c.split,
            "episodes": len(self.episodes),
            "holdout_episodes": len(self.holdout_episodes),
        }

    @property
    def num_clients(self) -> int:
        return len(self.client_episodes)

    def client_size(self, client: int) -> int:
        """Number of frames (training examples) of ``client``."""
        return self._frame_count(self.client_episodes[self._check_client(client)])

    def dp_units(self, client: int) -> int:
        """Number of episodes of ``client``: the privacy units its DP-SGD samples from."""
        return len(self.client_episodes[self._check_client(client)])

    @property
    def holdout_size(self) -> int:
        return self._frame_count(self.holdout_episodes)

    def init(self, key: Key) -> torch.Tensor:
        """Flat trainable parameters of a freshly built policy whose random weights are
        drawn from ``key``. With ``pretrained_path`` the pretrained weights (``key`` unused)."""
        if self.config.pretrained_path is not None:
            return self._initial.clone()
        policy = self._build_policy(key)
        trainable = {n: p for n, p in policy.named_parameters() if p.requires_grad}
        flat, _ = flatten(trainable, self.spec)
        return flat.cpu()

    def train_client(
        self,
        flat: torch.Tensor,
        client: int,
        cfg: ClientConfig | None = None,
        work: int | None = None,
        key: Key | None = None,
        *,
        steps: int | None = None,
        lr: float | None = None,
        prox_mu: float | None = None,
    ) -> tuple[torch.Tensor, int, dict[str, float]]:
        """Optimizer steps on ``client``'s frames from parameters ``flat``.

        Two call forms. Direct: ``train_client(flat, client, steps=, lr=, prox_mu=0.0,
        key=)``. Engine (:mod:`fedkit.simulation`): ``train_client(flat, client, cfg, work,
        key)`` with a :class:`fedkit.ClientConfig` ``cfg`` and ``work`` units, turned into
        steps by :meth:`steps_for`; ``lr`` and ``prox_mu`` come from ``cfg``. The task's own
        optimizer (``So100Config.optimizer`` with the policy's preset) and batch size are
        used either way; ``cfg``'s optimizer, momentum, weight decay and batch size are not.

        Minimises the policy's loss plus ``prox_mu / 2 · ‖θ − flat‖²`` (FedProx) when
        ``prox_mu > 0``. Returns ``(Δ = θ_local − flat, client frames, metrics)``; metrics
        hold ``steps`` and the mean, first and last training loss without the proximal term
        (``loss``, ``loss_first``, ``loss_last``).

        FedProx: Li et al. 2020, Federated optimization in heterogeneous networks.
        """
        if key is None:
            raise TypeError("train_client needs a key")
        if cfg is None:
            if work is not None:
                raise TypeError("train_client: work is only valid with a ClientConfig cfg")
            if steps is None or lr is None:
                raise TypeError("train_client needs steps= and lr= (or a ClientConfig and work)")
            return self._train(flat, client, steps, lr, 0.0 if prox_mu is None else prox_mu, key)
        if steps is not None or lr is not None or prox_mu is not None:
            raise TypeError("train_client: pass either a ClientConfig and work, or steps= and lr=")
        if work is None:
            raise TypeError("train_client: a ClientConfig needs work (epochs or steps)")
        if cfg.dp_sgd is not None:
            if cfg.prox_mu:
                raise ValueError(
                    f"ClientConfig.prox_mu={cfg.prox_mu}: the SO-100 task's DP-SGD has no "
                    "proximal term; use prox_mu=0"
                )
            return self._train_dp(
                flat, client, self.steps_for(client, cfg, work), cfg.lr, cfg.dp_sgd, key
            )
        return self._train(
            flat, client, self.steps_for(client, cfg, work), cfg.lr, cfg.prox_mu, key
        )

    def steps_for(self, client: int, cfg: ClientConfig, work: int) -> int:
        """Optimizer steps for ``work`` units of ``cfg``: ``work`` steps when ``cfg.steps`` is
        set, else ``work`` epochs of ``ceil(frames / batch_size)`` steps each, with the
        task's batch size (the one :func:`batch_order` draws batches of). With
        ``cfg.dp_sgd`` an epoch is ``ceil(episodes / dp_sgd.batch_size)`` steps."""
        if not isinstance(work, int) or work < 0:
            raise ValueError(f"work must be a non-negative int, got {work!r}")
        if cfg.steps is not None:
            return work
        if cfg.dp_sgd is not None:
            return work * math.ceil(self.dp_units(client) / int(cfg.dp_sgd.batch_size))
        return work * math.ceil(self.client_size(client) / self.config.batch_size)

    def _train(
        self,
        flat: torch.Tensor,
        client: int,
        steps: int,
        lr: float,
        prox_mu: float,
        key: Key,
    ) -> tuple[torch.Tensor, int, dict[str, float]]:
        self.spec.check(flat, what="global parameters")
        self._check_client(client)
        if not isinstance(steps, int) or steps < 0:
            raise ValueError(f"steps must be a non-negative int, got {steps!r}")
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if prox_mu < 0:
            raise ValueError(f"prox_mu must be >= 0, got {prox_mu}")
        k_order, k_steps = split_key(key, 2)
        policy = self._load(flat)
        policy.train()
        anchor = tuple(unflatten(flat.to(self.config.device), self.spec, cast=True).values())
        optimizer, clip = self._optimizer(lr)
        data = self._dataset(client)
        order = batch_order(len(data), steps, self.config.batch_size, k_order)
        losses = []
        with torch.enable_grad():  # engines may call this under no_grad
            for s in range(steps):
                batch = self._batch(data, client, order[s])
                with seeded_global_rng(fold_in(k_steps, s)):
                    loss = _loss(policy.forward(batch))
                objective = loss
                if prox_mu > 0:
                    drift = sum((p - a).pow(2).sum() for p, a in zip(self._params, anchor))
                    objective = loss + 0.5 * prox_mu * drift
                optimizer.zero_grad(set_to_none=True)
                objective.backward()
                if clip is not None:
                    torch.nn.utils.clip_grad_norm_(self._params, clip)
                optimizer.step()
                losses.append(float(loss.detach()))
        delta = self._flat_trainable().to(flat.device) - flat
        metrics = {"steps": float(steps)}
        if losses:
            metrics |= {
                "loss": sum(losses) / len(losses),
                "loss_first": losses[0],
                "loss_last": losses[-1],
            }
        return delta, self.client_size(client), metrics

    def _train_dp(
        self,
        flat: torch.Tensor,
        client: int,
        steps: int,
        lr: float,
        setting: Any,
        key: Key,
    ) -> tuple[torch.Tensor, int, dict[str, float]]:
        """Episode-level DP-SGD (:mod:`fedkit.tasks.so100.dp`): ``steps`` steps, each on a
        Poisson sample of the client's episodes. The keys ``k_batches, k_noise, k_frames,
        k_policy = split(key, 4)`` draw the episode samples, the noise, the frames of a
        long episode and the policy's randomness. One backward pass per sampled episode:
        per-episode gradients need the episode's frames in a forward pass of their own
        (Opacus has no per-sample rule for SmolVLA's RMSNorm and torch.func's ``vmap``
        refuses the global-RNG noise drawn inside ``policy.forward``), and a step samples
        only ``batch_size`` episodes on average. The policy preset's gradient-norm clip is
        not applied: the DP gradient is bounded by construction. The optimiser (AdamW or
        SGD) only post-processes the private gradient."""
        self.spec.check(flat, what="global parameters")
        self._check_client(client)
        if not isinstance(steps, int) or steps < 0:
            raise ValueError(f"steps must be a non-negative int, got {steps!r}")
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        units = self.dp_units(client)
        q = float(setting.sample_rate(units))
        expected, c = q * units, float(setting.max_grad_norm)
        k_batches, k_noise, k_frames, k_policy = split_key(key, 4)
        index, mask = poisson_schedule(units, steps, q, k_batches)
        frames = frames_by_episode(self._frame_episodes(client), range(units))
        policy = self._load(flat)
        policy.train()
        optimizer, _ = self._optimizer(lr)
        data = self._dataset(client)
        reference = torch.zeros(self.spec.size, dtype=flat.dtype, device=self.config.device)
        losses, sampled = [], 0
        with torch.enable_grad():  # engines may call this under no_grad
            for t in range(steps):
                grads, step_losses = [], []
                for j in index[t][mask[t]].tolist():
                    rows = episode_subset(
                        frames[j],
                        self.config.dp_frames_per_episode,
                        fold_in(fold_in(k_frames, t), j),
                    )
                    batch = self._batch(data, client, rows)
                    with seeded_global_rng(fold_in(fold_in(k_policy, t), j)):
                        loss = _loss(policy.forward(batch))
                    grads.append(self._flat_grad(loss))
                    step_losses.append(float(loss.detach()))
                stacked = torch.stack(grads) if grads else reference.new_zeros(0, reference.numel())
                noise = dp_noise(setting, k_noise, t, reference)
                grad = episode_dp_gradient(stacked, c, noise, expected)
                named = unflatten(grad, self.spec, cast=True)
                for p, g in zip(self._params, named.values(), strict=True):
                    p.grad = g.to(p.dtype).clone()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                sampled += len(step_losses)
                if step_losses:
                    losses.append(sum(step_losses) / len(step_losses))
        delta = self._flat_trainable().to(flat.device) - flat
        metrics = {"steps": float(steps), "dp_episodes_sampled": float(sampled)}
        if losses:
            metrics |= {
                "loss": sum(losses) / len(losses),
                "loss_first": losses[0],
                "loss_last": losses[-1],
            }
        return delta, self.client_size(client), metrics

    def _flat_grad(self, loss: torch.Tensor) -> torch.Tensor:
        """The gradient of ``loss`` with respect to the trainable parameters, flat (zeros for
        parameters the loss does not use)."""
        grads = torch.autograd.grad(loss, self._params, allow_unused=True)
        return torch.cat(
            [
                torch.zeros(p.numel(), dtype=p.dtype, device=p.device)
                if g is None
                else g.reshape(-1)
                for p, g in zip(self._params, grads, strict=True)
            ]
        )

    def _frame_episodes(self, client: int) -> torch.Tensor:
        """For each frame of ``client``'s data (in data order), the position of its episode
        in ``client_episodes[client]``."""
        ids = self.client_episodes[client]
        position = {(self.episodes[i].source, self.episodes[i].index): k for k, i in enumerate(ids)}
        data = self._dataset(client)
        sources = sorted({self.episodes[i].source for i in ids})  # the parts' order (_frames)
        out = []
        for part, s in zip(data.datasets, sources, strict=True):
            column = [int(e) for e in part.hf_dataset["episode_index"]]
            if len(column) != len(part):  # not one row per frame: read the frames themselves
                column = [int(part[i]["episode_index"]) for i in range(len(part))]
            out += [position[(s, e)] for e in column]
        return torch.tensor(out, dtype=torch.int64)

    def evaluate(self, flat: torch.Tensor) -> dict[str, float]:
        """The policy's loss on the held-out episodes (``"test_loss"``), averaged over
        frames, with noise from the task's evaluation key (the same at every call).
        At most ``max_eval_frames`` frames, evenly spaced, are used."""
        self.spec.check(flat, what="parameters")
        policy = self._load(flat)
        policy.eval()
        data = self._dataset(-1)
        frames = eval_frames(len(data), self.config.max_eval_frames)
        total, count = 0.0, 0
        with torch.no_grad():
            for b, idx in enumerate(torch.split(frames, self.config.eval_batch_size)):
                batch = self._batch(data, -1, idx)
                with seeded_global_rng(fold_in(self._eval_key, b)):
                    loss = _loss(policy.forward(batch))
                total += float(loss) * idx.numel()
                count += idx.numel()
        return {"test_loss": total / count, "test_frames": float(count)}

    def save_pretrained(self, flat: torch.Tensor, directory: str | Path) -> Path:
        """Write the policy with trainable parameters ``flat`` and its pre/post-processors
        to ``directory`` (LeRobot's ``save_pretrained`` format; reload with
        ``pretrained_path=directory``). A SmolVLA checkpoint names its ``vlm_model_name``,
        which must still exist when it is loaded."""
        self.spec.check(flat, what="parameters")
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        self._load(flat).save_pretrained(out)
        self.preprocessor.save_pretrained(out)
        self.postprocessor.save_pretrained(out)
        return out

    @property
    def policy_config(self) -> Any:
        """The LeRobot config of the task's policy (read it, do not change it)."""
        return self._policy.config

    # ----------------------------------------------------------------- internals
    def _check_client(self, client: int) -> int:
        if not 0 <= client < self.num_clients:
            raise IndexError(f"client {client} out of range for {self.num_clients} clients")
        return client

    def _policy_config(self) -> Any:
        from lerobot.configs.policies import PreTrainedConfig
        from lerobot.policies.factory import make_policy_config

        c = self.config
        overrides = {k: _mutable(v) for k, v in c.policy_overrides.items()}
        if c.pretrained_path is not None:
            cfg = PreTrainedConfig.from_pretrained(c.pretrained_path)
            cfg.pretrained_path = c.pretrained_path
            for name, value in overrides.items():
                setattr(cfg, name, value)
            cfg.device = c.device
            return cfg
        kwargs: dict[str, Any] = {"push_to_hub": False, **overrides, "device": c.device}
        if c.vlm_model_name is not None:
            kwargs["vlm_model_name"] = c.vlm_model_name
        if c.policy in ("act", "diffusion"):
            # torchvision would download ImageNet weights for the ResNet backbone.
            kwargs.setdefault("pretrained_backbone_weights", None)
        return make_policy_config(c.policy, **kwargs)

    def _build_policy(self, key: Key) -> torch.nn.Module:
        from lerobot.policies.factory import make_policy

        with seeded_global_rng(key):
            policy = make_policy(
                self._policy_config(),
                ds_meta=self.metas[0],
                rename_map=dict(self.config.rename_map),
            )
        return policy

    def _processors(self) -> tuple[Any, Any]:
        from lerobot.policies.factory import make_pre_post_processors

        cfg = self._policy.config
        if self.config.pretrained_path is None:
            return make_pre_post_processors(cfg, dataset_stats=self.stats)
        features = {**cfg.input_features, **cfg.output_features}
        return make_pre_post_processors(
            cfg,
            pretrained_path=self.config.pretrained_path,
            preprocessor_overrides={
                "device_processor": {"device": self.config.device},
                "normalizer_processor": {
                    "stats": self.stats,
                    "features": features,
                    "norm_map": cfg.normalization_mapping,
                },
                "rename_observations_processor": {"rename_map": dict(self.config.rename_map)},
            },
            postprocessor_overrides={
                "unnormalizer_processor": {
                    "stats": self.stats,
                    "features": cfg.output_features,
                    "norm_map": cfg.normalization_mapping,
                }
            },
        )

    def _frame_count(self, ids: Sequence[int]) -> int:
        return sum(self.episodes[i].length for i in ids)

    def _dataset(self, owner: int) -> torch.utils.data.Dataset:
        """The frames of client ``owner`` (``-1``: the held-out episodes), loaded once."""
        if owner not in self._data:
            ids = self.holdout_episodes if owner == -1 else self.client_episodes[owner]
            self._data[owner] = self._frames(ids)
        return self._data[owner]

    def _frames(self, ids: Sequence[int]) -> torch.utils.data.Dataset:
        """The frames of episodes ``ids`` (with the policy's action chunks) as one dataset."""
        from lerobot.datasets.factory import resolve_delta_timestamps
        from lerobot.datasets.lerobot_dataset import LeRobotDataset

        parts = []
        for s, meta in enumerate(self.metas):
            episodes = [self.episodes[i].index for i in ids if self.episodes[i].source == s]
            if episodes:
                parts.append(
                    LeRobotDataset(
                        self.config.repo_id[s],
                        root=self.config.root[s],
                        episodes=episodes,
                        delta_timestamps=resolve_delta_timestamps(self._policy.config, meta),
                        video_backend="pyav",
                    )
                )
        return torch.utils.data.ConcatDataset(parts)

    def _item(self, data: torch.utils.data.Dataset, owner: int, index: int) -> dict:
        if not self.config.cache_frames:
            return data[index]
        key = (owner, index)
        if key not in self._cache:
            self._cache[key] = data[index]
        return self._cache[key]

    def _batch(self, data: torch.utils.data.Dataset, owner: int, index: torch.Tensor) -> dict:
        items = [self._item(data, owner, int(i)) for i in index]
        return self.preprocessor(torch.utils.data.default_collate(items))

    def _load(self, flat: torch.Tensor) -> torch.nn.Module:
        with torch.no_grad():
            for p, v in zip(self._params, unflatten(flat, self.spec, cast=True).values()):
                p.copy_(v)
            for b, saved in self._buffers:
                b.copy_(saved)
        return self._policy

    def _flat_trainable(self) -> torch.Tensor:
        named = {n: p for n, p in self._policy.named_parameters() if p.requires_grad}
        return flatten(named, self.spec)[0].cpu()

    def _optimizer(self, lr: float) -> tuple[torch.optim.Optimizer, float | None]:
        preset = self._policy.config.get_optimizer_preset()
        clip = getattr(preset, "grad_clip_norm", None)
        if self.config.optimizer == "sgd":
            return torch.optim.SGD(self._params, lr=lr), clip
        return (
            torch.optim.AdamW(
                self._params,
                lr=lr,
                betas=tuple(getattr(preset, "betas", (0.9, 0.999))),
                eps=getattr(preset, "eps", 1e-8),
                weight_decay=getattr(preset, "weight_decay", 0.0),
            ),
            clip,
        )


def batch_order(n: int, steps: int, batch_size: int, key: Key) -> torch.Tensor:
    """Frame indices ``[steps, batch_size]``: epochs of random permutations of ``range(n)``
    (epoch ``e`` from ``fold_in(key, e)``) read in order, so every frame is seen once per
    epoch."""
    if n < 1:
        raise ValueError("a client has no frames")
    epochs = max(1, math.ceil(steps * batch_size / n))
    stream = torch.cat([permutation(fold_in(key, e), n) for e in range(epochs)])
    return stream[: steps * batch_size].view(steps, batch_size)


def eval_frames(n: int, cap: int | None) -> torch.Tensor:
    """All of ``range(n)``, or ``cap`` evenly spaced indices of it."""
    if n < 1:
        raise ValueError("no held-out frames to evaluate")
    if cap is None or cap >= n:
        return torch.arange(n)
    return torch.linspace(0, n - 1, cap).round().long().unique()


def _loss(output: Any) -> torch.Tensor:
    """The loss tensor of ``policy.forward`` (a tensor or ``(loss, info)``)."""
    return output[0] if isinstance(output, tuple) else output


def _mutable(value: Any) -> Any:
    """Read-only config values back to what LeRobot's dataclasses expect (dict, list)."""
    if isinstance(value, tuple) and value and isinstance(value[0], tuple):
        return [_mutable(v) for v in value]
    if hasattr(value, "items"):
        return {k: _mutable(v) for k, v in value.items()}
    return value


def _episode_table(metas: Sequence[Any], repo_ids: Sequence[str]) -> tuple[Episode, ...]:
    rows = []
    for s, (meta, repo_id) in enumerate(zip(metas, repo_ids, strict=True)):
        episodes = meta.episodes
        robot = f"{s:03d}:{meta.robot_type}:{repo_id}"
        for index, tasks, length in zip(
            episodes["episode_index"], episodes["tasks"], episodes["length"], strict=True
        ):
            task = tasks[0] if isinstance(tasks, list | tuple) and tasks else str(tasks)
            rows.append(Episode(s, int(index), str(task), robot, int(length)))
    return tuple(rows)


def _check_sources(metas: Sequence[Any], repo_ids: Sequence[str]) -> None:
    first = metas[0]
    for meta, repo_id in zip(metas[1:], repo_ids[1:]):
        if meta.features != first.features:
            raise ValueError(
                f"source dataset {repo_id!r} has features {sorted(meta.features)} that differ "
                f"from {repo_ids[0]!r}'s {sorted(first.features)}; all sources must match"
            )
        if meta.fps != first.fps:
            raise ValueError(f"source dataset {repo_id!r} has fps {meta.fps}, not {first.fps}")


def _checked_client_episodes(
    clients: tuple[tuple[int, ...], ...], train: Sequence[int]
) -> tuple[tuple[int, ...], ...]:
    allowed = set(train)
    seen: set[int] = set()
    for c, eps in enumerate(clients):
        if not eps:
            raise ValueError(f"client_episodes: client {c} has no episodes")
        bad = [e for e in eps if e not in allowed or e in seen]
        if bad:
            raise ValueError(
                f"client_episodes: client {c} lists episodes {bad} that are held out, unknown "
                "or already given to another client"
            )
        seen.update(eps)
    return tuple(tuple(sorted(eps)) for eps in clients)


def _merged_stats(metas: Sequence[Any]) -> dict:
    if len(metas) == 1:
        return metas[0].stats
    from lerobot.datasets.compute_stats import aggregate_stats

    return aggregate_stats([m.stats for m in metas])
