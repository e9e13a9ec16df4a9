"""HPA, PDB and KEDA: who owns the replica count, and when a PDB exists."""

import pytest

from conftest import COMPONENTS, render


def test_replicas_without_autoscaling(minimal):
    for c in COMPONENTS:
        assert minimal.deployment(c)["spec"]["replicas"] == 2
    assert minimal.kind("HorizontalPodAutoscaler") == []


def test_hpa_owns_replicas(full):
    for c in COMPONENTS:
        dep = full.deployment(c)
        assert "replicas" not in dep["spec"], f"{c}: the HPA owns the replica count"
        hpa = full.component("HorizontalPodAutoscaler", c)
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": dep["metadata"]["name"]}
        cpu = [m for m in hpa["spec"]["metrics"] if m["resource"]["name"] == "cpu"]
        assert cpu and cpu[0]["resource"]["target"]["type"] == "Utilization"
    cmd = full.component("HorizontalPodAutoscaler", "command-api")["spec"]
    assert (cmd["minReplicas"], cmd["maxReplicas"]) == (3, 12)
    assert {m["resource"]["name"] for m in cmd["metrics"]} == {"cpu", "memory"}
    assert cmd["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300


def test_pdb_only_with_more_than_one_pod():
    assert len(render("minimal-values.yaml").kind("PodDisruptionBudget")) == 3
    assert render("gitops-values.yaml").kind("PodDisruptionBudget") == [], "1 replica: a PDB would block drains"
    one = render("minimal-values.yaml", sets=["commandApi.replicas=1"])
    assert one.component("PodDisruptionBudget", "command-api") is None
    assert one.component("PodDisruptionBudget", "query-api") is not None
    scaled = render("minimal-values.yaml", sets=["commandApi.replicas=1", "commandApi.autoscaling.enabled=true"])
    assert scaled.component("PodDisruptionBudget", "command-api") is not None
    off = render("minimal-values.yaml", sets=["queryApi.podDisruptionBudget.enabled=false"])
    assert off.component("PodDisruptionBudget", "query-api") is None


def test_pdb_budget(minimal, full):
    assert minimal.component("PodDisruptionBudget", "query-api")["spec"]["maxUnavailable"] == 1
    spec = full.component("PodDisruptionBudget", "command-api")["spec"]
    assert spec["minAvailable"] == 2 and "maxUnavailable" not in spec
    assert full.component("PodDisruptionBudget", "command-api")["apiVersion"] == "policy/v1"


def test_keda_replaces_projector_hpa():
    r = render("keda-values.yaml")  # sets projector.autoscaling.enabled too
    assert r.component("HorizontalPodAutoscaler", "projector") is None, "KEDA and a chart HPA would fight"
    dep = r.deployment("projector")
    assert "replicas" not in dep["spec"], "KEDA owns the replica count"
    (so,) = r.kind("ScaledObject")
    assert so["apiVersion"] == "keda.sh/v1alpha1"
    assert so["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    assert (so["spec"]["minReplicaCount"], so["spec"]["maxReplicaCount"]) == (1, 8)
    (trigger,) = so["spec"]["triggers"]
    assert trigger["type"] == "redis-streams"
    md = trigger["metadata"]
    assert md["stream"] == "sparkle:stream:events"
    assert md["consumerGroup"] == "projector"
    assert md["lagCount"] == "500" and md["activationLagCount"] == "10"
    assert md["address"] == "redis.example.internal:6380"
    assert md["enableTLS"] == "true"
    assert all(isinstance(v, str) for v in md.values()), "KEDA trigger metadata values are strings"
    (ta,) = r.kind("TriggerAuthentication")
    assert trigger["authenticationRef"]["name"] == ta["metadata"]["name"]
    params = {p["parameter"]: (p["name"], p["key"]) for p in ta["spec"]["secretTargetRef"]}
    assert params == {"password": ("sparkle-redis-keda", "password"), "ca": ("sparkle-redis-keda", "ca.crt")}
    assert so["spec"]["fallback"] == {"failureThreshold": 3, "replicas": 2}
    # The other components keep their plain replica count.
    assert r.deployment("command-api")["spec"]["replicas"] == 2
    assert r.component("PodDisruptionBudget", "projector") is not None


def test_keda_defaults_match_service_constants():
    r = render("minimal-values.yaml", sets=["projector.keda.enabled=true", "projector.keda.address=redis:6379"])
    (so,) = r.kind("ScaledObject")
    md = so["spec"]["triggers"][0]["metadata"]
    assert (md["stream"], md["consumerGroup"]) == ("sparkle:stream:events", "projector")
    assert r.kind("TriggerAuthentication") == []
    assert "authenticationRef" not in so["spec"]["triggers"][0]


@pytest.mark.parametrize("bad", [["projector.keda.enabled=true"], ["httpRoute.enabled=true"]])
def test_cross_field_validation(bad):
    from conftest import RenderError

    with pytest.raises(RenderError, match="is required when"):
        render("minimal-values.yaml", sets=bad)
