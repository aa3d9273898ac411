"""A Flower federation in this process, on Flower's own in-memory LinkState and
``InMemoryGrid`` (what Flower's simulation engine runs on): nodes are registered with real
EC public keys, the ServerApp side is fedkit's transport, and each node is a thread that
pulls its messages from the LinkState and stores replies there, as the simulation engine's
workers do. A node may misbehave as a real authenticated node could: the LinkState accepts
a reply from anyone, as long as its ``src_node_id`` names the message's destination."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from uuid import uuid4

import attrs
from cryptography.hazmat.primitives import serialization
from flwr.app import Context, Message, RecordDict
from flwr.app.user_config import UserConfig
from flwr.common.constant import NOOP_ACCOUNT_NAME, NOOP_FLWR_AID, SUPERLINK_NODE_ID
from flwr.proto.task_pb2 import Task
from flwr.server.superlink.linkstate import LinkStateFactory
from flwr.server.superlink.linkstate.in_memory_linkstate import RunRecord
from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME, NOOP_FEDERATION_ID
from flwr.supercore.object_store import ObjectStoreFactory
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity
from flwr.superlink.federation import NoOpFederationManager
from flwr.superlink.grid import InMemoryGrid

from fedkit.flower.pki import make_node_key
from fedkit.flower.registry import NodeRegistry
from fedkit.flower.signing import load_signing_key

HEARTBEAT_INF = 1e9

# A node's behaviour: (the message for this node, the state, all node ids) -> replies to store
Behaviour = Callable[[Message, "Federation"], list[Message]]


def stamp(reply: Message) -> Message:
    reply.metadata.__dict__["_message_id"] = str(uuid4())
    return reply


@attrs.define(eq=False)
class Federation:
    """Nodes ``0..n-1`` with keys in ``directory``; ``behaviours[i]`` answers node i's
    messages (see :data:`Behaviour`)."""

    directory: Path
    n: int
    state: object = None
    grid: InMemoryGrid | None = None
    node_ids: list[int] = attrs.field(factory=list)
    keys: list[Path] = attrs.field(factory=list)
    stop: threading.Event = attrs.field(factory=threading.Event)
    threads: list[threading.Thread] = attrs.field(factory=list)
    saved_identity: tuple = (None, None, None)
    busy: threading.Lock = attrs.field(factory=threading.Lock)

    def start(self, behaviours: list[Behaviour | None]) -> Federation:
        factory = LinkStateFactory(
            FLWR_IN_MEMORY_DB_NAME, NoOpFederationManager(), ObjectStoreFactory()
        )
        self.state = factory.state()
        for i in range(self.n):
            private, _ = make_node_key(self.directory, f"node{i}")
            pem = (
                load_signing_key(private)
                .public_key()
                .public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
            )
            node_id = self.state.create_node(
                NOOP_FLWR_AID, NOOP_ACCOUNT_NAME, pem, heartbeat_interval=HEARTBEAT_INF
            )
            self.state.acknowledge_node_heartbeat(node_id=node_id, heartbeat_interval=HEARTBEAT_INF)
            self.node_ids.append(node_id)
            self.keys.append(private)
        run = Run.create_empty(run_id=1)
        run.primary_task_id = 7
        run.federation_id = NOOP_FEDERATION_ID
        self.state.run_ids[run.run_id] = RunRecord(run=run)
        self.state.task_store[7] = Task(task_id=7, run_id=run.run_id)
        # Flower's Message reads the process's task identity (the ServerApp's, here)
        self.saved_identity = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
        TaskIdentity.task_id, TaskIdentity.run_id = 7, run.run_id
        TaskIdentity.node_id = SUPERLINK_NODE_ID
        self.grid = InMemoryGrid(state_factory=factory)
        self.grid.set_run(run)
        for i, behave in enumerate(behaviours):
            if behave is None:  # a node that never pulls its messages
                continue
            t = threading.Thread(target=self._serve, args=(i, behave), daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def context(self, i: int, **node_config) -> Context:
        config = {"partition-id": i, "signing-key": str(self.keys[i]), **node_config}
        return Context(
            run_id=1,
            node_id=self.node_ids[i],
            node_config=UserConfig(config),
            state=RecordDict(),
            run_config=UserConfig(),
        )

    def registry(self) -> NodeRegistry:
        """Node ``i`` is client ``i`` (what ``fedkit deploy local`` provisions)."""
        return NodeRegistry(nodes={n: i for i, n in enumerate(self.node_ids)})

    def pending(self, i: int) -> list[Message]:
        """Messages for node ``i`` not yet delivered (any node may read them, here)."""
        return self.state.get_message_ins(node_id=self.node_ids[i], limit=None)

    def store(self, reply: Message) -> bool:
        return self.state.store_message_res(stamp(reply)) is not None

    def _serve(self, i: int, behave: Behaviour) -> None:
        while not self.stop.is_set():
            for message in self.state.get_message_ins(node_id=self.node_ids[i], limit=1):
                with self.busy:  # nodes share this process's task objects: one at a time
                    replies = behave(message, self)
                for reply in replies:
                    self.store(reply)
            time.sleep(0.01)

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=5)
        task, run, node = self.saved_identity
        TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = task, run, node
