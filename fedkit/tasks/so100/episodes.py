"""Which episodes each client trains on: hold-out and client splits as pure functions.

The episodes of one or more LeRobot datasets form one table (:class:`Episode` rows, in
source order, then episode order); an episode's *id* is its row number. Splits return
tuples of ids, each sorted, and depend only on the table, their arguments and a key.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import torch

from fedkit.core.keys import Key, choice, fold_in, permutation

SPLITS = ("episodes", "task", "robot")


@attrs.frozen
class Episode:
    """One recorded episode: ``index`` inside source dataset ``source``, its (first) task
    string, the robot that recorded it (``robot``: the source dataset's label, since
    LeRobot stores one robot per dataset) and its number of frames."""

    source: int
    index: int
    task: str
    robot: str
    length: int


def holdout(
    table: Sequence[Episode], holdout_episodes: int | Sequence[int], key: Key
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Split the table's ids into ``(train, held_out)``.

    An int ``h`` holds out ``h`` episodes of every source dataset, chosen uniformly from
    ``fold_in(key, source)``; a sequence holds out exactly those ids.
    """
    n = len(table)
    if isinstance(holdout_episodes, int):
        if holdout_episodes < 1:
            raise ValueError(f"holdout_episodes must be >= 1, got {holdout_episodes}")
        held: list[int] = []
        for source in sorted({e.source for e in table}):
            ids = [i for i, e in enumerate(table) if e.source == source]
            if holdout_episodes >= len(ids):
                raise ValueError(
                    f"source dataset {source} has {len(ids)} episodes: cannot hold out "
                    f"{holdout_episodes} and keep one for training"
                )
            picks = choice(fold_in(key, source), len(ids), holdout_episodes)
            held.extend(ids[int(p)] for p in picks)
    else:
        held = [int(i) for i in holdout_episodes]
        bad = [i for i in held if not 0 <= i < n]
        if bad or not held or len(set(held)) != len(held):
            raise ValueError(
                f"holdout_episodes must be distinct episode ids in [0, {n}), got {list(holdout_episodes)}"
            )
    held_set = set(held)
    train = tuple(i for i in range(n) if i not in held_set)
    if not train:
        raise ValueError("every episode is held out: nothing left to train on")
    return train, tuple(sorted(held_set))


def assign_clients(
    table: Sequence[Episode], train: Sequence[int], num_clients: int, split: str, key: Key
) -> tuple[tuple[int, ...], ...]:
    """The training episode ids of each of ``num_clients`` clients.

    * ``"episodes"``: the episodes in a random order (from ``key``) dealt into
      ``num_clients`` parts whose sizes differ by at most one;
    * ``"task"``: episodes grouped by task string; the groups (sorted by task) go to
      clients in turn, so a client holds whole tasks;
    * ``"robot"``: the same by robot, i.e. by source dataset (one client per arm).

    Every training episode lands in exactly one client, and every client gets at least one.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
    if num_clients < 1:
        raise ValueError(f"num_clients must be >= 1, got {num_clients}")
    train = list(train)
    if split == "episodes":
        if len(train) < num_clients:
            raise ValueError(
                f"split='episodes' needs one training episode per client: {len(train)} "
                f"episodes for {num_clients} clients"
            )
        order = permutation(key, len(train))
        parts = torch.tensor_split(order, num_clients)
        return tuple(tuple(sorted(train[int(j)] for j in part)) for part in parts)
    label = (lambda e: e.task) if split == "task" else (lambda e: e.robot)
    groups: dict[str, list[int]] = {}
    for i in train:
        groups.setdefault(label(table[i]), []).append(i)
    if len(groups) < num_clients:
        raise ValueError(
            f"split={split!r} found {len(groups)} distinct {split}s ({sorted(groups)}) in the "
            f"training episodes, fewer than num_clients={num_clients}"
        )
    clients: list[list[int]] = [[] for _ in range(num_clients)]
    for g, name in enumerate(sorted(groups)):
        clients[g % num_clients].extend(groups[name])
    return tuple(tuple(sorted(c)) for c in clients)
