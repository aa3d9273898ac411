"""FLTrust with the server's own root data against FLTrust anchored on a client's reply
(issue 16: "FLTrust's trusted root is a client").

Digits, 20 clients (IID), 4 of them Byzantine (20 %), 15 rounds, 3 seeds. Arms:

* ``root``: ``FLTrust`` with ``Strategy(root_examples=100)``: the server trains the global
  model on 100 clean examples it holds (Cao et al., NDSS 2021), the reference no client
  controls;
* ``honest client``: the reference is an honest client's reply (what the old component did
  with its "last row" when that client happened to be honest): one client's data, and its
  reply counts as the anchor rather than as a client;
* ``byzantine client``: the reference is a Byzantine client's reply (the same convention when
  the last row is the adversary's), so the attacker chooses the direction every other
  client is scored against.

Attacks: sign flip and ALIE (omniscient model poisoning, the suite's configs). Output: final
test accuracy and the server's detection rates (a reply with trust 0 is rejected), mean ± std
over seeds, as ``benchmarks/results/trust_anchor.md`` and ``.json``.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/trust_anchor.py [--seeds 0 1 2] [--rounds 15]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import ClassVar

import attrs
import torch

import fedkit
from attacks import ALIE, ModelPoisoning, SignFlip
from fedkit.aggregators import FLTrust, fltrust
from fedkit.aggregators.fltrust import fltrust_trust
from fedkit.core.components import Reducer
from fedkit.tasks import digits


@attrs.frozen
class ClientAnchoredFLTrust(Reducer):
    """FLTrust whose reference is the reply of a client the caller names (by id): the
    broken setup this benchmark measures, not a defense to use."""

    anchor: int
    uses_context: ClassVar[bool] = True

    def __call__(self, updates, weights, state, key, *, context=None):
        row = int(torch.nonzero(context.clients == self.anchor).flatten()[0])
        w = weights.clone()
        w[row] = 0.0  # the anchor is not scored against itself
        _, scores = fltrust_trust(updates, w, updates[row])
        distrusted = (w > 0) & (scores <= 0)  # reported as the real component does
        out = fltrust(updates, w, reference=updates[row])
        return out, state, {"rejected": {"fltrust": distrusted}}


def arm(name: str, controlled: list[int]) -> fedkit.Strategy:
    base = fedkit.Strategy(
        client=fedkit.ClientConfig(lr=0.3, batch_size=16), quorum=1, weighting="examples"
    )
    if name == "root":
        return attrs.evolve(base, server=FLTrust(), root_examples=100)
    honest = next(c for c in range(20) if c not in controlled)
    anchor = controlled[0] if name == "byzantine client" else honest
    return attrs.evolve(base, server=ClientAnchoredFLTrust(anchor=anchor))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--results", default="benchmarks/results")
    args = parser.parse_args()
    torch.set_num_threads(1)
    attacks = {"sign_flip": SignFlip(), "alie": ALIE()}
    arms = ("root", "honest client", "byzantine client")
    rows: list[dict] = []
    t0 = time.perf_counter()
    for seed in args.seeds:
        task = digits(20, key=seed)
        for attack_name, attack in attacks.items():
            adversary = ModelPoisoning(attack=attack, fraction=0.2)
            keys = fedkit.run.plan.RunKeys.of(fedkit.key(seed))
            controlled = adversary.controlled(20, keys.controlled).tolist()
            for name in arms:
                h = fedkit.simulate(
                    task,
                    arm(name, controlled),
                    rounds=args.rounds,
                    key=seed,
                    adversary=adversary,
                    engine="vectorized",
                    progress=False,
                )
                det = h.record["counters"].get("detection", {})
                rows.append(
                    {
                        "seed": seed,
                        "attack": attack_name,
                        "arm": name,
                        "accuracy": h.metrics[-1]["test_accuracy"],
                        "tpr": det.get("tpr"),
                        "fpr": det.get("fpr"),
                    }
                )
                print(rows[-1], flush=True)
    seconds = time.perf_counter() - t0

    def cell(attack: str, name: str, field: str) -> str:
        values = [
            r[field]
            for r in rows
            if r["attack"] == attack and r["arm"] == name and r[field] is not None
        ]
        if not values:
            return "–"
        mean = 100 * statistics.fmean(values)
        sd = 100 * statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{mean:.1f} ± {sd:.1f}"

    lines = [
        "# FLTrust: the server's root data vs a client's reply as the anchor",
        "",
        f"Digits, 20 clients IID, 4 Byzantine, {args.rounds} rounds, seeds {args.seeds}; "
        f"{len(rows)} runs in {seconds:.0f} s. Accuracy, TPR and FPR in % (mean ± std). "
        "Reproduce: `HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/trust_anchor.py`.",
        "",
        "| attack | anchor | accuracy | TPR | FPR |",
        "|---|---|---:|---:|---:|",
    ]
    for attack_name in attacks:
        for name in arms:
            lines.append(
                f"| {attack_name} | {name} | {cell(attack_name, name, 'accuracy')} | "
                f"{cell(attack_name, name, 'tpr')} | {cell(attack_name, name, 'fpr')} |"
            )
    out = Path(args.results)
    (out / "trust_anchor.md").write_text("\n".join(lines) + "\n")
    (out / "trust_anchor.json").write_text(json.dumps({"runs": rows, "seconds": seconds}, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
