"""Who is who in a deployment: the server's registry of node id → client id.

A reply's client is the node that sent it, as Flower authenticated it, never what the
payload says. With SuperNode authentication the SuperLink binds each node id to the
public key registered for it (``flwr supernode register``), so the node id *is* the
proven identity; the registry maps it to the client id the server assigned. Assignments
are kept in a server-side JSON file, so a restarted ServerApp (or SuperLink, with its
database) gives every node the client it had.

An operator can provision the file before the run (``fedkit deploy local`` maps the node
id each key registered as to client ``i`` of node ``i``); any live node not in it gets the
lowest free client id, in ascending node-id order, when it first shows up. Without node
authentication a node id only names a connection: a restarted SuperNode is a new node.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

FORMAT = "fedkit.registry/1"


class RegistryError(ValueError):
    """The registry file is malformed or assigns one client to two nodes."""


def _check(nodes: Mapping[int, int]) -> None:
    seen: dict[int, int] = {}
    for node, client in nodes.items():
        if client in seen:
            raise RegistryError(f"client {client} is assigned to nodes {seen[client]} and {node}")
        seen[client] = node


@attrs.define(eq=False)
class NodeRegistry:
    """``node id → client id`` (see the module doc); ``path`` is where it is kept
    (``None``: in memory only)."""

    path: Path | None = attrs.field(default=None, converter=attrs.converters.optional(Path))
    nodes: dict[int, int] = attrs.field(factory=dict)

    def __attrs_post_init__(self) -> None:
        _check(self.nodes)

    @classmethod
    def load(cls, path: str | Path | None) -> NodeRegistry:
        """The registry kept in ``path`` (empty if the file does not exist yet)."""
        if path is None or not Path(path).exists():
            return cls(path)
        try:
            doc = json.loads(Path(path).read_text())
            if doc.get("format") != FORMAT:
                raise RegistryError(f"{path}: format {doc.get('format')!r}, expected {FORMAT}")
            nodes = {int(n): int(e["client"]) for n, e in doc["nodes"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise RegistryError(f"{path} is not a node registry: {exc}") from None
        return cls(path, nodes)

    def save(self) -> None:
        if self.path is None:
            return
        doc = {"format": FORMAT, "nodes": {str(n): {"client": c} for n, c in self.nodes.items()}}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(doc, indent=1, sort_keys=True))
        os.replace(tmp, self.path)

    def client_of(self, node: int) -> int | None:
        return self.nodes.get(int(node))

    def node_of(self, client: int) -> int | None:
        return next((n for n, c in self.nodes.items() if c == client), None)

    def assign(self, live: Iterable[int], num_clients: int) -> list[int]:
        """Give each live node without a client the lowest free client id below
        ``num_clients`` (ascending node ids); saves when anything changed. Returns the
        nodes newly assigned."""
        free = sorted(set(range(num_clients)) - set(self.nodes.values()))
        added = []
        for node in sorted(int(n) for n in live):
            if node in self.nodes or not free:
                continue
            self.nodes[node] = free.pop(0)
            added.append(node)
        if added:
            self.save()
        return added

    def provision(self, nodes: Mapping[int, int]) -> None:
        """Set assignments chosen by the operator (replacing those of the same nodes)."""
        merged = {**self.nodes, **{int(n): int(c) for n, c in nodes.items()}}
        _check(merged)
        self.nodes = merged
        self.save()

    def describe(self) -> dict[str, Any]:
        return {"path": None if self.path is None else str(self.path), "nodes": len(self.nodes)}
