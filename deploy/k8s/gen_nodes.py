"""Write the per-node manifests of ``deploy/k8s`` for N SuperNodes.

    python deploy/k8s/gen_nodes.py 3      # rewrites supernodes.yaml and executor/node-*.yaml

Node ``i`` is: a SuperNode Deployment (one replica: one node key is one node), the SuperExec
that runs its ClientApp tasks as pods (Flower's Kubernetes executor, ``executor/node-i.yaml``),
a Service for its Runtime API and metrics, a small volume it shares with its ClientApp pods
(signing key, metrics report), and the NetworkPolicies that confine them. With another N, also update
``kustomization.yaml`` (the node Secrets and executor ConfigMaps), ``register-job.yaml``
(``--nodes``) and rerun ``make-secrets.sh``. ``tests/deploy/test_manifests.py`` checks the
committed files are what this script writes.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
IMAGE = "fedkit:0.1.0"

NODE = """\
# ---------------------------------------------------------------- node {i}
# SuperNode {i}: dials the Fleet API with its own key (node auth), serves its Runtime API on
# 9094 (TLS: fedkit-node-runtime-tls) for its SuperExec and ClientApp pods. --isolation
# process: ClientApps run as pods of their own (fedkit-superexec-node-{i}). The node's
# volume (fedkit-node-{i}-data) is shared with those pods: the init container copies the
# signing key onto it (Flower's executor refuses Secret volumes in task pods; see
# docs/kubernetes.md) and the ClientApps append their metrics lines to it, which the
# `metrics` sidecar serves on 9101 (deploy/node_metrics_server.py).
apiVersion: apps/v1
kind: Deployment
metadata:
  name: fedkit-supernode-{i}
  namespace: fedkit
  labels: &labels
    app.kubernetes.io/name: fedkit
    app.kubernetes.io/part-of: fedkit
    app.kubernetes.io/component: supernode
    fedkit.dev/node: "{i}"
