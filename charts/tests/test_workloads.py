"""Deployments, Services, probes, selectors and the environment contract."""

import re

import pytest

from conftest import COMPONENTS, NAMESPACE, VALUES_KEY, container, env_map, render

SELECTOR_KEYS = {"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component"}


def port_number(c: dict, port) -> int:
    """Resolve a probe/Service port (number or container port name)."""
    if isinstance(port, int):
        return port
    matches = [p["containerPort"] for p in c.get("ports", []) if p["name"] == port]
    assert matches, f"container {c['name']} has no port named {port!r}"
    return matches[0]


def test_three_deployments_with_own_names(rendered):
    names = {rendered.deployment(c)["metadata"]["name"] for c in COMPONENTS}
    assert len(names) == 3
    assert all(d["metadata"]["namespace"] == NAMESPACE for d in rendered.kind("Deployment"))


@pytest.mark.parametrize("component", COMPONENTS)
def test_probes_on_admin_port(rendered, component):
    c = container(rendered.deployment(component)["spec"]["template"]["spec"])
    expected = {"startupProbe": "/livez", "livenessProbe": "/livez", "readinessProbe": "/readyz"}
    for probe, path in expected.items():
        get = c[probe]["httpGet"]
        assert get["path"] == path, f"{component} {probe}"
        assert get["port"] == "admin", f"{component} {probe} must target the admin port by name"
        assert port_number(c, get["port"]) == 9090
    # ADMIN_ADDR binds the port the probes hit.
    assert env_map(c)["ADMIN_ADDR"]["value"] == "0.0.0.0:9090"


@pytest.mark.parametrize("component", COMPONENTS)
def test_ports_per_component(rendered, component):
    c = container(rendered.deployment(component)["spec"]["template"]["spec"])
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    svc = rendered.component("Service", component)
    svc_ports = {p["name"]: p for p in svc["spec"]["ports"]}
    if component == "projector":
        assert ports == {"admin": 9090}
        assert set(svc_ports) == {"admin"}, "the projector Service exposes metrics only"
        assert "HTTP_ADDR" not in env_map(c)
    else:
        assert ports == {"http": 8080, "admin": 9090}
        assert set(svc_ports) == {"http", "admin"}
        assert env_map(c)["HTTP_ADDR"]["value"] == "0.0.0.0:8080"
        assert svc_ports["http"]["port"] == 8080
    for p in svc_ports.values():
        assert p["targetPort"] == p["name"], "Service targets container ports by name"
        port_number(c, p["targetPort"])


def test_selectors_stable_distinct_and_matching(rendered):
    selectors = {}
    for component in COMPONENTS:
        dep = rendered.deployment(component)
        sel = dep["spec"]["selector"]["matchLabels"]
        assert set(sel) == SELECTOR_KEYS, "selector labels: name, instance, component only"
        assert sel["app.kubernetes.io/component"] == component
        assert not any(k in sel for k in ("app.kubernetes.io/version", "helm.sh/chart"))
        pod_labels = dep["spec"]["template"]["metadata"]["labels"]
        assert sel.items() <= pod_labels.items(), "pod template carries the selector labels"
        svc = rendered.component("Service", component)
        assert svc["spec"]["selector"] == sel, "Service selects exactly the component's pods"
        pdb = rendered.component("PodDisruptionBudget", component)
        if pdb:
            assert pdb["spec"]["selector"]["matchLabels"] == sel
        selectors[component] = tuple(sorted(sel.items()))
    assert len(set(selectors.values())) == 3, "selectors are distinct per component"


def test_selectors_do_not_change_with_version():
    a = render("minimal-values.yaml")
    b = render("minimal-values.yaml", sets=["image.tag=9.9.9"])
    for component in COMPONENTS:
        da, db = a.deployment(component), b.deployment(component)
        assert da["spec"]["selector"] == db["spec"]["selector"]
        assert da["metadata"]["labels"]["app.kubernetes.io/version"] != db["metadata"]["labels"]["app.kubernetes.io/version"]


def test_component_names_never_collide_when_truncated():
    r = render("minimal-values.yaml", sets=["fullnameOverride=" + "x" * 52])
    names = [r.deployment(c)["metadata"]["name"] for c in COMPONENTS]
    assert len(set(names)) == 3
    assert all(len(n) <= 63 for n in names)
    assert all(n.endswith(c) for n, c in zip(names, COMPONENTS))
    assert all(len(d["metadata"]["name"]) <= 63 for d in r.docs)


