"""privacy suite (docs/architecture.md): differential privacy for fedkit.

* :mod:`privacy.mechanisms` — DP components for ``fedkit.chain``: clipping, DP weights, the
  fixed-denominator mean, central Gaussian noise (``dp_fedavg``), adaptive clipping, local DP,
  tree-aggregation noise (``dp_ftrl``);
* :mod:`privacy.accounting` — ε of a history (Opacus's RDP and PRV accountants, Google's
  dp-accounting PLD), ``calibrate``, and the pure budget ledgers an engine uses to stop at a
  target ε; :mod:`privacy.tree_accounting` — DP-FTRL's tree sensitivity and ε;
* :mod:`privacy.budget` — the accountants ``fedkit.simulate`` consults each round (ε per round
  in the record, a clean stop at ``target_epsilon``): ``CentralDPAccountant``, ``DPSGDAccountant``;
* :mod:`privacy.dpsgd` — client DP-SGD (``DPSGD`` setting; ``torch.func`` and Opacus paths);
* :mod:`privacy.audit` — empirical lower bounds on ε by canaries (one-run and many-run
  audits; ``fedkit audit privacy``).
"""
