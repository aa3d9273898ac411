"""deploy/k8s and deploy/compose.yaml, validated offline: every Kubernetes object against the
API schemas ``kubernetes-validate`` ships (strict), the task pods Flower's Kubernetes
executor would build from our executor configs included; the Secrets and ConfigMaps
kustomize generates rendered from a PKI made by ``deploy/pki.py``; then fedkit's own rules
(references, probes, non-root, NetworkPolicy selectors, images, flags Flower's parsers
accept, certificate names). Nothing here talks to a cluster."""

from __future__ import annotations

import base64
import importlib.util
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from cryptography import x509

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
VERSIONS = ("1.30.0", "1.37.0")  # oldest supported here, newest schema shipped
NAMESPACE = "fedkit"
NODES = 3
WORKLOADS = ("Deployment", "StatefulSet", "Job")


def load_module(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_yaml_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What ``make-secrets.sh`` writes into deploy/k8s/secrets, made in a temp directory."""
    out = tmp_path_factory.mktemp("k8s") / "secrets"
    load_module(DEPLOY / "pki.py").make(out, NODES, "k8s", NAMESPACE, days=2)
    return out


@pytest.fixture(scope="module")
def kustomization() -> dict:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def generated(kustomization: dict, pki: Path) -> list[dict]:
    """The Secrets and ConfigMaps of the kustomization's generators (``key=path`` files;
    ``secrets/...`` read from ``pki``)."""
    out = []
    for kind, section in (("Secret", "secretGenerator"), ("ConfigMap", "configMapGenerator")):
        for gen in kustomization.get(section, []):
            data = {}
            for entry in gen["files"]:
                key, _, rel = entry.partition("=")
                path = (
                    pki / rel.removeprefix("secrets/") if rel.startswith("secrets/") else K8S / rel
                )
                assert path.is_file(), f"{gen['name']}: {rel} is not written/committed"
                raw = path.read_bytes()
                data[key] = base64.b64encode(raw).decode() if kind == "Secret" else raw.decode()
            labels = kustomization.get("generatorOptions", {}).get("labels", {})
            meta = {"name": gen["name"], "namespace": NAMESPACE, "labels": labels}
            out.append({"apiVersion": "v1", "kind": kind, "metadata": meta, "data": data})
    return out


@pytest.fixture(scope="module")
def objects(kustomization: dict, pki: Path) -> list[dict]:
    """Every object ``kubectl apply -k deploy/k8s`` would create (images as given)."""
    docs = [d for f in kustomization["resources"] for d in read_yaml_docs(K8S / f)]
    return docs + generated(kustomization, pki)


def of_kind(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


# ---- Flower's Kubernetes executor: the task pods it would create -----------------------
EXECUTORS = sorted((K8S / "executor").glob("*.yaml"))


def task_pod(config_path: Path, task_type: str) -> dict:
    """The pod Flower's executor builds for one task from ``config_path`` (its own code)."""
    from flwr.supercore.constant import TaskType
    from flwr.supercore.superexec.executor import kubernetes_executor as kx
    from flwr.supercore.superexec.executor.factory import _kubernetes_executor_config_from_mapping
    from flwr.supercore.superexec.executor.types import ExecutionSpec

    config = _kubernetes_executor_config_from_mapping(yaml.safe_load(config_path.read_text()))
    spec = ExecutionSpec(
        task_type=TaskType(task_type),
        runtime_api_address="fedkit-runtime.fedkit.svc:8000",
        token="t0ken",
        insecure=False,
        root_certificates_path=None,
        runtime_dependency_install=False,
        parent_pid=None,
        suppress_output=False,
        task_id=7,
    )
    return kx._build_taskexecutor_pod(spec, config, "-----BEGIN CERTIFICATE-----", "abc123")


@pytest.fixture(scope="module")
def task_pods() -> list[dict]:
    pods = []
    for path in EXECUTORS:
        kind = "flwr-serverapp" if path.stem == "serverapp" else "flwr-clientapp"
        pods.append(task_pod(path, kind))
    return pods