spec:
  replicas: 1  # one key, one node: never two pods with the same key
  strategy: {{type: Recreate}}
  selector:
    matchLabels: *labels
  template:
    metadata:
      labels: *labels
    spec:
      serviceAccountName: fedkit-daemon
      automountServiceAccountToken: false
      securityContext:
        runAsNonRoot: true
        runAsUser: 10001
        runAsGroup: 10001
        fsGroup: 10001
        seccompProfile: {{type: RuntimeDefault}}
      initContainers:
        - name: signing-key
          image: {image}
          imagePullPolicy: IfNotPresent
          command:
            - sh
            - -c
            - install -D -m 0440 /etc/fedkit/node/node.key /var/lib/fedkit/node/keys/node.key && install -d -m 0770 /var/lib/fedkit/node/metrics
          resources:
            requests: {{cpu: 10m, memory: 16Mi}}
            limits: {{cpu: 100m, memory: 64Mi}}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            runAsNonRoot: true
            capabilities: {{drop: [ALL]}}
          volumeMounts:
            - {{name: node, mountPath: /etc/fedkit/node, readOnly: true}}
            - {{name: data, mountPath: /var/lib/fedkit/node}}
      containers:
        - name: supernode
          image: {image}
          imagePullPolicy: IfNotPresent
          args:
            - supernode
            - --superlink=fedkit-fleet.fedkit.svc:8000
            - --root-certificates=/etc/fedkit/superlink-ca/ca.pem
            - --auth-supernode-private-key=/etc/fedkit/node/node.key
            - --isolation=process
            - --host=0.0.0.0
            - --port=9094
            - --ssl-certfile=/etc/fedkit/runtime-tls/server.pem
            - --ssl-keyfile=/etc/fedkit/runtime-tls/server.key
            - --ssl-ca-certfile=/etc/fedkit/runtime-tls/ca.pem
            - --superexec-auth-secret-file=/etc/fedkit/node/superexec.secret
            - --node-config=partition-id={i} signing-key="/var/lib/fedkit/node/keys/node.key"
            - --max-retries=1000
            - --max-wait-time=600
          env:
            - {{name: FLWR_HOME, value: /tmp/flwr}}
          ports:
            - {{name: runtime, containerPort: 9094, protocol: TCP}}
          readinessProbe:
            httpGet: {{path: /health, port: runtime, scheme: HTTPS}}
            periodSeconds: 5
            timeoutSeconds: 3
          livenessProbe:
            httpGet: {{path: /health, port: runtime, scheme: HTTPS}}
            initialDelaySeconds: 10
            periodSeconds: 10
            timeoutSeconds: 5
            failureThreshold: 6
          resources:
            requests: {{cpu: 100m, memory: 256Mi}}
            limits: {{cpu: "1", memory: 1Gi}}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            runAsNonRoot: true
            capabilities: {{drop: [ALL]}}
          volumeMounts:
            - {{name: node, mountPath: /etc/fedkit/node, readOnly: true}}
            - {{name: superlink-ca, mountPath: /etc/fedkit/superlink-ca, readOnly: true}}
            - {{name: runtime-tls, mountPath: /etc/fedkit/runtime-tls, readOnly: true}}
            - {{name: tmp, mountPath: /tmp}}
        - name: metrics
          image: {image}
          imagePullPolicy: IfNotPresent
          command:
            - python
            - /app/deploy/node_metrics_server.py
            - --file=/var/lib/fedkit/node/metrics/report.jsonl
            - --host=0.0.0.0
            - --port=9101
          ports:
            - {{name: metrics, containerPort: 9101, protocol: TCP}}
          readinessProbe:
            httpGet: {{path: /metrics, port: metrics}}
            periodSeconds: 10
          livenessProbe:
            httpGet: {{path: /metrics, port: metrics}}
            periodSeconds: 20
            failureThreshold: 3
          resources:
            requests: {{cpu: 10m, memory: 64Mi}}
            limits: {{cpu: 200m, memory: 128Mi}}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            runAsNonRoot: true
            capabilities: {{drop: [ALL]}}
          volumeMounts:
            - {{name: data, mountPath: /var/lib/fedkit/node}}
      volumes:
        - name: node
          secret: {{secretName: fedkit-node-{i}, defaultMode: 0440}}
        - name: superlink-ca
          secret: {{secretName: fedkit-superlink-ca, defaultMode: 0444}}
        - name: runtime-tls
          secret: {{secretName: fedkit-node-runtime-tls, defaultMode: 0440}}
        - name: data
          persistentVolumeClaim: {{claimName: fedkit-node-{i}-data}}
        - name: tmp
          emptyDir: {{sizeLimit: 1Gi}}
---
# SuperExec {i}: acquires node {i}'s ClientApp tasks and runs each as a pod.
apiVersion: apps/v1
kind: Deployment
metadata:
  name: fedkit-superexec-node-{i}
  namespace: fedkit
  labels: &labels
    app.kubernetes.io/name: fedkit
    app.kubernetes.io/part-of: fedkit
    app.kubernetes.io/component: superexec
    fedkit.dev/serves: clientapp
    fedkit.dev/node: "{i}"
