"""The spot GPU worker group of the KubeRay manifests: it starts empty and lands only on spot
nodes, while the head, the submitter and the on-demand floor can never land there; the drain
that Ray starts on SIGTERM fits in the pod's grace period. Checked by value on both manifests."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SPOT, FLOOR = "gpu-spot", "gpu"
K8S_DEFAULT_GRACE_S = 30  # terminationGracePeriodSeconds when a pod does not set it
SHORTEST_SPOT_NOTICE_S = 30  # GCP and Azure; AWS gives 2 minutes
DRAIN_ENV = "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"
RAY_TEARDOWN_S = 5  # after the drain, Ray stops its processes: leave it time before SIGKILL


@pytest.fixture(params=["RayJob", "RayCronJob"])
def job_spec(request, rayjob, raycronjob) -> dict:
    """The RayJob spec of each manifest (a RayCronJob's jobTemplate)."""
    return rayjob["spec"] if request.param == "RayJob" else raycronjob["spec"]["jobTemplate"]


def _groups(spec: dict) -> dict:
    return {g["groupName"]: g for g in spec["rayClusterSpec"]["workerGroupSpecs"]}


def _required_terms(pod: dict) -> list[list[dict]]:
    """The matchExpressions of each required node-affinity term (terms are ORed)."""
    required = pod.get("affinity", {}).get("nodeAffinity", {}).get("requiredDuringSchedulingIgnoredDuringExecution")
    assert required, "no required node affinity"
    return [term.get("matchExpressions", []) for term in required["nodeSelectorTerms"]]


def _spot_markers(spec: dict) -> set[tuple[str, str]]:
    """(node label, value) pairs the spot group selects on: one per provider."""
    markers = set()
    for expressions in _required_terms(_groups(spec)[SPOT]["template"]["spec"]):
        (expression,) = expressions  # one label per term, so any one of them is enough
        assert expression["operator"] == "In", expression
        markers |= {(expression["key"], value) for value in expression["values"]}
    return markers


def _excluded(expressions: list[dict]) -> set[tuple[str, str]]:
    return {(e["key"], v) for e in expressions if e["operator"] == "NotIn" for v in e["values"]}


def _on_demand_pods(spec: dict) -> dict[str, dict]:
    """The pods that must never run on spot capacity: the driver's head, the submitter, the floor."""
    return {"head": spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"],
            "submitter": spec["submitterPodTemplate"]["spec"],
            FLOOR: _groups(spec)[FLOOR]["template"]["spec"]}


def test_the_spot_group_starts_empty_beside_an_on_demand_floor(job_spec):
    spot, floor = _groups(job_spec)[SPOT], _groups(job_spec)[FLOOR]
    assert spot["minReplicas"] == 0 and spot["replicas"] == 0 and spot["maxReplicas"] >= 1
    assert floor["minReplicas"] >= 1, "without an on-demand floor, losing every spot node stops the run"
    assert spot["labels"] == {"op4ksr.io/capacity": "spot"}
    assert floor["labels"] == {"op4ksr.io/capacity": "on-demand"}
    spot_pod, floor_pod = spot["template"]["spec"], floor["template"]["spec"]
    # an actor must fit on either: same GPU, CPU and memory, same GPU nodes
    assert spot_pod["containers"][0]["resources"] == floor_pod["containers"][0]["resources"]
    assert spot_pod["nodeSelector"] == floor_pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}


def test_the_spot_group_lands_only_on_spot_nodes_and_tolerates_their_taints(job_spec):
    assert {key for key, _ in _spot_markers(job_spec)} == {
        "karpenter.sh/capacity-type", "eks.amazonaws.com/capacityType", "cloud.google.com/gke-spot",
        "cloud.google.com/gke-preemptible", "kubernetes.azure.com/scalesetpriority"}
    tolerations = _groups(job_spec)[SPOT]["template"]["spec"]["tolerations"]
    tolerated = {(t["key"], t.get("value"), t["effect"]) for t in tolerations if t["operator"] == "Equal"}
    assert {("cloud.google.com/gke-spot", "true", "NoSchedule"),
            ("kubernetes.azure.com/scalesetpriority", "spot", "NoSchedule")} <= tolerated


def test_head_submitter_and_floor_are_never_scheduled_on_spot(job_spec):
    markers = _spot_markers(job_spec)
    spot_taints = {t["key"] for t in _groups(job_spec)[SPOT]["template"]["spec"]["tolerations"]} - {"nvidia.com/gpu"}
    for name, pod in _on_demand_pods(job_spec).items():
        for expressions in _required_terms(pod):  # whichever term a node matches, it is not spot
            assert markers <= _excluded(expressions), f"{name}: may land on {markers - _excluded(expressions)}"
        assert not spot_taints & {t["key"] for t in pod.get("tolerations", [])}, f"{name} tolerates spot taints"
        assert not markers & set(pod.get("nodeSelector", {}).items()), f"{name} selects spot nodes"
    head = job_spec["rayClusterSpec"]["headGroupSpec"]
    assert head["labels"] == {"op4ksr.io/capacity": "on-demand"}


def test_an_on_demand_pod_that_could_land_on_spot_is_caught(job_spec):
    markers = _spot_markers(job_spec)
    loose = [e for e in _required_terms(_on_demand_pods(job_spec)["head"])[0]
             if e["key"] != "cloud.google.com/gke-spot"]
    assert markers - _excluded(loose) == {("cloud.google.com/gke-spot", "true")}


def _ray_reads_the_drain_variable() -> bool:
    # Located without importing ray (slow): the pinned Ray's SIGTERM drain reads this variable.
    (package_dir,) = importlib.util.find_spec("ray").submodule_search_locations
    return f'"{DRAIN_ENV}"' in (Path(package_dir) / "_private" / "ray_constants.py").read_text()


def test_the_sigterm_drain_fits_in_each_pods_grace_period(job_spec):
    assert _ray_reads_the_drain_variable(), f"the pinned Ray no longer reads {DRAIN_ENV}"
    cluster = job_spec["rayClusterSpec"]
    pods = {"head": cluster["headGroupSpec"]["template"]["spec"]}
    pods |= {name: g["template"]["spec"] for name, g in _groups(job_spec).items()}
    for name, pod in pods.items():
        grace = pod.get("terminationGracePeriodSeconds", K8S_DEFAULT_GRACE_S)
        for container in pod["containers"]:
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            assert float(env[DRAIN_ENV]) + RAY_TEARDOWN_S <= grace, f"{name}: drain {env[DRAIN_ENV]} s, grace {grace} s"
    assert pods[SPOT]["terminationGracePeriodSeconds"] < SHORTEST_SPOT_NOTICE_S


def test_the_job_survives_a_reclaim_without_retrying_itself(job_spec):
    assert job_spec["submissionMode"] == "K8sJobMode"  # the only mode that takes a submitterPodTemplate
    assert job_spec["submitterPodTemplate"]["spec"]["restartPolicy"] == "Never"
    assert "command" not in job_spec["submitterPodTemplate"]["spec"]["containers"][0]  # KubeRay's own
    assert job_spec["backoffLimit"] == 0  # a rerun resumes; a retry meets the dead run's lock
    assert job_spec["shutdownAfterJobFinishes"] is True
    cluster = job_spec["rayClusterSpec"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert 0 < cluster["autoscalerOptions"]["idleTimeoutSeconds"] <= 600  # idle spot GPUs go back