def pod_specs(objects: list[dict], task_pods: list[dict]) -> Iterator[tuple[str, dict, dict]]:
    """(name, pod labels, pod spec) of every workload template and task pod."""
    for o in objects:
        if o["kind"] in WORKLOADS:
            t, name = o["spec"]["template"], o["metadata"]["name"]
            claims = [  # a StatefulSet's claim templates are volumes of its pods
                {
                    "name": c["metadata"]["name"],
                    "persistentVolumeClaim": {"claimName": f"{c['metadata']['name']}-{name}-0"},
                }
                for c in o["spec"].get("volumeClaimTemplates", [])
            ]
            spec = {**t["spec"], "volumes": t["spec"].get("volumes", []) + claims}
            yield name, t["metadata"]["labels"], spec
    for p in task_pods:
        yield p["metadata"]["name"], p["metadata"]["labels"], p["spec"]


# ---- schemas ----------------------------------------------------------------------------
@pytest.mark.parametrize("version", VERSIONS)
def test_every_object_validates_against_the_api_schema(
    objects: list[dict], task_pods: list[dict], version: str
) -> None:
    assert len(objects) > 30
    for obj in [*objects, *task_pods]:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} @ {version}: {exc.message}")


def test_validator_catches_a_bad_manifest(objects: list[dict]) -> None:
    bad = yaml.safe_load(yaml.safe_dump(of_kind(objects, "StatefulSet")["fedkit-superlink"]))
    bad["spec"]["template"]["spec"]["containers"][0]["securityContex"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, VERSIONS[-1], strict=True)


def test_objects_live_in_the_fedkit_namespace(objects: list[dict], task_pods: list[dict]) -> None:
    for o in [*objects, *task_pods]:
        if o["kind"] != "Namespace":
            assert o["metadata"].get("namespace") == NAMESPACE, o["metadata"]["name"]
    assert NAMESPACE in of_kind(objects, "Namespace")


# ---- kustomization and generated files --------------------------------------------------
def test_kustomization_lists_every_manifest(kustomization: dict) -> None:
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == on_disk
    generated_from = {
        e.partition("=")[2]
        for section in ("secretGenerator", "configMapGenerator")
        for g in kustomization[section]
        for e in g["files"]
    }
    assert {f"executor/{p.name}" for p in EXECUTORS} <= generated_from


def test_node_manifests_are_what_the_generator_writes(tmp_path: Path) -> None:
    gen = load_module(K8S / "gen_nodes.py")
    for written in gen.write(NODES, tmp_path):
        committed = K8S / written.relative_to(tmp_path)
        assert committed.read_text() == written.read_text(), f"rerun gen_nodes.py {NODES}"


# ---- references -------------------------------------------------------------------------
def pvc_names(objects: list[dict]) -> set[str]:
    names = set(of_kind(objects, "PersistentVolumeClaim"))
    for name, sts in of_kind(objects, "StatefulSet").items():
        for template in sts["spec"].get("volumeClaimTemplates", []):
            names |= {
                f"{template['metadata']['name']}-{name}-{i}" for i in range(sts["spec"]["replicas"])
            }
    return names