COMMON_ENV = {"REDIS_URL", "ADMIN_ADDR", "RUST_LOG", "LOG_FORMAT"}
REQUIRED_ENV = {
    "command-api": COMMON_ENV | {"DATABASE_URL", "HTTP_ADDR", "AUTH_JWT_SECRET"},
    "query-api": COMMON_ENV | {"HTTP_ADDR", "CONSISTENCY_WAIT_MS"},
    "projector": COMMON_ENV | {"DATABASE_URL", "PROJECTOR_CONSUMER", "FEED_GLOBAL_LIMIT", "FEED_AUTHOR_LIMIT"},
}


@pytest.mark.parametrize("component", COMPONENTS)
def test_env_contract(rendered, component):
    env = env_map(container(rendered.deployment(component)["spec"]["template"]["spec"]))
    missing = REQUIRED_ENV[component] - set(env)
    assert not missing, f"{component} lacks {missing}"
    if component == "query-api":
        assert "DATABASE_URL" not in env, "query-api has no SQL connection at all"
    if component == "projector":
        assert env["PROJECTOR_CONSUMER"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["LOG_FORMAT"]["value"] in ("json", "text")


def test_env_defaults(minimal):
    q = env_map(container(minimal.deployment("query-api")["spec"]["template"]["spec"]))
    p = env_map(container(minimal.deployment("projector")["spec"]["template"]["spec"]))
    assert q["CONSISTENCY_WAIT_MS"]["value"] == "2000"
    assert q["AUTH_JWT_SECRET"]["valueFrom"]["secretKeyRef"], "query-api personalises liked_by_me by default"
    assert p["FEED_GLOBAL_LIMIT"]["value"] == "10000"
    assert p["FEED_AUTHOR_LIMIT"]["value"] == "1000"
    for c in COMPONENTS:
        env = env_map(container(minimal.deployment(c)["spec"]["template"]["spec"]))
        assert env["RUST_LOG"]["value"] == "info"
        assert env["LOG_FORMAT"]["value"] == "json"
        assert not any(k.startswith("OTEL_") for k in env), "tracing export is off without otel.endpoint"
        assert "DATABASE_MAX_CONNECTIONS" not in env
        assert "WORKER_THREADS" not in env, "the binary sizes its runtime to the CPUs it may use"


def test_worker_threads_set_per_component(full):
    env = {c: env_map(container(full.deployment(c)["spec"]["template"]["spec"])) for c in COMPONENTS}
    assert env["query-api"]["WORKER_THREADS"]["value"] == "1"
    assert "WORKER_THREADS" not in env["command-api"] and "WORKER_THREADS" not in env["projector"]


@pytest.mark.parametrize("component", COMPONENTS)
def test_otel_env(full, component):
    env = env_map(container(full.deployment(component)["spec"]["template"]["spec"]))
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == "http://otel-collector.observability.svc:4317"
    assert env["OTEL_EXPORTER_OTLP_PROTOCOL"]["value"] == "grpc"
    assert env["OTEL_SERVICE_NAME"]["value"] == component
    attrs = dict(kv.split("=", 1) for kv in env["OTEL_RESOURCE_ATTRIBUTES"]["value"].split(","))
    assert attrs["service.namespace"] == NAMESPACE
    assert attrs["deployment.environment.name"] == "production"
    assert attrs["k8s.pod.name"] == "$(K8S_POD_NAME)"
    assert attrs["cloud.region"] == "eu-west-1"
    names = [e["name"] for e in container(full.deployment(component)["spec"]["template"]["spec"])["env"]]
    # $(VAR) expansion only sees variables defined earlier in the list.
    assert names.index("K8S_POD_NAME") < names.index("OTEL_RESOURCE_ATTRIBUTES")
    assert env["OTEL_TRACES_SAMPLER"]["value"] == "parentbased_traceidratio"
    assert env["OTEL_TRACES_SAMPLER_ARG"]["value"] == "0.2"


def test_dev_values_trace_to_jaeger():
    r = render("dev-values.yaml")
    env = env_map(container(r.deployment("command-api")["spec"]["template"]["spec"]))
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == "http://jaeger:4318"
    assert env["OTEL_EXPORTER_OTLP_PROTOCOL"]["value"] == "http/protobuf"


def test_images_tags_and_digests(minimal, full):
    for c in COMPONENTS:
        img = container(minimal.deployment(c)["spec"]["template"]["spec"])["image"]
        assert img == f"ghcr.io/sparkle-community/{c}:0.1.0"
        img = container(full.deployment(c)["spec"]["template"]["spec"])["image"]
        assert re.fullmatch(rf"registry\.example\.com/sparkle/{c}:1\.4\.2@sha256:[0-9a-f]{{64}}", img), img
    test_pod = full.kind("Pod")[0]
    assert "@sha256:" in container(test_pod["spec"])["image"]


def test_extra_env_appended(full):
    env = container(full.deployment("command-api")["spec"]["template"]["spec"])["env"]
    assert env[-1] == {"name": "EXTRA_FEATURE_FLAG", "value": "on"}


def test_graceful_shutdown_settings(minimal, full):
    for c in COMPONENTS:
        spec = minimal.deployment(c)["spec"]["template"]["spec"]
        assert spec["terminationGracePeriodSeconds"] == 30
        assert "lifecycle" not in container(spec), "preStop sleep is off by default (Kubernetes 1.29)"
    spec = full.deployment("command-api")["spec"]["template"]["spec"]
    assert spec["terminationGracePeriodSeconds"] == 40
    assert container(spec)["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}


def test_shutdown_delay(minimal):
    for c, want in (("command-api", "5000"), ("query-api", "5000"), ("projector", None)):
        env = env_map(container(minimal.deployment(c)["spec"]["template"]["spec"]))
        assert env.get("SHUTDOWN_DELAY_MS", {}).get("value") == want, c


def test_shutdown_delay_must_fit_grace_period():
    from conftest import RenderError

    with pytest.raises(RenderError, match="shutdownDelayMs"):
        render("minimal-values.yaml", sets=["queryApi.shutdownDelayMs=30000"])


def test_prestop_must_be_shorter_than_grace_period():
    from conftest import RenderError

    with pytest.raises(RenderError, match="preStopSleepSeconds"):
        render("minimal-values.yaml", sets=["commandApi.preStopSleepSeconds=30"])


def test_topology_spread_gets_component_selector(full):
    spec = full.deployment("command-api")["spec"]
    tsc = spec["template"]["spec"]["topologySpreadConstraints"][0]
    assert tsc["labelSelector"]["matchLabels"] == spec["selector"]["matchLabels"]
    assert tsc["topologyKey"] == "topology.kubernetes.io/zone"


def test_service_monitors(full, minimal):
    assert minimal.kind("ServiceMonitor") == []
    for c in COMPONENTS:
        sm = full.component("ServiceMonitor", c)
        assert sm["apiVersion"] == "monitoring.coreos.com/v1"
        (ep,) = sm["spec"]["endpoints"]
        assert (ep["port"], ep["path"]) == ("admin", "/metrics")
        svc = full.component("Service", c)
        assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
        assert "admin" in {p["name"] for p in svc["spec"]["ports"]}
        assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_checksum_rolls_pods_on_secret_change():
    def sums(r):
        return {
            c: r.deployment(c)["spec"]["template"]["metadata"]["annotations"]["checksum/credentials"]
            for c in COMPONENTS
        }

    base = sums(render("minimal-values.yaml"))
    same = sums(render("minimal-values.yaml", sets=["commandApi.replicas=3"]))
    changed = sums(render("minimal-values.yaml", sets=["redis.url=redis://other:6379/0"]))
    assert base == same, "unrelated changes keep the checksum"
    for c in COMPONENTS:
        assert changed[c] != base[c], f"{c} must roll when a credential changes"
    pg = sums(render("minimal-values.yaml", sets=["postgresql.url=postgres://u:p@other:5432/db"]))
    assert pg["command-api"] != base["command-api"] and pg["projector"] != base["projector"]
    assert pg["query-api"] == base["query-api"], "query-api has no Postgres credential to reload"
    jwt = sums(render("minimal-values.yaml", sets=["auth.jwtSecret=" + "k" * 40]))
    assert jwt["projector"] == base["projector"] and jwt["query-api"] != base["query-api"]
