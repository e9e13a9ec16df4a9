"""Pod hardening, credentials handling and NetworkPolicies."""

import pytest
import yaml

from conftest import COMPONENTS, VALUE_SETS, container, env_map, render, value_file

SECRET_ENV = {"DATABASE_URL", "REDIS_URL", "AUTH_JWT_SECRET"}


def test_every_pod_is_hardened(rendered):
    pods = list(rendered.pod_specs())
    assert pods
    for owner, spec in pods:
        sc = spec["securityContext"]
        assert sc["runAsNonRoot"] is True, owner
        assert (sc["runAsUser"], sc["runAsGroup"], sc["fsGroup"]) == (65532, 65532, 65532), owner
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, owner
        assert spec["automountServiceAccountToken"] is False, owner
        assert spec.get("enableServiceLinks") is False, owner
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(key), owner
        for c in spec["containers"] + spec.get("initContainers", []):
            csc = c["securityContext"]
            assert csc["readOnlyRootFilesystem"] is True, owner
            assert csc["allowPrivilegeEscalation"] is False, owner
            assert csc["privileged"] is False, owner
            assert csc["capabilities"]["drop"] == ["ALL"], owner
            assert "add" not in csc["capabilities"], owner
            assert c.get("resources", {}).get("limits", {}).get("memory"), f"{owner}: memory limit"
            assert c.get("resources", {}).get("requests"), f"{owner}: requests"


def test_test_pod_is_hardened_and_pinned(minimal):
    (pod,) = minimal.kind("Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    c = container(pod["spec"])
    assert c["image"] == "docker.io/library/busybox:1.37.0"
    assert pod["spec"]["restartPolicy"] == "Never"


def test_test_pod_checks_both_apis(minimal):
    (pod,) = minimal.kind("Pod")
    env = env_map(container(pod["spec"]))
    services = {s["metadata"]["name"]: s for s in minimal.kind("Service")}
    ready = env["READY_URLS"]["value"].split()
    openapi = env["OPENAPI_URLS"]["value"].split()
    for url in ready + openapi:
        hostport, _, path = url.removeprefix("http://").partition("/")
        host, port = hostport.split(":")
        svc = services[host]
        port_name = next(p["name"] for p in svc["spec"]["ports"] if p["port"] == int(port))
        if url in ready:
            assert (port_name, "/" + path) == ("admin", "/readyz")
        else:
            assert (port_name, "/" + path) == ("http", "/api/v1/community/openapi.json")
    components = {services[u.removeprefix("http://").split(":")[0]]["metadata"]["labels"]["app.kubernetes.io/component"] for u in ready}
    assert {"command-api", "query-api"} <= components


def test_serviceaccounts_do_not_automount(rendered):
    for sa in rendered.kind("ServiceAccount"):
        assert sa["automountServiceAccountToken"] is False


@pytest.mark.parametrize("values", VALUE_SETS)
def test_credentials_only_via_secret_key_ref(values):
    r = render(values)
    values_file = value_file(values)
    plain = values_file.read_text()
    for owner, spec in r.pod_specs():
        for c in spec["containers"]:
            for e in c.get("env", []):
                if e["name"] in SECRET_ENV:
                    assert "value" not in e, f"{owner}: {e['name']} inline"
                    assert set(e["valueFrom"]) == {"secretKeyRef"}, owner
                else:
                    # No credential from the values file leaks into a plain env value.
                    v = str(e.get("value", ""))
                    assert "password" not in v and "jwt-key" not in v, f"{owner}: {e['name']}={v}"
    # The plain credentials of the values file appear in Secrets only.
    values = yaml.safe_load(plain) or {}
    creds = [
        (values.get("postgresql") or {}).get("url"),
        (values.get("redis") or {}).get("url"),
        (values.get("auth") or {}).get("jwtSecret"),
    ]
    outside = yaml.safe_dump([d for d in r.docs if d["kind"] != "Secret"])
    for cred in filter(None, creds):
        assert cred not in outside, f"a credential from {values_file} leaks outside a Secret"


def test_existing_secret_names_are_used(full):
    expected = {
        "DATABASE_URL": {"name": "sparkle-postgres", "key": "uri"},
        "REDIS_URL": {"name": "sparkle-redis", "key": "url"},
        "AUTH_JWT_SECRET": {"name": "sparkle-jwt", "key": "key"},
    }
    for owner, spec in full.pod_specs():
        env = env_map(spec["containers"][0])
        for name, ref in expected.items():
            if name in env:
                assert env[name]["valueFrom"]["secretKeyRef"] == ref, owner


def test_mixed_credentials(rendered):
    """Chart-managed keys exist for every reference to the chart-managed Secret."""
    secrets = {s["metadata"]["name"]: s for s in rendered.kind("Secret")}
    for owner, spec in rendered.pod_specs():
        for e in spec["containers"][0].get("env", []):
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref and ref["name"] in secrets:
                assert ref["key"] in secrets[ref["name"]]["data"], f"{owner}: {ref}"


def test_chart_secret_holds_the_plain_values(minimal):
    import base64

    s = minimal.get("Secret", "sparkle-sparkle-community-credentials")
    data = {k: base64.b64decode(v).decode() for k, v in s["data"].items()}
    assert data["database-url"].startswith("postgres://")
    assert data["redis-url"].startswith("redis://")
    assert len(data["jwt-secret"]) >= 32


def test_network_policies(full, minimal):
    assert minimal.kind("NetworkPolicy") == []
    pols = {p["metadata"]["labels"]["app.kubernetes.io/component"]: p for p in full.kind("NetworkPolicy")}
    assert set(pols) == set(COMPONENTS) | {"migrate"}
    release_pods = {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "sparkle-community", "app.kubernetes.io/instance": "sparkle"}}}
    for component in COMPONENTS:
        pol = pols[component]
        assert pol["spec"]["podSelector"]["matchLabels"] == full.deployment(component)["spec"]["selector"]["matchLabels"]
        assert set(pol["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        rules = {r["ports"][0]["port"]: r for r in pol["spec"]["ingress"]}
        assert release_pods in rules["admin"]["from"], "helm test reaches /readyz"
        assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}} in rules["admin"]["from"]
        if component == "projector":
            assert set(rules) == {"admin"}
        else:
            assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}} in rules["http"]["from"]
            assert release_pods in rules["http"]["from"]
        egress_ports = {p["port"] for r in pol["spec"]["egress"] for p in r["ports"]}
        assert 53 in egress_ports
        assert (5432 in egress_ports) == (component != "query-api"), "query-api has no SQL connection"
        assert 6379 in egress_ports
        assert {4317, 4318} <= egress_ports, "otel.endpoint is set in full-values"
    job = pols["migrate"]
    assert job["spec"]["ingress"] == []
    assert {p["port"] for r in job["spec"]["egress"] for p in r["ports"]} == {53, 5432}


def test_network_policy_api_open_by_default():
    r = render("minimal-values.yaml", sets=["networkPolicy.enabled=true"])
    pol = r.component("NetworkPolicy", "query-api")
    http = next(rule for rule in pol["spec"]["ingress"] if rule["ports"][0]["port"] == "http")
    assert "from" not in http, "empty apiFrom = any source (the ingress controller must reach the API)"
    egress_ports = {p["port"] for rule in pol["spec"]["egress"] for p in rule["ports"]}
    assert 4318 not in egress_ports, "no OTLP egress without otel.endpoint"