def test_every_reference_resolves(objects: list[dict], task_pods: list[dict]) -> None:
    secrets, config_maps = of_kind(objects, "Secret"), of_kind(objects, "ConfigMap")
    accounts, pvcs = set(of_kind(objects, "ServiceAccount")), pvc_names(objects)
    for name, _, spec in pod_specs(objects, task_pods):
        assert spec.get("serviceAccountName", "default") in accounts | {"default"}, name
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for v in volumes.values():
            # a task pod's own credential Secret (<pod>-appio) is made by the executor
            if "secret" in v and not v["secret"]["secretName"].endswith("-appio"):
                s = secrets.get(v["secret"]["secretName"])
                assert s is not None, f"{name}: no Secret {v['secret']['secretName']}"
                for item in v["secret"].get("items", []):
                    assert item["key"] in s["data"], f"{name}: {item['key']} not in Secret"
            if "configMap" in v:
                assert v["configMap"]["name"] in config_maps, f"{name}: no ConfigMap {v}"
            if "persistentVolumeClaim" in v:
                assert v["persistentVolumeClaim"]["claimName"] in pvcs, f"{name}: {v}"
        for c in spec["containers"] + spec.get("initContainers", []):
            for m in c.get("volumeMounts", []):
                assert m["name"] in volumes, f"{name}/{c['name']}: no volume {m['name']}"
    for rb in of_kind(objects, "RoleBinding").values():
        assert rb["roleRef"]["name"] in of_kind(objects, "Role")
        for s in rb["subjects"]:
            assert s["name"] in accounts


def mounted_files(spec: dict, container: dict, objects: list[dict]) -> dict[str, set[str]]:
    """mountPath → the file names a Secret/ConfigMap volume puts there."""
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    sources = {**of_kind(objects, "Secret"), **of_kind(objects, "ConfigMap")}
    out = {}
    for m in container.get("volumeMounts", []):
        v = volumes[m["name"]]
        src = v.get("secret", {}).get("secretName") or v.get("configMap", {}).get("name")
        if src in sources:
            items = (v.get("secret") or v.get("configMap")).get("items")
            out[m["mountPath"]] = {i["path"] for i in items} if items else set(sources[src]["data"])
    return out


def test_every_file_a_container_names_is_mounted(objects: list[dict]) -> None:
    """Paths under /etc/fedkit in args and commands are keys of the mounted Secret/ConfigMap."""
    seen = 0
    for name, _, spec in pod_specs(objects, []):
        for c in spec["containers"] + spec.get("initContainers", []):
            files = mounted_files(spec, c, objects)
            for token in c.get("args", []) + c.get("command", []):
                for path in re.findall(r"/etc/fedkit/[\w./-]+", token):
                    if path in files:  # a whole directory (register_nodes.py --keys)
                        seen += 1
                        continue
                    mount = max(
                        (m for m in files if path.startswith(m + "/")), key=len, default=None
                    )
                    assert mount, f"{name}/{c['name']}: {path} not mounted"
                    assert path[len(mount) + 1 :] in files[mount], f"{path}: no such key"
                    seen += 1
    assert seen >= 20


# ---- probes, resources, security --------------------------------------------------------
def test_long_running_containers_have_probes_and_resources(objects: list[dict]) -> None:
    for o in objects:
        if o["kind"] not in ("Deployment", "StatefulSet"):
            continue
        for c in o["spec"]["template"]["spec"]["containers"]:
            where = f"{o['metadata']['name']}/{c['name']}"
            assert "readinessProbe" in c and "livenessProbe" in c, where
            ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
            for probe in (c["readinessProbe"], c["livenessProbe"], c.get("startupProbe", {})):
                for kind in ("httpGet", "grpc", "tcpSocket"):
                    if kind in probe:
                        port = probe[kind]["port"]
                        assert port in ports or port in ports.values(), f"{where}: port {port}"
    for o in objects:
        if o["kind"] in WORKLOADS:
            spec = o["spec"]["template"]["spec"]
            for c in spec["containers"] + spec.get("initContainers", []):
                assert {"requests", "limits"} <= set(c.get("resources", {})), c["name"]


