"""Ingress and HTTPRoute: every contract path reaches the right component.

Matching follows the specs, not a reimplementation of the templates:
- Ingress `Prefix`: the path is split by `/` and matched element-wise
  (`/foo` matches `/foo` and `/foo/bar`, not `/foobar`); among the matching
  paths of a rule the longest wins.
- HTTPRoute `PathPrefix`: the same element-wise prefix semantics; the longest
  matching prefix wins across rules.
"""

import pytest

from conftest import COMPONENTS, render

UUID = "0190a3b2-7c1d-7e45-8f00-123456789abc"

# Every REST path of CONTRACT.md §4 and the component that serves it.
CONTRACT_PATHS = {
    "/api/v1/community/feed": "query-api",
    f"/api/v1/community/feed/users/{UUID}": "query-api",
    f"/api/v1/community/feed/posts/{UUID}": "query-api",
    "/api/v1/community/profile": "command-api",
    "/api/v1/community/posts": "command-api",
    f"/api/v1/community/posts/{UUID}": "command-api",
    f"/api/v1/community/posts/{UUID}/like": "command-api",
    "/api/v1/community/openapi.json": "command-api",
}
# Element-wise edge cases: not the feed, and not the API at all.
EDGE_PATHS = {
    "/api/v1/community/feedback": "command-api",
    "/api/v1/community/feed/": "query-api",
    "/api/v1/communityx": None,
    "/metrics": None,
    "/readyz": None,
    "/": None,
}


def prefix_matches(prefix: str, path: str) -> bool:
    """Kubernetes Ingress Prefix / Gateway PathPrefix semantics (element-wise)."""
    p = [e for e in prefix.split("/") if e]
    q = [e for e in path.split("/") if e]
    return q[: len(p)] == p


def service_component(r, name: str) -> str:
    return r.get("Service", name)["metadata"]["labels"]["app.kubernetes.io/component"]


def ingress_route(r, ing: dict, path: str, host: str | None):
    """(component, service port object) for a request, or None."""
    candidates = []
    for rule in ing["spec"]["rules"]:
        if rule.get("host") not in (None, host):
            continue
        for p in rule["http"]["paths"]:
            assert p["pathType"] == "Prefix", "contract: path prefixes only"
            if prefix_matches(p["path"], path):
                candidates.append((len([e for e in p["path"].split("/") if e]), p))
    if not candidates:
        return None
    _, best = max(candidates, key=lambda c: c[0])
    backend = best["backend"]["service"]
    svc = r.get("Service", backend["name"])
    port = next(sp for sp in svc["spec"]["ports"] if sp["name"] == backend["port"].get("name") or sp["port"] == backend["port"].get("number"))
    return service_component(r, backend["name"]), port


def route_route(r, route: dict, path: str):
    candidates = []
    for rule in route["spec"]["rules"]:
        for m in rule["matches"]:
            assert m["path"]["type"] == "PathPrefix"
            if prefix_matches(m["path"]["value"], path):
                candidates.append((len([e for e in m["path"]["value"].split("/") if e]), rule))
    if not candidates:
        return None
    _, best = max(candidates, key=lambda c: c[0])
    (ref,) = best["backendRefs"]
    svc = r.get("Service", ref["name"])
    port = next(sp for sp in svc["spec"]["ports"] if sp["port"] == ref["port"])
    return service_component(r, ref["name"]), port


@pytest.mark.parametrize("values", ["minimal-values.yaml", "full-values.yaml"])
@pytest.mark.parametrize("path,component", list(CONTRACT_PATHS.items()) + list(EDGE_PATHS.items()))
def test_ingress_routes_path(values, path, component):
    r = render(values)
    (ing,) = r.kind("Ingress")
    hosts = [rule.get("host") for rule in ing["spec"]["rules"]]
    for host in hosts:
        got = ingress_route(r, ing, path, host)
        if component is None:
            assert got is None, f"{path} must not be routed"
        else:
            assert got is not None, f"{path} is not routed"
            assert got[0] == component, f"{path} → {got[0]}, expected {component}"
            assert got[1]["name"] == "http" and got[1]["targetPort"] == "http"


@pytest.mark.parametrize("path,component", list(CONTRACT_PATHS.items()) + list(EDGE_PATHS.items()))
def test_httproute_routes_path(full, path, component):
    (route,) = full.kind("HTTPRoute")
    got = route_route(full, route, path)
    if component is None:
        assert got is None
    else:
        assert got is not None and got[0] == component
        assert got[1]["name"] == "http"


def test_ingress_defaults_are_controller_neutral(minimal):
    (ing,) = minimal.kind("Ingress")
    assert ing["apiVersion"] == "networking.k8s.io/v1"
    assert "annotations" not in ing["metadata"], "no controller-specific annotation is needed"
    assert "ingressClassName" not in ing["spec"]
    assert [rule.get("host") for rule in ing["spec"]["rules"]] == [None]


def test_ingress_tls_and_hosts(full):
    (ing,) = full.kind("Ingress")
    assert ing["spec"]["ingressClassName"] == "nginx"
    assert {rule["host"] for rule in ing["spec"]["rules"]} == {"community.example.com", "api.community.example.com"}
    assert ing["spec"]["tls"][0]["secretName"] == "community-example-com-tls"


def test_admin_port_never_routed(full):
    for ing in full.kind("Ingress"):
        for rule in ing["spec"]["rules"]:
            for p in rule["http"]["paths"]:
                assert p["backend"]["service"]["port"] == {"name": "http"}
    for route in full.kind("HTTPRoute"):
        for rule in route["spec"]["rules"]:
            for ref in rule["backendRefs"]:
                assert ref["port"] == 8080


def test_httproute_parent_refs(full, minimal):
    assert minimal.kind("HTTPRoute") == []
    (route,) = full.kind("HTTPRoute")
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["spec"]["parentRefs"] == [{"name": "public", "namespace": "gateway-system", "sectionName": "https"}]
    assert route["spec"]["hostnames"] == ["community.example.com"]


def test_ingress_can_be_disabled():
    assert render("gitops-values.yaml").kind("Ingress") == []


def test_prefix_semantics_helper():
    assert prefix_matches("/api/v1/community/feed", "/api/v1/community/feed/posts/x")
    assert prefix_matches("/api/v1/community", "/api/v1/community/")
    assert not prefix_matches("/api/v1/community/feed", "/api/v1/community/feedback")
    assert all(c in COMPONENTS for c in CONTRACT_PATHS.values())
