"""Flat vectors <-> ArrayRecords with the ParamSpec; certificates and node keys."""

import ipaddress

import numpy as np
import pytest
import torch
from cryptography import x509
from flwr.app import ArrayRecord, RecordDict

from fedkit.core.flat import spec_of
from fedkit.flower import wire
from fedkit.flower.pki import make_node_key, make_server_pki
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
