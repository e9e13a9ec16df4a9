"""Evaluate the repository's Tiltfile with stub Tilt builtins and check what
it asks Tilt to do. Starlark (starlark-pyo3, the Rust implementation) parses
it with the extended dialect; an unknown builtin fails at evaluation.

Cross-checks against the real files: the Dockerfile has the targets, the
chart rendered with the dev values has the workloads the Tiltfile names, and
its images are the ones Tilt builds.
"""

from __future__ import annotations

import re
from collections import defaultdict

import pytest
import starlark as sl
import yaml

from conftest import COMPONENTS, ROOT, render

TILTFILE = ROOT / "Tiltfile"


class TiltStub:
    """Records the calls of the Tilt API subset our Tiltfile may use."""

    def __init__(self):
        self.calls = defaultdict(list)

    def record(self, name, result=None):
        def fn(*args, **kwargs):
            self.calls[name].append((args, kwargs))
            return result(*args, **kwargs) if callable(result) else result

        return fn

    def module(self) -> sl.Module:
        m = sl.Module()
        simple = [
            "version_settings", "docker_build", "custom_build", "k8s_yaml", "k8s_resource",
            "local_resource", "allow_k8s_contexts", "update_settings", "watch_settings",
            "watch_file", "secret_settings", "docker_prune_settings", "k8s_kind", "print",
        ]
        for name in simple:
            m.add_callable(name, self.record(name))
        m.add_callable("helm", self.record("helm", lambda path, **kw: {"__helm__": path, **kw}))
        m.add_callable(
            "port_forward",
            self.record("port_forward", lambda local, container=None, name="", **kw: {
                "local": local, "container": container or local, "name": name}),
        )
        m.add_callable("link", self.record("link", lambda url, name="": {"url": url, "name": name}))
        m.add_callable("listdir", self.record("listdir", lambda d, **kw: sorted(
            str(p.relative_to(ROOT)) for p in (ROOT / d).iterdir())))
        m.add_callable("read_file", self.record("read_file", lambda p, *a: (ROOT / p).read_text()))
        m.add_callable("read_yaml", self.record("read_yaml", lambda p, *a: yaml.safe_load((ROOT / p).read_text())))
        return m


@pytest.fixture(scope="module")
def tilt() -> TiltStub:
    stub = TiltStub()
    ast = sl.parse("Tiltfile", TILTFILE.read_text(), sl.Dialect.extended())
    globals_ = sl.Globals.extended_by([sl.LibraryExtension.StructType, sl.LibraryExtension.Json, sl.LibraryExtension.Print])
    sl.eval(stub.module(), ast, globals_)
    return stub


@pytest.fixture(scope="module")
def resources(tilt) -> dict:
    """Tilt resource name -> k8s_resource kwargs (plus the workload it selects)."""
    out = {}
    for args, kw in tilt.calls["k8s_resource"]:
        workload = args[0] if args else kw.get("workload")
        name = kw.get("new_name") or workload
        assert name not in out, f"resource {name} configured twice"
        out[name] = dict(kw, workload=workload)
    return out


def forwards(res: dict) -> set[tuple[int, int]]:
    out = set()
    for pf in res.get("port_forwards", []):
        if isinstance(pf, dict):
            out.add((int(pf["local"]), int(pf["container"])))
        else:
            local, _, remote = str(pf).partition(":")
            out.add((int(local), int(remote or local)))
    return out


def manifests_from(tilt) -> list[str]:
    files = []
    for args, kw in tilt.calls["k8s_yaml"]:
        arg = args[0] if args else kw["yaml"]
        items = arg if isinstance(arg, list) else [arg]
        files += [i for i in items if isinstance(i, str)]
    return files


def dev_render(tilt):
    ((args, kw),) = tilt.calls["helm"]
    values = kw.get("values", [])
    return render(*[str(ROOT / v) for v in values], release=kw.get("name", "release"))


def k8s_dir_objects(tilt) -> list[dict]:
    docs = []
    for f in manifests_from(tilt):
        docs += [d for d in yaml.safe_load_all((ROOT / f).read_text()) if d]
    return docs