spec:
  replicas: 1  # one SuperExec per Runtime API
  strategy: {{type: Recreate}}
  selector:
    matchLabels: *labels
  template:
    metadata:
      labels: *labels
    spec:
      serviceAccountName: fedkit-superexec
      automountServiceAccountToken: true  # the executor talks to the Kubernetes API
      securityContext:
        runAsNonRoot: true
        runAsUser: 10001
        runAsGroup: 10001
        seccompProfile: {{type: RuntimeDefault}}
      containers:
        - name: superexec
          image: {image}
          imagePullPolicy: IfNotPresent
          args:
            - superexec
            - --runtime-api-address=fedkit-supernode-{i}.fedkit.svc:9094
            - --root-certificates=/etc/fedkit/runtime-tls/ca.pem
            - --executor=kubernetes
            - --executor-config=/etc/fedkit/executor/executor.yaml
            - --superexec-auth-secret-file=/etc/fedkit/node/superexec.secret
            - --health-server-address=0.0.0.0:8081
          env:
            - {{name: FLWR_HOME, value: /tmp/flwr}}
          ports:
            - {{name: health, containerPort: 8081, protocol: TCP}}
          readinessProbe:
            grpc: {{port: 8081}}
            periodSeconds: 5
          livenessProbe:
            grpc: {{port: 8081}}
            periodSeconds: 10
            failureThreshold: 6
          resources:
            requests: {{cpu: 100m, memory: 256Mi}}
            limits: {{cpu: 500m, memory: 512Mi}}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            runAsNonRoot: true
            capabilities: {{drop: [ALL]}}
          volumeMounts:
            - {{name: executor, mountPath: /etc/fedkit/executor, readOnly: true}}
            - {{name: node, mountPath: /etc/fedkit/node, readOnly: true}}
            - {{name: runtime-ca, mountPath: /etc/fedkit/runtime-tls, readOnly: true}}
            - {{name: tmp, mountPath: /tmp}}
      volumes:
        - name: executor
          configMap: {{name: fedkit-executor-node-{i}}}
        - name: node
          secret:
            secretName: fedkit-node-{i}
            defaultMode: 0440
            items: [{{key: superexec.secret, path: superexec.secret}}]
        - name: runtime-ca
          secret:
            secretName: fedkit-node-runtime-tls
            defaultMode: 0444
            items: [{{key: ca.pem, path: ca.pem}}]
        - name: tmp
          emptyDir: {{sizeLimit: 256Mi}}
---
apiVersion: v1
kind: Service
metadata:
  name: fedkit-supernode-{i}
  namespace: fedkit
  labels: {{app.kubernetes.io/part-of: fedkit, app.kubernetes.io/component: supernode, fedkit.dev/node: "{i}"}}
spec:
  selector: {{app.kubernetes.io/name: fedkit, app.kubernetes.io/component: supernode, fedkit.dev/node: "{i}"}}
  ports:
    - {{name: runtime, port: 9094, targetPort: runtime}}
    - {{name: metrics, port: 9101, targetPort: metrics}}
---
# Node {i}'s volume, shared with its ClientApp pods: keys/node.key (node config
# signing-key) and metrics/report.jsonl (FEDKIT_NODE_METRICS_FILE).
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: fedkit-node-{i}-data
  namespace: fedkit
  labels: {{app.kubernetes.io/part-of: fedkit, fedkit.dev/node: "{i}"}}
spec:
  accessModes: [ReadWriteOnce]
  resources:
    requests: {{storage: 16Mi}}
---
# Node {i}'s Runtime API: reached only by its SuperExec and its ClientApp pods (and
# Prometheus on the metrics port). SuperNode {i} may dial only the SuperLink (and DNS).
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: fedkit-supernode-{i}
  namespace: fedkit
  labels: {{app.kubernetes.io/part-of: fedkit}}
spec:
  podSelector:
    matchLabels: {{app.kubernetes.io/component: supernode, fedkit.dev/node: "{i}"}}
  policyTypes: [Ingress, Egress]
  ingress:
    - from:
        - podSelector:
            matchLabels: {{app.kubernetes.io/component: superexec, fedkit.dev/node: "{i}"}}
        - podSelector:
            matchLabels: {{fedkit.dev/role: clientapp, fedkit.dev/node: "{i}"}}
      ports: [{{port: 9094, protocol: TCP}}]
    - from:
        - namespaceSelector:
            matchLabels: {{kubernetes.io/metadata.name: monitoring}}
          podSelector:
            matchLabels: {{app.kubernetes.io/name: prometheus}}
      ports: [{{port: 9101, protocol: TCP}}]
  egress:
    - to:
        - podSelector:
            matchLabels: {{app.kubernetes.io/component: superlink}}
      ports: [{{port: 8000, protocol: TCP}}]
---
# Node {i}'s ClientApp pods: dial only their own SuperNode's Runtime API (and DNS).
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: fedkit-clientapp-{i}
  namespace: fedkit
  labels: {{app.kubernetes.io/part-of: fedkit}}
