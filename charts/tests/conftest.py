"""Shared helpers for the chart tests: render the chart with `helm template`
and give the tests the parsed documents.

These tests read rendered YAML only; they need helm on PATH or in .tools/bin
(scripts/install-tools.sh), no cluster.
"""

from __future__ import annotations

import functools
import os
import pathlib
import shutil
import subprocess
from dataclasses import dataclass

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "sparkle-community"
CI = CHART / "ci"
DEV_VALUES = ROOT / "k8s" / "dev-values.yaml"
RELEASE = "sparkle"
NAMESPACE = "sparkle"

COMPONENTS = ("command-api", "query-api", "projector")
VALUES_KEY = {"command-api": "commandApi", "query-api": "queryApi", "projector": "projector"}

# Every value set the checks render: the chart's ci/ sets and the Tilt dev values.
VALUE_SETS = sorted(p.name for p in CI.glob("*.yaml")) + ["dev-values.yaml"]


def value_file(name: str) -> pathlib.Path:
    return DEV_VALUES if name == "dev-values.yaml" else CI / name


def helm_bin() -> str:
    local = ROOT / ".tools" / "bin" / "helm"
    if local.exists():
        return str(local)
    found = shutil.which("helm")
    if not found:
        pytest.fail("helm not found: run scripts/install-tools.sh (installs it into .tools/bin)")
    return found


class RenderError(Exception):
    pass


@dataclass(frozen=True)
class Rendered:
    docs: tuple

    def kind(self, kind: str) -> list[dict]:
        return [d for d in self.docs if d["kind"] == kind]

    def get(self, kind: str, name: str) -> dict:
        matches = [d for d in self.docs if d["kind"] == kind and d["metadata"]["name"] == name]
        assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
        return matches[0]

    def find(self, kind: str, name: str) -> dict | None:
        matches = [d for d in self.docs if d["kind"] == kind and d["metadata"]["name"] == name]
        return matches[0] if matches else None

    def component(self, kind: str, component: str) -> dict | None:
        """The object of `kind` whose component label is `component`."""
        matches = [
            d for d in self.kind(kind)
            if d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component
        ]
        assert len(matches) <= 1, f"more than one {kind} for {component}"
        return matches[0] if matches else None

    def deployment(self, component: str) -> dict:
        d = self.component("Deployment", component)
        assert d is not None, f"no Deployment for {component}"
        return d

    def pod_specs(self):
        """(owner description, pod spec) for every pod the chart can create."""
        for d in self.docs:
            if d["kind"] in ("Deployment", "Job"):
                yield f'{d["kind"]}/{d["metadata"]["name"]}', d["spec"]["template"]["spec"]
            elif d["kind"] == "Pod":
                yield f'Pod/{d["metadata"]["name"]}', d["spec"]


@functools.lru_cache(maxsize=None)
def _render(values: tuple, sets: tuple, release: str) -> Rendered:
    cmd = [helm_bin(), "template", release, str(CHART), "--namespace", NAMESPACE]
    for v in values:
        cmd += ["-f", str(v)]
    for s in sets:
        cmd += ["--set", s]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HELM_NAMESPACE": NAMESPACE})
    if proc.returncode != 0:
        raise RenderError(proc.stderr)
    docs = tuple(d for d in yaml.safe_load_all(proc.stdout) if d)
    return Rendered(docs)


def render(*value_sets: str, sets: tuple | list = (), release: str = RELEASE) -> Rendered:
    """Render with value files (names from VALUE_SETS, or paths) and --set overrides."""
    files = tuple(str(value_file(v)) if not os.path.sep in v else v for v in value_sets)
    return _render(files, tuple(sets), release)


def container(pod_spec: dict, name: str | None = None) -> dict:
    cs = pod_spec["containers"]
    if name is None:
        assert len(cs) == 1
        return cs[0]
    return next(c for c in cs if c["name"] == name)


def env_map(c: dict) -> dict:
    return {e["name"]: e for e in c.get("env", [])}


@pytest.fixture(params=VALUE_SETS)
def rendered(request) -> Rendered:
    return render(request.param)


@pytest.fixture
def minimal() -> Rendered:
    return render("minimal-values.yaml")


@pytest.fixture
def full() -> Rendered:
    return render("full-values.yaml")
