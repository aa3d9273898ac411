"""What the server asks of a client, as plain data: the ``train`` request and the client
config it carries.

Nothing in a request names code. The client config is a JSON object with exactly the
fields of :class:`fedkit.client.ClientConfig`; its DP-SGD setting, if any, is a record of
one of a closed set of kinds (:data:`DP_KINDS`: ``{"kind": "dpsgd", "max_grad_norm",
"noise_multiplier", "batch_size"}``), decoded into :class:`fedkit.client_dp.DPSGDConfig`.
Anything else — an unknown field or kind, a value of the wrong type or range — raises
:class:`RequestError` naming it, which the ClientApp turns into an error reply the server
counts (``client_error``). A request of a traced run also carries ``traceparent``: the W3C
trace context of the server's ``send`` span (``00-<32 hex>-<16 hex>-<2 hex>``, nothing else;
:mod:`fedkit.run.tracing`), which the ClientApp's span joins.
"""

from __future__ import annotations

import json
import math
from typing import Any

import attrs

from fedkit.client import ClientConfig
from fedkit.client_dp import DPSGDConfig
from fedkit.core.keys import Key
from fedkit.run.tracing import TRACEPARENT_RULE, parse_traceparent

DP_KINDS = ("dpsgd",)
_DP_FIELDS = ("max_grad_norm", "noise_multiplier", "batch_size")
_CLIENT_FIELDS = tuple(f.name for f in attrs.fields(ClientConfig))


class RequestError(ValueError):
    """A request from the server that this client cannot accept as it is."""


def dp_to_record(setting: Any) -> dict[str, Any] | None:
    """A DP-SGD setting (any :class:`fedkit.protocols.DPSGDSetting`) as a plain record."""
    if setting is None:
        return None
    return {
        "kind": "dpsgd",
        "max_grad_norm": float(setting.max_grad_norm),
        "noise_multiplier": float(setting.noise_multiplier),
        "batch_size": int(setting.batch_size),
    }


def dp_from_record(record: Any) -> DPSGDConfig | None:
    """The DP-SGD setting a record describes (``None`` for none)."""
    if record is None:
        return None
    if not isinstance(record, dict):
        raise RequestError(f"dp_sgd must be a record or null, got {type(record).__name__}")
    kind = record.get("kind")
    if kind not in DP_KINDS:
        raise RequestError(f"dp_sgd kind {kind!r} is not one of {DP_KINDS}")
    unknown = sorted(set(record) - {"kind", *_DP_FIELDS})
    missing = [f for f in _DP_FIELDS if f not in record]
    if unknown or missing:
        raise RequestError(f"dp_sgd record: unknown fields {unknown}, missing fields {missing}")
    try:
        return DPSGDConfig(
            max_grad_norm=_number(record["max_grad_norm"], "dp_sgd.max_grad_norm"),
            noise_multiplier=_number(record["noise_multiplier"], "dp_sgd.noise_multiplier"),
            batch_size=_integer(record["batch_size"], "dp_sgd.batch_size"),
        )
    except (TypeError, ValueError) as exc:
        raise RequestError(f"dp_sgd record: {exc}") from None


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RequestError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _integer(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"{name} must be an integer, got {value!r}")
    return value


def client_config_to_json(cfg: ClientConfig) -> str:
    """``cfg`` as the JSON of a ``train`` request (module doc)."""
    fields = attrs.asdict(cfg, recurse=False)
    fields["betas"] = list(fields["betas"])
    fields["dp_sgd"] = dp_to_record(cfg.dp_sgd)
    return json.dumps(fields)


def client_config_from_json(text: str) -> ClientConfig:
    """The client config of a request; :class:`RequestError` for anything but the fields
    of :class:`~fedkit.client.ClientConfig` with values it accepts."""
    try:
        fields = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise RequestError(f"client config is not JSON: {exc}") from None
    if not isinstance(fields, dict):
        raise RequestError(f"client config must be a JSON object, got {type(fields).__name__}")
    unknown = sorted(set(fields) - set(_CLIENT_FIELDS))
    if unknown:
        raise RequestError(f"client config has unknown fields {unknown}")
    fields["dp_sgd"] = dp_from_record(fields.get("dp_sgd"))
    try:
        return ClientConfig(**fields)
    except (TypeError, ValueError) as exc:
        raise RequestError(f"client config rejected: {exc}") from None


@attrs.frozen(eq=False)
class TrainRequest:
    """One ``train`` request: round, the client id the server's registry gives this node,
    its work units, the key the server proposes, the client config and the server's trace
    context (``traceparent``; ``None`` when the run is not traced)."""

    round: int
    client: int
    work: int
    key: Key
    config: ClientConfig
    traceparent: str | None = None


def request_fields(
    round: int,
    client: int,
    work: int,
    key: Key,
    cfg: ClientConfig,
    traceparent: str | None = None,
) -> dict[str, Any]:
    """The request's fields for the message's ConfigRecord (``traceparent`` only when
    given)."""
    fields: dict[str, Any] = {
        "round": round,
        "client": client,
        "work": work,
        "key": key.to_hex(),
        "client-config": client_config_to_json(cfg),
    }
    if traceparent is not None:
        fields["traceparent"] = check_traceparent(traceparent)
    return fields


def check_traceparent(value: Any) -> str:
    """``value`` if it is a W3C ``traceparent`` as fedkit sends it, else
    :class:`RequestError` naming the value and the rule."""
    try:
        parse_traceparent(value)
    except ValueError:
        raise RequestError(
            f"train request field 'traceparent' must be {TRACEPARENT_RULE}, got {value!r}"
        ) from None
    return value


def parse_request(book: Any) -> TrainRequest:
    """A :class:`TrainRequest` from the message's ConfigRecord; :class:`RequestError` names
    the first field that is missing or wrong."""
    try:
        r, c, w = book["round"], book["client"], book["work"]
        key_text, cfg_text = book["key"], book["client-config"]
    except KeyError as exc:
        raise RequestError(f"train request without field {exc}") from None
    for name, value in (("round", r), ("client", c), ("work", w)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise RequestError(f"train request field {name!r} must be an int >= 0, got {value!r}")
    try:
        key = Key.from_hex(str(key_text))
    except ValueError:
        raise RequestError(f"train request key {key_text!r} is not a 128-bit hex key") from None
    parent = book.get("traceparent")
    parent = None if parent is None else check_traceparent(parent)
    return TrainRequest(r, c, w, key, client_config_from_json(str(cfg_text)), parent)
