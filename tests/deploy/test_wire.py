"""Flat vectors <-> ArrayRecords with the ParamSpec; certificates; run-config settings."""

import ipaddress

import numpy as np
import pytest
import torch
from cryptography import x509
from flwr.app import ArrayRecord, RecordDict

from fedkit.core.flat import spec_of
from fedkit.flower import wire
from fedkit.flower.pki import make_node_key, make_server_pki
from fedkit.flower.settings import DEFAULTS, Settings, build_strategy
from fedkit.replies import validate

SPEC = spec_of({"w": torch.zeros(3, 2), "b": torch.zeros(2)})


def flat(seed: int = 0, dtype=np.float32) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).normal(size=SPEC.size).astype(dtype))


def test_params_round_trip_bit_exact():
    x = flat()
    content = RecordDict()
    wire.write_params(content, x, SPEC)
    assert torch.equal(wire.read_params(content, SPEC), x)


def test_client_refuses_another_model():
    content = RecordDict()
    wire.write_params(content, flat(), SPEC)
    other = spec_of({"w": torch.zeros(4, 2)})
    with pytest.raises(wire.SpecMismatch, match="differs"):
        wire.read_params(content, other)


def test_client_refuses_a_vector_that_does_not_fit_the_spec():
    content = RecordDict()
    wire.write_params(content, flat(), SPEC)
    content[wire.PARAMS] = wire.to_array_record(flat()[:5], wire.PARAMS)
    with pytest.raises(wire.SpecMismatch):
        wire.read_params(content, SPEC)


def test_update_round_trip_and_validation_accepts_it():
    u = flat(1)
    content = RecordDict()
    wire.write_update(content, u, SPEC)
    got = wire.read_update(content, SPEC, max_bytes=10**6)
    assert torch.equal(got, u)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (flat(2)[:4], "wrong_shape"),
        (flat(2, np.float64), "wrong_dtype"),
        (torch.full((SPEC.size,), float("nan")), "non_finite"),
        (flat(2).repeat(4), "oversized"),
        (bytes(7), "wrong_dtype"),
    ],
)
def test_malformed_updates_reach_validation_and_are_rejected(payload, reason):
    content = RecordDict()
    wire.write_update(content, payload, SPEC)
    limit = 2 * SPEC.size * 4
    update = wire.read_update(content, SPEC, max_bytes=limit)
    from fedkit.replies import Reply

    check = validate(
        [Reply(client=0, round=1, update=update, num_examples=5)],
        round=1,
        d=SPEC.size,
        dtype=torch.float32,
        max_bytes=limit,
    )
    assert check.reasons == {reason: 1}


def test_update_without_spec_or_with_extra_arrays_is_malformed():
    content = RecordDict()
    content[wire.UPDATE] = wire.to_array_record(flat(), wire.UPDATE)
    assert wire.read_update(content, SPEC, max_bytes=10**6) is None
    content = RecordDict()
    wire.write_update(content, flat(), SPEC)
    content[wire.UPDATE] = ArrayRecord(
        numpy_ndarrays=[np.zeros(SPEC.size, np.float32), np.zeros(1, np.float32)]
    )
    assert wire.read_update(content, SPEC, max_bytes=10**6) is None


def test_server_certificate_covers_loopback_names(tmp_path):
    pki = make_server_pki(tmp_path)
    cert = x509.load_pem_x509_certificate(pki.cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }
    ca = x509.load_pem_x509_certificate(pki.ca.read_bytes())
    cert.verify_directly_issued_by(ca)
    assert oct(pki.key.stat().st_mode & 0o777) == "0o600"


def test_node_keys_are_openssh(tmp_path):
    private, public = make_node_key(tmp_path, "n0")
    assert public.read_text().startswith("ecdsa-sha2-nistp384 ")
    assert b"OPENSSH PRIVATE KEY" in private.read_bytes()


def test_settings_defaults_and_strategy():
    s = Settings.from_run_config({"lr": 0.1, "quorum": 2, "clients-per-round": 2})
    assert s.rounds == DEFAULTS["rounds"]
    strategy = build_strategy(s)
    assert (strategy.client.lr, strategy.quorum, strategy.clients_per_round) == (0.1, 2, 2)
    with pytest.raises(ValueError, match="module:attr"):
        build_strategy(Settings.from_run_config({"strategy": "nonsense"}))


def test_deploy_cli_parses_overrides_and_defaults_to_tls_with_auth(tmp_path):
    from experiments.deploy_cli import parse_args, parse_overrides
    from fedkit.flower.local import LocalDeployment, toml_value

    args = parse_args(["local", "--nodes", "2", "-c", "lr=0.1", "-c", 'task="digits"'])
    assert (args.nodes, args.insecure, args.no_auth) == (2, False, False)
    assert parse_overrides(args.config) == {"lr": 0.1, "task": "digits"}
    assert [toml_value(v) for v in (True, 3, 0.5, "a")] == ["true", "3", "0.5", '"a"']
    secure = LocalDeployment(tmp_path / "s", nodes=1)
    assert (secure.insecure, secure.auth) == (False, True)
    secure.pki = make_server_pki(tmp_path / "pki")
    assert {"--enable-supernode-auth", "--ssl-certfile"} <= set(secure.superlink_cmd())
    insecure = LocalDeployment(tmp_path / "i", nodes=1, insecure=True)
    assert insecure.auth is False
    assert "--insecure" in insecure.superlink_cmd()


@pytest.mark.parametrize("with_dp", [False, True])
def test_client_config_travels_unchanged_including_its_dp_sgd_setting(with_dp):
    from fedkit.client import ClientConfig
    from privacy.dpsgd import DPSGD

    dp = DPSGD(max_grad_norm=0.7, noise_multiplier=1.3, batch_size=8) if with_dp else None
    cfg = ClientConfig(epochs=2, lr=0.1, optimizer="adam", betas=(0.8, 0.9), dp_sgd=dp)
    back = wire.client_config_from_json(wire.client_config_to_json(cfg))
    assert back == cfg and type(back.dp_sgd) is type(cfg.dp_sgd)


def test_a_dp_sgd_setting_that_cannot_travel_is_refused():
    from fedkit.client import ClientConfig

    class PlainSetting:  # implements the protocol but is no attrs class
        max_grad_norm, noise_multiplier, batch_size = 1.0, 1.0, 4

        def sample_rate(self, n):
            return min(1.0, 4 / n)

    with pytest.raises(TypeError, match="attrs class"):
        wire.client_config_to_json(ClientConfig(dp_sgd=PlainSetting()))