def test_nothing_runs_as_root(objects: list[dict], task_pods: list[dict]) -> None:
    for name, _, spec in pod_specs(objects, task_pods):
        pod = spec.get("securityContext", {})
        assert pod.get("runAsNonRoot") is True and pod.get("runAsUser", 0) != 0, name
        assert pod.get("seccompProfile", {}).get("type") == "RuntimeDefault", name
        for c in spec["containers"] + spec.get("initContainers", []):
            sc = c.get("securityContext", {})
            assert sc.get("allowPrivilegeEscalation") is False, f"{name}/{c['name']}"
            assert sc.get("readOnlyRootFilesystem") is True, f"{name}/{c['name']}"
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], f"{name}/{c['name']}"
            assert "runAsUser" not in sc or sc["runAsUser"] != 0
    ns = of_kind(objects, "Namespace")[NAMESPACE]
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_only_superexecs_get_an_api_token(objects: list[dict], task_pods: list[dict]) -> None:
    for name, labels, spec in pod_specs(objects, task_pods):
        token = spec.get("automountServiceAccountToken", True)
        assert token == (labels.get("app.kubernetes.io/component") == "superexec"), name
        if token:
            assert spec["serviceAccountName"] == "fedkit-superexec"
    rules = of_kind(objects, "Role")["fedkit-superexec"]["rules"]
    assert {r for rule in rules for r in rule["resources"]} == {"pods", "secrets"}


# ---- NetworkPolicies and Services --------------------------------------------------------
def selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def test_selectors_select_existing_pods(objects: list[dict], task_pods: list[dict]) -> None:
    pods = [labels for _, labels, _ in pod_specs(objects, task_pods)]
    for name, pol in of_kind(objects, "NetworkPolicy").items():
        selectors = [pol["spec"]["podSelector"]]
        for rule in pol["spec"].get("ingress", []) + pol["spec"].get("egress", []):
            for peer in rule.get("from", []) + rule.get("to", []):
                if "podSelector" in peer and "namespaceSelector" not in peer:
                    selectors.append(peer["podSelector"])
        for sel in selectors:
            assert any(selects(sel, p) for p in pods), f"NetworkPolicy {name}: {sel} selects none"
    for name, svc in of_kind(objects, "Service").items():
        assert any(selects({"matchLabels": svc["spec"]["selector"]}, p) for p in pods), name


def test_superlink_port_is_reachable_only_from_fedkit_parts(objects: list[dict]) -> None:
    pol = of_kind(objects, "NetworkPolicy")["fedkit-superlink"]["spec"]
    (rule,) = pol["ingress"]
    assert rule["ports"] == [{"port": 8000, "protocol": "TCP"}]
    assert of_kind(objects, "NetworkPolicy")["fedkit-default-deny"]["spec"]["podSelector"] == {}
    for i in range(NODES):
        node = of_kind(objects, "NetworkPolicy")[f"fedkit-supernode-{i}"]["spec"]
        (egress,) = node["egress"]  # only the SuperLink (DNS: fedkit-allow-dns)
        assert egress["to"][0]["podSelector"]["matchLabels"] == {
            "app.kubernetes.io/component": "superlink"
        }


# ---- images, flags, certificates --------------------------------------------------------
def expected_image(kustomization: dict) -> str:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    (img,) = kustomization["images"]
    assert img["name"] == "fedkit" and img["newTag"] == version
    return f"{img['newName']}:{img['newTag']}"


def test_images_agree(kustomization: dict, objects: list[dict], task_pods: list[dict]) -> None:
    image = expected_image(kustomization)
    for name, _, spec in pod_specs(objects, task_pods):
        for c in spec["containers"] + spec.get("initContainers", []):
            assert c["image"] == image, f"{name}/{c['name']}: {c['image']}"
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    fedkit_services = [s for s in compose["services"].values() if "prometheus" not in s["image"]]
    assert {s["image"] for s in fedkit_services} == {image}
    assert compose["services"]["superlink"]["build"]["dockerfile"] == "deploy/Dockerfile"


def flower_parsers() -> dict[str, Any]:
    """Flower's own argument parsers, by the image entrypoint's role names."""
    from flwr.supercore.cli.flower_superexec import _parse_args as superexec
    from flwr.superlink.cli.flower_superlink import _parse_args_run_superlink as superlink
    from flwr.supernode.cli.flower_supernode import _parse_args_run_supernode as supernode

    return {"superlink": superlink(), "supernode": supernode(), "superexec": superexec()}


