"""Every privacy config gets a status: ``sound`` when its chain is the one the ε assumes
(checked here by the sensitivity the skeptic would test), ``nominal`` otherwise."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_module
from hypothesis import given, settings
from hypothesis import strategies as st

import fedkit
from experiments.build import build
from experiments.run import run_experiment
from fedkit.strategy import ServerState

SMALL = ["num_clients=6", "f=1", "rounds=2", "tensorboard=false", "threads=1"]
CONFIGS = ("central", "central_adaptive", "local", "dpsgd", "ftrl")


def cfg_of(*overrides: str):
    with initialize_config_module(config_module="experiments.configs", version_base="1.3"):
        return compose("config", overrides=[*SMALL, *overrides])


@pytest.mark.parametrize("name", CONFIGS)
def test_every_privacy_config_with_the_plain_mean_is_sound(name):
    exp = build(cfg_of(f"privacy={name}", "server=[mean]"))
    assert exp.privacy.status == "sound" and exp.privacy.status_reason


def test_central_dp_builds_dp_fedavg_with_poisson_sampling_and_quorum_zero():
    exp = build(cfg_of("privacy=central", "strategy.clients_per_round=3", "strategy.quorum=2"))
    names = [type(c).__name__ for c in exp.strategy.server.components]
    assert names == ["ClipUpdates", "UniformWeights", "FixedMean", "GaussianNoise"]
    fixed, noise = exp.strategy.server.components[2], exp.strategy.server.components[3]
    assert fixed.expected_weight == 3 and noise.expected_clients == 3
    assert exp.strategy.sampling == "poisson" and exp.strategy.quorum == 0
    assert exp.strategy.sample_rate(6) == 0.5 == exp.privacy.sample_rate


def test_a_robust_reducer_after_clipping_is_nominal_and_says_why():
    exp = build(cfg_of("privacy=central", "server=[clip,median]"))
    assert exp.privacy.status == "nominal"
    assert "Clip, Median" in exp.privacy.status_reason
    names = [type(c).__name__ for c in exp.strategy.server.components]
    assert names[-2:] == ["Median", "GaussianNoise"]


def test_a_nominal_chain_keeps_its_quorum_for_its_robust_reducer():
    # the benchmark's dp_trimmed_mean skips rounds with fewer than 2f + 3 valid replies
    exp = build(cfg_of("defense=dp_trimmed_mean", "strategy.quorum=5"))
    assert exp.privacy.status == "nominal"
    assert exp.strategy.quorum == 5 and exp.strategy.sampling == "poisson"


def test_adaptive_clipping_refuses_a_chain_it_cannot_replace():
    with pytest.raises(ValueError, match="use server=mean"):
        build(cfg_of("privacy=central_adaptive", "server=[median]"))


def test_the_record_carries_the_status_and_the_sampling(tmp_path):
    record = run_experiment(
        cfg_of("privacy=central", "strategy.clients_per_round=3", "privacy.target_epsilon=null"),
        tmp_path,
        progress=False,
    )
    privacy = record["privacy"]
    assert privacy["status"] == "sound" and privacy["sampling"] == "poisson"
    assert [m["epsilon"] for m in record["metrics"]][-1] == pytest.approx(privacy["epsilon"])


SOUND = build(
    cfg_of("privacy=central", "strategy.clients_per_round=3", "privacy.noise_multiplier=0")
)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 6),
    d=st.integers(1, 5),
    scale=st.floats(1e-3, 1e6),
    examples=st.lists(st.integers(1, 10**6), min_size=7, max_size=7),
    seed=st.integers(0, 2**31 - 1),
)
def test_one_client_moves_the_sound_aggregate_by_at_most_C_over_m(n, d, scale, examples, seed):
    # add/remove one client, whatever its update norm and claimed example count: the
    # noise-free release moves by at most C / m (m = expected clients per round)
    server = SOUND.strategy.server
    g = torch.Generator().manual_seed(seed)
    rows = torch.randn(n + 1, d, generator=g, dtype=torch.float64) * scale
    w = torch.tensor(examples[: n + 1], dtype=torch.float64)
    key = fedkit.key(seed)
    state = ServerState(round=0, params=torch.zeros(d), chain_state=server.init(d)).chain_state
    with_it, _, _ = server(rows, w, state, key)
    without, _, _ = server(rows[:n], w[:n], state, key)
    gone = w.clone()
    gone[n] = 0.0  # or: sampled but its reply rejected / lost
    zeroed, _, _ = server(rows, gone, state, key)
    bound = SOUND.privacy.clip_norm / 3 * (1 + 1e-9)
    assert float((with_it - without).norm()) <= bound
    assert float((with_it - zeroed).norm()) <= bound
    assert torch.allclose(without, zeroed)


def test_adaptive_clipping_charges_the_count_query_in_the_accountants_epsilon():
    from privacy.mechanisms.adaptive import default_count_noise_std, split_noise_multiplier

    exp = build(cfg_of("privacy=central_adaptive", "strategy.clients_per_round=3"))
    reducer = exp.strategy.server.components[1]
    assert type(reducer).__name__ == "AdaptiveClipMean"
    z = exp.privacy.noise_multiplier
    assert exp.strategy.accountant.noise_multiplier == z == reducer.noise_multiplier
    sigma_b = default_count_noise_std(reducer.count_noise_std, reducer.expected_clients)
    # the mean gets less than the whole budget: z_mean > z, and the two releases together
    # are one Gaussian mechanism at z: 1/z^2 = 1/z_mean^2 + 1/(2 sigma_b)^2
    z_mean = split_noise_multiplier(z, sigma_b)
    assert z_mean > z
    assert z_mean**-2 + (2 * sigma_b) ** -2 == pytest.approx(z**-2)