def test_three_image_builds_one_per_target(tilt):
    builds = tilt.calls["docker_build"]
    assert len(builds) == 3
    targets = {kw["target"]: args[0] for args, kw in builds}
    assert set(targets) == set(COMPONENTS)
    for args, kw in builds:
        assert kw.get("context", args[1] if len(args) > 1 else None) == "."
        assert kw.get("dockerfile", "Dockerfile") == "Dockerfile"
    dockerfile = (ROOT / "Dockerfile").read_text()
    for target in COMPONENTS:
        assert re.search(rf"^FROM \S+ AS {re.escape(target)}$", dockerfile, re.M), f"Dockerfile has no target {target}"


def test_chart_installed_with_dev_values(tilt):
    ((args, kw),) = tilt.calls["helm"]
    assert args[0] == "charts/sparkle-community"
    assert kw["values"] == ["k8s/dev-values.yaml"]
    assert kw["name"] == "sparkle"
    helm_blobs = [a[0] for a, _ in tilt.calls["k8s_yaml"] if isinstance(a[0], dict) and "__helm__" in a[0]]
    assert len(helm_blobs) == 1, "the rendered chart is passed to k8s_yaml"


def test_dev_dependencies_from_k8s_dir(tilt):
    files = manifests_from(tilt)
    assert set(files) == {"k8s/postgres.yaml", "k8s/redis.yaml", "k8s/jaeger.yaml"}
    for f in files:
        assert (ROOT / f).exists()
    kinds = {(d["kind"], d["metadata"]["name"]) for d in k8s_dir_objects(tilt)}
    for name in ("postgres", "redis", "jaeger"):
        assert ("Deployment", name) in kinds and ("Service", name) in kinds


def test_images_built_are_the_images_deployed(tilt):
    refs = {args[0] for args, _ in tilt.calls["docker_build"]}
    r = dev_render(tilt)
    deployed = set()
    for _, spec in r.pod_specs():
        for c in spec["containers"]:
            deployed.add(c["image"].split("@")[0].rsplit(":", 1)[0])
    assert deployed == refs, "every chart image is built by Tilt, and only those"


def test_resources_select_existing_objects(tilt, resources):
    objects = {(d["kind"].lower(), d["metadata"]["name"]) for d in dev_render(tilt).docs}
    objects |= {(d["kind"].lower(), d["metadata"]["name"]) for d in k8s_dir_objects(tilt)}
    workloads = {name for kind, name in objects if kind in ("deployment", "job", "statefulset")}
    for name, res in resources.items():
        if res["workload"]:
            assert res["workload"] in workloads, f"{name}: no workload {res['workload']}"
        for sel in res.get("objects", []):
            obj_name, kind = sel.split(":")[:2]
            assert (kind.lower(), obj_name) in objects, f"{name}: no object {sel}"


def test_resource_ordering(resources):
    for component in COMPONENTS:
        deps = resources[component].get("resource_deps", [])
        assert "migrate" in deps, f"{component} waits for the migration"
        assert "redis" in deps
    assert "postgres" in resources["migrate"]["resource_deps"]
    # Every dependency is a declared resource, and there is no cycle.
    graph = {n: set(r.get("resource_deps", [])) for n, r in resources.items()}
    for n, deps in graph.items():
        assert deps <= set(graph), f"{n} depends on unknown {deps - set(graph)}"
    seen, stack = set(), []

    def visit(n):
        assert n not in stack, f"cycle through {n}"
        if n in seen:
            return
        stack.append(n)
        for d in graph[n]:
            visit(d)
        stack.pop()
        seen.add(n)

    for n in graph:
        visit(n)


def test_migrate_is_a_plain_job_in_dev(tilt, resources):
    r = dev_render(tilt)
    (job,) = r.kind("Job")
    assert job["metadata"]["name"] == resources["migrate"]["workload"]
    assert not any(k.startswith("helm.sh/") for k in job["metadata"].get("annotations", {}))
    assert r.kind("Pod") == [], "no helm test Pod applied as a plain Pod by Tilt"


def test_port_forwards(resources):
    assert (8080, 8080) in forwards(resources["command-api"])
    assert (8081, 8080) in forwards(resources["query-api"])
    assert (16686, 16686) in forwards(resources["jaeger"])
    locals_ = [local for res in resources.values() for local, _ in forwards(res)]
    assert len(locals_) == len(set(locals_)), "local ports are unique"


def test_labels(resources):
    for name, res in resources.items():
        assert res.get("labels"), f"{name} has no label"