def parse_role(argv: list[str], parsers: dict[str, Any], where: str) -> Any:
    role, *args = argv
    try:
        return parsers[role].parse_args(args)
    except SystemExit:
        pytest.fail(f"{where}: flower-{role} rejects {args}")


def test_flower_accepts_every_command_line(objects: list[dict]) -> None:
    parsers = flower_parsers()
    seen = {}
    for o in objects:
        if o["kind"] in ("Deployment", "StatefulSet"):
            for c in o["spec"]["template"]["spec"]["containers"]:
                if "args" in c:  # through the image's entrypoint: a Flower role
                    seen[o["metadata"]["name"]] = parse_role(
                        c["args"], parsers, o["metadata"]["name"]
                    )
                else:  # one of deploy/'s scripts the image carries
                    python, script, *_ = c["command"]
                    assert python == "python" and script.startswith("/app/deploy/")
                    assert (DEPLOY / Path(script).name).is_file(), script
    superlink = seen["fedkit-superlink"]
    assert superlink.isolation == "process" and superlink.enable_supernode_auth
    assert superlink.database.startswith("/var/lib/fedkit/")  # on the StatefulSet's volume
    mounts = of_kind(objects, "StatefulSet")["fedkit-superlink"]["spec"]["template"]["spec"]
    assert {"name": "data", "mountPath": "/var/lib/fedkit"} in mounts["containers"][0][
        "volumeMounts"
    ]
    for i in range(NODES):
        node = seen[f"fedkit-supernode-{i}"]
        assert node.isolation == "process" and f"partition-id={i}" in node.node_config
        assert node.auth_supernode_private_key and node.root_certificates
        exe = seen[f"fedkit-superexec-node-{i}"]
        assert exe.executor == "kubernetes"
        assert exe.runtime_api_address == f"fedkit-supernode-{i}.fedkit.svc:{node.port}"
    exe = seen["fedkit-superexec-serverapp"]
    assert exe.executor == "kubernetes" and exe.runtime_api_address.endswith(f":{superlink.port}")
    job = of_kind(objects, "Job")["fedkit-register-nodes"]["spec"]["template"]["spec"]
    command = job["containers"][0]["command"]
    assert command[:2] == ["python", "/app/deploy/register_nodes.py"]
    assert f"--nodes={NODES}" in command
    keys = of_kind(objects, "ConfigMap")["fedkit-node-public-keys"]["data"]
    assert set(keys) == {f"node{i}.pub" for i in range(NODES)}  # what --keys reads


def san_names(cert: Path) -> set[str]:
    c = x509.load_pem_x509_certificate(cert.read_bytes())
    san = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(n) for n in san.get_values_for_type(x509.DNSName)} | {
        str(n) for n in san.get_values_for_type(x509.IPAddress)
    }


def test_certificates_cover_the_names_dialled(objects: list[dict], pki: Path) -> None:
    link, runtime = (
        san_names(pki / "superlink" / "server.pem"),
        san_names(pki / "node-runtime" / "server.pem"),
    )
    assert "127.0.0.1" in link  # the SuperLink's own processes
    for o in objects:
        if o["kind"] not in WORKLOADS:
            continue
        for c in o["spec"]["template"]["spec"]["containers"]:
            for token in c.get("args", []) + c.get("command", []):
                m = re.match(r"--(superlink|runtime-api-address)=([^:]+):\d+$", token)
                if m:
                    host = m.group(2)
                    names = runtime if "supernode" in host else link
                    assert host in names, f"{o['metadata']['name']}: {host} not in the certificate"


