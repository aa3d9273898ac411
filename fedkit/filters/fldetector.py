"""FLDetector: ban clients whose updates the model's own history cannot predict."""

from __future__ import annotations

import math
from typing import ClassVar

import attrs
import torch

from fedkit.core.components import RoundContext, Transform, require_context
from fedkit.core.keys import Key, uniform
from fedkit.core.rows import coordinate_chunks, weighted_rows
from fedkit.filters._common import check_int, check_rows, require_finite, row_norms
from fedkit.filters.foolsgold import client_rows, grow

#: fewest fresh, full-window scores the gap statistic looks at (two clusters need three)
MIN_CANDIDATES = 3


def _products(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a bᵀ`` in float64 (``[k, l]``), accumulated over coordinate chunks."""
    out = torch.zeros(a.shape[0], b.shape[0], dtype=torch.float64, device=a.device)
    for cols in coordinate_chunks(max(a.shape[0], b.shape[0], 1), a.shape[1]):
        out += a[:, cols].to(torch.float64) @ b[:, cols].to(torch.float64).T
    return out


def lbfgs_hvp(steps: torch.Tensor, changes: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``B v`` (float64, ``[d]``) for the L-BFGS approximation ``B`` of the Jacobian of the
    update map, built from ``k`` secant pairs ``(s_j, y_j)``: the rows of ``steps`` (changes
    of the global model, oldest first) and ``changes`` (changes of the global update).

    Compact form (Byrd, Nocedal, Schnabel 1994, eq. 2.25) of ``k`` BFGS updates from
    ``B_0 = σ I`` with ``σ = y_kᵀ s_k / s_kᵀ s_k``::

        B = σ I − [σ S  Y] M⁻¹ [σ Sᵀ; Yᵀ],   M = [[σ SᵀS, L], [Lᵀ, −D]]

    with ``S = [s_1 … s_k]``, ``Y = [y_1 … y_k]``, ``L`` the strictly lower triangle of
    ``SᵀY`` and ``D`` its diagonal. ``M`` is inverted by a pseudo-inverse, so degenerate
    pairs (``sᵀy = 0``) give a finite product. ``B`` is homogeneous in ``Y``: pairs of model
    updates (``−lr ×`` gradients) give ``−lr ×`` the Hessian-vector product, so the
    prediction below works in either convention.

    Zhang, Fang, Gong, Wang 2022, FLDetector (KDD), Algorithm 1.
    """
    k, d = steps.shape
    if k == 0 or changes.shape != steps.shape or v.shape != (d,):
        raise ValueError(
            f"lbfgs_hvp: needs k >= 1 pairs of equal shape [k, d] and v of shape [d], got "
            f"steps {tuple(steps.shape)}, changes {tuple(changes.shape)}, v {tuple(v.shape)}"
        )
    vv = v.to(steps.device)[None, :]
    sy = _products(steps, changes)  # [i, j] = s_i · y_j
    ss = _products(steps, steps)
    sv = _products(steps, vv)[:, 0]
    yv = _products(changes, vv)[:, 0]
    last_ss = ss[-1, -1]
    sigma = sy[-1, -1] / last_ss if bool(last_ss > 0) else sy.new_tensor(1.0)
    lower = torch.tril(sy, diagonal=-1)
    m = torch.cat(
        [
            torch.cat([sigma * ss, lower], dim=1),
            torch.cat([lower.T, -torch.diag(torch.diagonal(sy))], dim=1),
        ]
    )
    q = torch.linalg.pinv(m, hermitian=True) @ torch.cat([sigma * sv, yv])
    out = sigma * v.to(device=steps.device, dtype=torch.float64)
    for cols in coordinate_chunks(2 * k, d):
        s_block = steps[:, cols].to(torch.float64)
        y_block = changes[:, cols].to(torch.float64)
        out[cols] -= sigma * (q[:k] @ s_block) + q[k:] @ y_block
    return out


def prediction_distances(
    updates: torch.Tensor, previous: torch.Tensor, hvp: torch.Tensor
) -> torch.Tensor:
    """``‖(previous_i + hvp) − updates_i‖`` (float64, ``[m]``): how far each update lies from
    its prediction, the client's previous update moved by the Hessian-vector product."""
    m, d = updates.shape
    acc = torch.zeros(m, dtype=torch.float64, device=updates.device)
    for cols in coordinate_chunks(2 * m, d):
        gap = (
            previous[:, cols].to(torch.float64)
            + hvp[cols].to(device=updates.device)
            - updates[:, cols].to(torch.float64)
        )
        acc += gap.square().sum(dim=1)
    return acc.sqrt()


def two_means(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exact 1-D k-means for k = 1 and k = 2 on each row of ``x`` (``[b, m]``, ``m >= 2``):
    ``(W_1 [b], W_2 [b], cut [b])`` with ``W_k`` the within-cluster sum of squares of the
    optimal k clusters and ``cut`` the midpoint between the two clusters (the upper
    cluster is ``x > cut``). In one dimension optimal clusters are intervals of the sorted
    values, so trying every split finds the optimum: deterministic, no random restarts."""
    if x.ndim != 2 or x.shape[1] < 2:
        raise ValueError(f"two_means: needs x of shape [b, m] with m >= 2, got {tuple(x.shape)}")
    xs = torch.sort(x.to(torch.float64), dim=1).values
    m = xs.shape[1]
    c1 = torch.cumsum(xs, dim=1)
    c2 = torch.cumsum(xs.square(), dim=1)
    total1, total2 = c1[:, -1:], c2[:, -1:]
    w1 = (total2[:, 0] - total1[:, 0].square() / m).clamp(min=0.0)
    left = torch.arange(1, m, dtype=torch.float64, device=x.device)  # sizes of the lower part
    lo1, lo2 = c1[:, :-1], c2[:, :-1]
    sse = (lo2 - lo1.square() / left) + ((total2 - lo2) - (total1 - lo1).square() / (m - left))
    best = sse.clamp(min=0.0).min(dim=1)
    j = best.indices[:, None]
    cut = (xs.gather(1, j) + xs.gather(1, j + 1))[:, 0] / 2
    return w1, best.values, cut


def gap_statistic_attack(scores: torch.Tensor, key: Key, *, references: int = 10) -> bool:
    """Whether the gap statistic picks more than one cluster for ``scores`` (``[m]``,
    ``m >= 2``): the scores are rescaled to ``[0, 1]``, ``references`` uniform samples of
    ``m`` points on ``[0, 1]`` drawn with ``key`` give ``E*[log W_k]`` and its spread
    ``s_k = sd(log W*_k) · sqrt(1 + 1/B)``, and ``Gap(k) = E*[log W_k] − log W_k``. The
    smallest ``k`` with ``Gap(k) ≥ Gap(k+1) − s_{k+1}`` is 1 exactly when
    ``Gap(1) ≥ Gap(2) − s_2``; otherwise there is an attack. Equal scores: no attack.

    Tibshirani, Walther, Hastie 2001, Estimating the Number of Clusters in a Data Set via
    the Gap Statistic (JRSS B); the test FLDetector uses (Zhang et al. 2022, KDD).
    """
    x = scores.to(torch.float64).flatten()
    references = check_int(references, "gap_statistic_attack: references", 1)
    if x.numel() < 2:
        raise ValueError(f"gap_statistic_attack: needs at least 2 scores, got {x.numel()}")
    low, high = x.min(), x.max()
    if not bool(high > low):
        return False
    x = (x - low) / (high - low)
    ref = uniform(key, (references, x.numel()), dtype=torch.float64, device=x.device)
    w1, w2, _ = two_means(torch.cat([x[None, :], ref]))
    log1, log2 = w1.log(), w2.log()  # W_2 = 0 (two exact values): log = -inf, Gap(2) = inf
    gap1 = log1[1:].mean() - log1[0]
    gap2 = log2[1:].mean() - log2[0]
    s2 = log2[1:].std(unbiased=False) * math.sqrt(1.0 + 1.0 / references)
    return bool(gap1 < gap2 - s2)


def fldetector_outliers(scores: torch.Tensor, key: Key, *, references: int = 10) -> torch.Tensor:
    """BoolTensor ``[m]``: the clients FLDetector flags from their suspicious scores — none
    when the gap statistic (:func:`gap_statistic_attack`) finds a single cluster, else the
    upper cluster of the optimal 2-means split (the cluster with the larger mean score)."""
    x = scores.to(torch.float64).flatten()
    if not gap_statistic_attack(x, key, references=references):
        return torch.zeros(x.shape, dtype=torch.bool, device=x.device)
    _, _, cut = two_means(x[None, :])
    return x > cut[0]


def _float_table(t: torch.Tensor, d: int) -> bool:
    return t.ndim == 2 and t.shape[1] == d


@attrs.frozen(eq=False)
class FLDetectorState:
    """FLDetector's memory (tensors on the updates' device; per-client tables indexed by
    client id, ``N`` rows, grown when the federation grows).

    ``calls``: calls so far; ``params``: the global parameters of the previous call
    (``[d]``, empty before the first); ``aggregate``: the weighted mean of the rows the
    previous call passed on (``[d]``, empty before the first); ``steps`` / ``changes``: the
    last ``window`` differences of ``params`` and of ``aggregate`` between calls
    (``[k, d]``, oldest first); ``last``: each client's latest update (``[N, d]``);
    ``last_call``: the call that brought it (int64 ``[N]``, 0 = never); ``distances``: each
    client's last ``window`` normalised prediction distances (float64 ``[N, window]``, a
    ring; unused slots hold 0); ``count``: how many it has had (int64 ``[N]``);
    ``banned``: BoolTensor ``[N]``, clients excluded for the rest of the run.
    """

    calls: int
    params: torch.Tensor
    aggregate: torch.Tensor
    steps: torch.Tensor
    changes: torch.Tensor
    last: torch.Tensor
    last_call: torch.Tensor
    distances: torch.Tensor
    count: torch.Tensor
    banned: torch.Tensor


@attrs.frozen
class FLDetector(Transform):
    """FLDetector as a filter: predict each client's update from its previous one and ban
    the clients whose updates stay unpredictable.

    Each call (round ``t``, global parameters ``w_t = context.params``):

    1. ``v = w_t − w_{t−1}`` (``w_{t−1}`` kept from the previous call) and
       ``hvp = B v`` with ``B`` the L-BFGS approximation (:func:`lbfgs_hvp`) from the last
       ``window`` pairs ``(w_τ − w_{τ−1}, ḡ_τ − ḡ_{τ−1})``, where ``ḡ_τ`` is the weighted
       mean of the rows this component passed on at round ``τ`` (the FedAvg aggregate of
       the defense ``FLDetector → Mean``; with another reducer or later transforms the
       true aggregate differs and ``ḡ`` stands in for it);
    2. for each client that also sent an update in the previous call: predicted update
       ``ĝ_i = g_i^{t−1} + hvp`` and distance ``d_i = ‖ĝ_i − g_i^t‖``, normalised by the
       round's mean distance (the paper divides by the sum; the mean is ``n`` times that
       and keeps rounds with different client counts comparable; the clustering below does
       not depend on the scale);
    3. suspicious score ``s_i`` = mean of the client's last ``window`` normalised
       distances;
    4. once at least three clients scored this round have full windows, the gap statistic
       (:func:`gap_statistic_attack`, ``references`` uniform samples drawn with ``key``)
       decides whether their scores form more than one cluster; if so, exact 1-D 2-means
       splits them and the upper cluster is banned (:func:`fldetector_outliers`).

    Banned clients get weight 0 in the round they are detected and in every later round
    (reason ``"fldetector"``) and no longer shape the predictions. The paper instead
    removes them and restarts training from scratch; here training goes on without them
    (a banned mask in the state), and only the detector restarts: the score windows and
    the L-BFGS window are cleared, so the next check comes ``window`` scored rounds later.
    The gap statistic has a false-alarm rate that falls with the number of scored clients
    (on Gaussian scores with 10 references: about 7 % per check with 10 clients, 2 % with
    20, under 1 % with 30), and it runs every round once the windows are full.
    The upper cluster is banned whatever its size: attackers whose updates are a smooth
    function of the honest mean (the negated mean, ALIE) are easier to predict than
    heterogeneous honest clients, and then the honest clients are the ones banned.
    Scores (``s_i``; NaN before a client's first distance and for rows of weight 0) are in
    ``info["scores"]["fldetector"]``; ``info["attack"]`` says whether the gap statistic
    found an attack this round. Nobody is scored in the first ``warmup`` calls nor before
    the L-BFGS window holds a pair (the first two calls): early training moves the model
    far and fast, and the authors' code waits 50 rounds before it predicts.

    Memory (:class:`FLDetectorState`): O(N·d + N·window) per-client (latest updates,
    distances) and O(window·d) for the L-BFGS window, ``N = context.num_clients``,
    allocated on the first call. Needs the round's context (client ids, global parameters).

    Zhang, Fang, Gong, Wang 2022, FLDetector: Defending Federated Learning Against Model
    Poisoning Attacks via Detecting Malicious Clients (KDD).
    """

    window: int = attrs.field(default=10)
    references: int = attrs.field(default=10)
    warmup: int = attrs.field(default=0)
    uses_context: ClassVar[bool] = True

    @window.validator
    def _check_window(self, attribute, value):
        check_int(value, "FLDetector: window (past rounds for L-BFGS and the scores)", 1)

    @references.validator
    def _check_references(self, attribute, value):
        check_int(value, "FLDetector: references (uniform samples of the gap statistic)", 1)

    @warmup.validator
    def _check_warmup(self, attribute, value):
        check_int(value, "FLDetector: warmup (calls before anyone is scored)", 0)

    def init(self, d: int) -> FLDetectorState:
        empty = torch.zeros(0)
        return FLDetectorState(
            calls=0,
            params=empty,
            aggregate=empty,
            steps=torch.zeros(0, d),
            changes=torch.zeros(0, d),
            last=torch.zeros(0, d),
            last_call=torch.zeros(0, dtype=torch.int64),
            distances=torch.zeros(0, self.window, dtype=torch.float64),
            count=torch.zeros(0, dtype=torch.int64),
            banned=torch.zeros(0, dtype=torch.bool),
        )

    def _prepared(self, state, updates, n_clients: int) -> FLDetectorState:
        """``state`` on the updates' device with per-client tables of ``n_clients`` rows."""
        d = updates.shape[1]
        state = self.init(d) if state is None else state
        if not (
            _float_table(state.steps, d)
            and _float_table(state.last, d)
            and state.distances.shape[1:] == (self.window,)
        ):
            raise ValueError(
                f"FLDetector: the state does not fit updates of dimension {d} and "
                f"window={self.window} (last {tuple(state.last.shape)}, distances "
                f"{tuple(state.distances.shape)})"
            )
        dev = updates.device
        last, steps, changes = state.last.to(dev), state.steps.to(dev), state.changes.to(dev)
        if last.shape[0] == 0:  # first call: tables take the updates' dtype
            last = last.to(updates.dtype)
        if steps.shape[0] == 0:
            steps, changes = steps.to(updates.dtype), changes.to(updates.dtype)
        return attrs.evolve(
            state,
            params=state.params.to(dev),
            aggregate=state.aggregate.to(dev),
            steps=steps,
            changes=changes,
            last=grow(last, n_clients),
            last_call=grow(state.last_call.to(dev), n_clients),
            distances=grow(state.distances.to(dev), n_clients),
            count=grow(state.count.to(dev), n_clients),
            banned=grow(state.banned.to(dev), n_clients, False),
        )

    def __call__(self, updates, weights, state, key, *, context: RoundContext | None = None):
        context = require_context(context, "FLDetector")
        updates, w = check_rows(updates, weights, "FLDetector")
        n, d = updates.shape
        if tuple(context.params.shape) != (d,):
            raise ValueError(
                f"FLDetector: context.params must have shape ({d},), got "
                f"{tuple(context.params.shape)}"
            )
        rows, ids = client_rows(context, w, "FLDetector")
        require_finite(row_norms(updates), w > 0, "FLDetector")
        st = self._prepared(state, updates, int(context.num_clients))
        params = context.params.to(device=updates.device)
        banned = st.banned.clone()
        keep = ~banned[ids]  # active rows whose client is not banned
        rows, ids = rows[keep], ids[keep]

        # 1-2. predict the updates of the clients seen in the previous call, score them
        distances, count = st.distances, st.count
        scored = torch.zeros(0, dtype=torch.int64, device=updates.device)
        if st.calls >= self.warmup and st.steps.shape[0] > 0 and st.params.numel() == d:
            fresh = st.last_call[ids] == st.calls
            scored = torch.nonzero(fresh).flatten()
        if scored.numel():
            s_rows, s_ids = rows[scored], ids[scored]
            hvp = lbfgs_hvp(st.steps, st.changes, params - st.params.to(params.dtype))
            dist = prediction_distances(updates[s_rows], st.last[s_ids], hvp)
            mean = dist.mean()
            dist = dist / mean if bool(mean > 0) else torch.ones_like(dist)
            distances = distances.clone()
            distances[s_ids, count[s_ids] % self.window] = dist
            count = count.index_add(0, s_ids, torch.ones_like(s_ids))

        # 3. suspicious scores: the mean of each client's window
        filled = count.clamp(max=self.window)
        table_scores = distances.sum(dim=1) / filled.clamp(min=1)
        table_scores = torch.where(filled > 0, table_scores, math.nan)

        # 4. gap statistic, then 2-means, on the fresh full-window scores
        attack = False
        if scored.numel():
            cand = s_ids[count[s_ids] >= self.window]
            if cand.numel() >= MIN_CANDIDATES:
                if key is None:
                    raise ValueError("FLDetector needs a key for the gap statistic's samples")
                flagged = fldetector_outliers(table_scores[cand], key, references=self.references)
                attack = bool(flagged.any())
                banned[cand[flagged]] = True

        clients = context.clients.to(device=updates.device, dtype=torch.int64)
        active = w > 0
        on_list = torch.zeros_like(active)
        on_list[active] = banned[clients[active]]
        new_w = torch.where(on_list, torch.zeros_like(w), w)
        passed = ~banned[ids]
        rows, ids = rows[passed], ids[passed]

        # remember this round: the passed rows' mean, the L-BFGS pair, the latest updates
        steps, changes = st.steps, st.changes
        if attack:  # the paper restarts after a detection: so do the windows here
            distances, count = torch.zeros_like(distances), torch.zeros_like(count)
            steps, changes = steps[:0], changes[:0]
        new = attrs.evolve(
            st,
            calls=st.calls + 1,
            distances=distances,
            count=count,
            banned=banned,
            steps=steps,
            changes=changes,
        )
        if rows.numel():
            share = torch.zeros(n, dtype=torch.float64, device=updates.device)
            share[rows] = new_w[rows].to(torch.float64) / new_w[rows].to(torch.float64).sum()
            aggregate = weighted_rows(updates, share)
            if not attack and st.params.numel() == d and st.aggregate.numel() == d:
                step = (params - st.params.to(params.dtype)).to(steps.dtype)
                if bool(step.abs().max() > 0):
                    change = (aggregate - st.aggregate.to(aggregate.dtype)).to(steps.dtype)
                    steps = torch.cat([steps, step[None]])[-self.window :]
                    changes = torch.cat([changes, change[None]])[-self.window :]
            last_call = st.last_call.clone()
            last_call[ids] = st.calls + 1
            new = attrs.evolve(
                new,
                params=params.clone(),
                aggregate=aggregate,
                steps=steps,
                changes=changes,
                last=st.last.index_copy(0, ids, updates[rows].to(st.last.dtype)),
                last_call=last_call,
            )
        row_scores = torch.full((n,), math.nan, dtype=torch.float64, device=updates.device)
        row_scores[active] = table_scores[clients[active]]
        info = {
            "rejected": {"fldetector": on_list},
            "scores": {"fldetector": row_scores},
            "attack": attack,
        }
        return (updates, new_w), new, info
