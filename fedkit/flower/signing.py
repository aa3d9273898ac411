"""Signed replies: the proof that a reply was written by the node it was asked of.

Flower 1.42's SuperLink authenticates the node making each request, but not who wrote a
reply: a reply's ``src_node_id`` is whatever the pushing node put in it, checked only
against the original message's destination, and the first reply to a message wins. So an
authenticated node could answer a message sent to another node. fedkit closes that gap
itself: a node signs each reply with the private key it authenticates with (node config
``signing-key``: the OpenSSH EC key registered with ``flwr supernode register``), and the
server verifies the signature against the public key the SuperLink holds for the node the
message was sent to (``Grid.get_nodes()``: the key registered for that node id). A reply
without a valid signature is rejected (``bad_signature``) and never aggregated.

The signature (ECDSA, SHA-256) covers :func:`reply_digest`: the id of the message replied
to (so a reply cannot be replayed onto another message or round), the ``fedkit`` and
``metrics`` records and every array of the reply, byte for byte.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

SIGNATURE = "signature"
DOMAIN = b"fedkit-reply/1"


def _records_bytes(content: Any) -> bytes:
    """The reply's records in a canonical byte form (the signature field left out)."""
    parts: list[Any] = []
    for name in sorted(content.config_records):
        record = content.config_records[name]
        items = {k: v for k, v in record.items() if not (name == "fedkit" and k == SIGNATURE)}
        parts.append(["config", name, sorted((k, _plain(v)) for k, v in items.items())])
    for name in sorted(content.metric_records):
        record = content.metric_records[name]
        parts.append(["metric", name, sorted((k, _plain(v)) for k, v in record.items())])
    head = json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()
    h = hashlib.sha256(head)
    for name in sorted(content.array_records):
        for key, array in sorted(content.array_records[name].items()):
            h.update(json.dumps([name, key, array.dtype, list(array.shape)]).encode())
            h.update(bytes(array.data))
    return h.digest()


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def reply_digest(reply_to: str, content: Any) -> bytes:
    """SHA-256 of what a reply's signature covers (module doc)."""
    return hashlib.sha256(DOMAIN + str(reply_to).encode() + _records_bytes(content)).digest()


def load_signing_key(path: str | Path) -> ec.EllipticCurvePrivateKey:
    """A node's private key (OpenSSH or PEM; EC)."""
    data = Path(path).read_bytes()
    try:
        key = serialization.load_ssh_private_key(data, password=None)
    except ValueError:
        key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path}: not an EC private key ({type(key).__name__})")
    return key


def sign(key: ec.EllipticCurvePrivateKey, digest: bytes) -> str:
    """Hex ECDSA signature of ``digest``."""
    return key.sign(digest, ec.ECDSA(hashes.SHA256())).hex()


def public_key(data: bytes) -> ec.EllipticCurvePublicKey | None:
    """A node's public key as the SuperLink stores it (PEM SPKI); ``None`` if it is not an
    EC key (Flower's simulation engine fills random bytes)."""
    try:
        key = serialization.load_pem_public_key(bytes(data))
    except (ValueError, TypeError):
        return None
    return key if isinstance(key, ec.EllipticCurvePublicKey) else None


def verify(key: ec.EllipticCurvePublicKey | None, digest: bytes, signature: Any) -> bool:
    """Whether ``signature`` (hex) is ``key``'s signature of ``digest``."""
    if key is None or not isinstance(signature, str):
        return False
    try:
        key.verify(bytes.fromhex(signature), digest, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True