spec:
  podSelector:
    matchLabels: {{fedkit.dev/role: clientapp, fedkit.dev/node: "{i}"}}
  policyTypes: [Ingress, Egress]
  ingress: []
  egress:
    - to:
        - podSelector:
            matchLabels: {{app.kubernetes.io/component: supernode, fedkit.dev/node: "{i}"}}
      ports: [{{port: 9094, protocol: TCP}}]
---
# SuperExec {i}: dials its SuperNode's Runtime API and the Kubernetes API server.
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: fedkit-superexec-node-{i}
  namespace: fedkit
  labels: {{app.kubernetes.io/part-of: fedkit}}
spec:
  podSelector:
    matchLabels: {{app.kubernetes.io/component: superexec, fedkit.dev/node: "{i}"}}
  policyTypes: [Ingress, Egress]
  ingress: []
  egress:
    - to:
        - podSelector:
            matchLabels: {{app.kubernetes.io/component: supernode, fedkit.dev/node: "{i}"}}
      ports: [{{port: 9094, protocol: TCP}}]
    - ports: [{{port: 443, protocol: TCP}}, {{port: 6443, protocol: TCP}}]  # API server
"""

EXECUTOR = """\
# Flower Kubernetes executor config for node {i}'s ClientApp tasks (flower-superexec
# --executor-config; keys: flwr/supercore/superexec/executor/factory.py). Each task pod runs
# `flwr-clientapp` from this image, signs its reply with the node key on fedkit-node-{i}-data
# (written by SuperNode {i}'s init container) and appends its metrics line there (served by
# SuperNode {i}'s `metrics` sidecar). The image must match kustomization.yaml.
namespace: fedkit
image: {image}
image-pull-policy: IfNotPresent
service-account-name: fedkit-task
active-pod-budget: 2
labels:
  app.kubernetes.io/part-of: fedkit
  fedkit.dev/role: clientapp
  fedkit.dev/node: "{i}"
env:
  - {{name: FLWR_HOME, value: /tmp/flwr}}
  - {{name: HOME, value: /tmp}}
  - {{name: FEDKIT_NODE_METRICS_FILE, value: /var/lib/fedkit/node/metrics/report.jsonl}}
resources:
  requests: {{cpu: "1", memory: 1Gi}}
  limits: {{cpu: "2", memory: 3Gi}}
pod-security-context:
  runAsNonRoot: true
  runAsUser: 10001
  runAsGroup: 10001
  fsGroup: 10001
  seccompProfile: {{type: RuntimeDefault}}
container-security-context:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  runAsNonRoot: true
  capabilities: {{drop: [ALL]}}
volumes:
  - name: data
    persistentVolumeClaim: {{claimName: fedkit-node-{i}-data}}
  - name: tmp
    emptyDir: {{sizeLimit: 2Gi}}
volume-mounts:
  - {{name: data, mountPath: /var/lib/fedkit/node}}
  - {{name: tmp, mountPath: /tmp}}
# The node's volume is ReadWriteOnce: run next to SuperNode {i}.
affinity:
  podAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      - labelSelector:
          matchLabels: {{app.kubernetes.io/component: supernode, fedkit.dev/node: "{i}"}}
        topologyKey: kubernetes.io/hostname
"""


def supernodes(n: int) -> str:
    """``supernodes.yaml`` for ``n`` nodes."""
    head = "# Generated by deploy/k8s/gen_nodes.py: edit the script, not this file.\n"
    return head + "---\n".join(NODE.format(i=i, image=IMAGE) for i in range(n))


def executor(i: int) -> str:
    """``executor/node-{i}.yaml``."""
    return EXECUTOR.format(i=i, image=IMAGE)


def write(n: int, root: Path = HERE) -> list[Path]:
    """Write every generated file under ``root``; the paths written."""
    paths = [root / "supernodes.yaml"]
    paths[0].write_text(supernodes(n))
    (root / "executor").mkdir(exist_ok=True)
    for i in range(n):
        path = root / "executor" / f"node-{i}.yaml"
        path.write_text(executor(i))
        paths.append(path)
    return paths


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    for p in write(count):
        print(p)
