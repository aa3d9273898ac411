"""What a task is: a model as a pure function of flat parameters, plus client data.

:class:`SupervisedTask` covers in-memory classification tasks (digits, fashion-MNIST,
Synthetic) and implements :class:`fedkit.protocols.Task`; the simulation engines train it
sequentially or vectorised (its data is what an adversary may poison). Tasks with their
own training loop (SO-100 policies) implement the protocol with their own ``train_client``
and ``evaluate``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import torch
from torch import nn

from fedkit.core.flat import ParamSpec, flatten, spec_of, unflatten
from fedkit.core.keys import Key, fold_in, uniform


def keyed_init(module: nn.Module, key: Key) -> dict[str, torch.Tensor]:
    """Fresh parameters for ``module`` drawn from ``key`` (PyTorch's default scheme for
    Linear/Conv: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases; norm layers
    get weight 1, bias 0). Buffers keep their values. Never touches the global RNG."""
    out: dict[str, torch.Tensor] = {}
    params = dict(module.named_parameters())
    for i, (name, p) in enumerate(params.items()):
        owner = module.get_submodule(name.rsplit(".", 1)[0]) if "." in name else module
        leaf = name.rsplit(".", 1)[-1]
        if isinstance(owner, nn.modules.batchnorm._NormBase | nn.LayerNorm | nn.GroupNorm):
            out[name] = torch.ones_like(p) if leaf == "weight" else torch.zeros_like(p)
            continue
        weight = getattr(owner, "weight", None)
        fan_in = (
            weight[0].numel()
            if weight is not None and weight.ndim > 1
            else p.shape[-1]
            if p.ndim
            else 1
        )
        bound = 1.0 / math.sqrt(max(fan_in, 1))
        out[name] = uniform(fold_in(key, i), tuple(p.shape), low=-bound, high=bound, dtype=p.dtype)
    return out


@attrs.frozen(eq=False)
class SupervisedTask:
    """A classification task held in memory.

    ``model_fn`` builds the architecture; parameters live outside it as one flat vector
    described by ``spec`` and are applied with ``torch.func.functional_call``.
    """

    name: str
    model_fn: Callable[[], nn.Module]
    client_x: tuple[torch.Tensor, ...] = attrs.field(converter=tuple)
    client_y: tuple[torch.Tensor, ...] = attrs.field(converter=tuple)
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    meta: Mapping[str, Any] = attrs.field(factory=dict)
    module: nn.Module = attrs.field(init=False)
    spec: ParamSpec = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        if len(self.client_x) != len(self.client_y):
            raise ValueError("client_x and client_y must have one entry per client")
        for i, (x, y) in enumerate(zip(self.client_x, self.client_y, strict=True)):
            if x.shape[0] != y.shape[0]:
                raise ValueError(f"client {i}: {x.shape[0]} inputs but {y.shape[0]} labels")
        module = self.model_fn()
        object.__setattr__(self, "module", module)
        object.__setattr__(self, "spec", spec_of(dict(module.named_parameters())))

    @property
    def num_clients(self) -> int:
        return len(self.client_x)

    def client_size(self, client: int) -> int:
        return int(self.client_x[client].shape[0])

    def init(self, key: Key) -> torch.Tensor:
        """Initial flat parameters drawn from ``key``."""
        flat, _ = flatten(keyed_init(self.module, key), self.spec)
        return flat

    def apply(self, flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Logits of the model with flat parameters ``flat`` on inputs ``x``."""
        return torch.func.functional_call(self.module, unflatten(flat, self.spec), (x,))

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(logits, y)

    def per_example_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Loss of each example: cross-entropy with this class's ``loss``; a subclass with
        its own ``loss`` gets that loss applied to each example on its own (override this
        too for speed)."""
        if type(self).loss is SupervisedTask.loss:
            return nn.functional.cross_entropy(logits, y, reduction="none")
        return torch.func.vmap(lambda lg, t: self.loss(lg.unsqueeze(0), t.unsqueeze(0)))(logits, y)

    def train_client(
        self, params: torch.Tensor, client: int, cfg: Any, work: int, key: Key
    ) -> tuple[torch.Tensor, int, dict[str, Any]]:
        """Client ``client``'s local training on its own data
        (:func:`fedkit.training.train_local`): ``(update, examples, {"loss", "steps"})``."""
        from fedkit.training import train_local

        x, y = self.client_x[client], self.client_y[client]
        if work <= 0 or x.shape[0] == 0:
            return torch.zeros_like(params), int(x.shape[0]), {"loss": float("nan"), "steps": 0}
        with torch.no_grad():
            update, loss, steps = train_local(self, params, x, y, work, key, cfg)
        return update, int(x.shape[0]), {"loss": loss, "steps": steps}

    def root_data(self, size: int, key: Key) -> tuple[torch.Tensor, torch.Tensor]:
        """A server's trusted root dataset: ``size`` examples drawn uniformly without
        replacement from the union of the clients' (clean) training data, from ``key`` —
        the setting of Cao et al. 2021 (FLTrust, NDSS), where the root data follows the
        clients' distribution. Poisoning never reaches it (the adversary poisons copies)."""
        from fedkit.core.keys import choice

        total = sum(int(x.shape[0]) for x in self.client_x)
        if not 1 <= size <= total:
            raise ValueError(
                f"root_examples={size}: the clients hold {total} training examples; ask for "
                f"1..{total}"
            )
        picked = torch.sort(choice(key, total, size)).values
        x, y = torch.cat(self.client_x), torch.cat(self.client_y)
        return x.index_select(0, picked), y.index_select(0, picked)

    def evaluate(self, params: torch.Tensor, *, batch: int = 4096) -> dict[str, float]:
        """Mean test loss and accuracy of ``argmax`` predictions on ``test_x, test_y``
        (chunks of ``batch`` examples); ``{}`` without a test set."""
        x, y = self.test_x, self.test_y
        n = int(x.shape[0])
        if n == 0:
            return {}
        loss = torch.zeros((), dtype=torch.float64)
        correct = 0
        with torch.no_grad():
            for start in range(0, n, batch):
                xb, yb = x[start : start + batch], y[start : start + batch]
                logits = self.apply(params, xb)
                loss += self.loss(logits, yb).to(torch.float64) * yb.shape[0]
                correct += int((logits.argmax(dim=-1) == yb).sum())
        return {"test_loss": float(loss / n), "test_accuracy": correct / n}