# ---- executor configs ---------------------------------------------------------------------
def test_executor_configs_mount_what_the_clientapp_needs(task_pods: list[dict]) -> None:
    assert len(task_pods) == NODES + 1
    for pod in task_pods:
        labels = pod["metadata"]["labels"]
        mounts = {m["mountPath"] for m in pod["spec"]["containers"][0]["volumeMounts"]}
        if labels["fedkit.dev/role"] == "clientapp":
            # the node config's signing-key path (supernodes.yaml) is on a mounted volume
            assert "/var/lib/fedkit/node" in mounts
            env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
            assert env["FEDKIT_NODE_METRICS_FILE"].startswith("/var/lib/fedkit/node/")
        else:
            assert "/var/lib/fedkit" in mounts  # out-dir and registry on the SuperLink volume
        assert pod["spec"]["containers"][0]["command"] == [labels["flower.ai/task-type"]]


# ---- compose ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def test_compose_references_resolve(
    compose: dict, tmp_path_factory: pytest.TempPathFactory
) -> None:
    services, volumes, secrets = compose["services"], compose["volumes"], compose["secrets"]
    published = []
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, name
        for v in svc.get("volumes", []):
            source = v.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source}"
            else:
                assert source in volumes, f"{name}: volume {source} not defined"
        for s in svc.get("secrets", []):
            assert (s["source"] if isinstance(s, dict) else s) in secrets, f"{name}: {s}"
        for dep in svc.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown {dep}"
        published += [p.rsplit(":", 1)[0] for p in svc.get("ports", [])]
    assert len(published) == len(set(published)), f"host ports clash: {published}"
    out = tmp_path_factory.mktemp("compose") / "secrets"
    load_module(DEPLOY / "pki.py").make(out, NODES, "compose", readable=True, days=2)
    for name, s in secrets.items():
        assert (out / Path(s["file"]).relative_to("secrets")).is_file(), name
    assert (out / "nodes" / "node0").stat().st_mode & 0o044  # readable by the image's user
    assert "superlink" in san_names(out / "superlink" / "server.pem")
    assert "supernode-0" in san_names(out / "node-runtime" / "server.pem")


def test_compose_commands_and_scrape_targets(compose: dict) -> None:
    parsers = flower_parsers()
    services = compose["services"]
    nodes = [n for n in services if n.startswith("supernode-")]
    assert len(nodes) == NODES
    for name in ["superlink", *nodes]:
        args = parse_role(services[name]["command"], parsers, name)
        if name != "superlink":
            assert args.superlink == "superlink:8000"
            key = args.auth_supernode_private_key.removeprefix("/run/secrets/")
            assert key in {s["target"] for s in services[name]["secrets"] if isinstance(s, dict)}
    from fedkit.flower.local import launcher

    py = "python" + ".".join((ROOT / ".python-version").read_text().split(".")[:2])
    for i in range(NODES):
        python, flag, path, *argv = services[f"launcher-{i}"]["command"]
        assert (python, flag) == ("python", "-P")  # by file path: no torch in the launcher
        assert path == f"/app/.venv/lib/{py}/site-packages/fedkit/flower/local/launcher.py"
        args = launcher.parse_args(argv)
        node = parse_role(services[f"supernode-{i}"]["command"], parsers, f"supernode-{i}")
        assert args.address == f"supernode-{i}:{node.port}" and node.isolation == "process"
        assert args.superexec_auth_secret_file == Path(node.superexec_auth_secret_file)
        assert args.metrics_port == 9101 and args.metrics_host == "0.0.0.0"
    register = services["register"]["command"]
    assert f"--nodes={NODES}" in register
    targets = {s["target"] for s in services["register"]["secrets"] if isinstance(s, dict)}
    assert targets == {f"node{i}.pub" for i in range(NODES)}
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    hosts = {
        t.split(":")[0]
        for job in prom["scrape_configs"]
        for sc in job["static_configs"]
        for t in sc["targets"]
    }
    assert hosts == {"superlink", *(f"launcher-{i}" for i in range(NODES))}
