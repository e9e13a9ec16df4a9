"""values.yaml, values.schema.json and the README stay in step."""

import importlib.util
import json

import pytest
import yaml

from conftest import CHART, ROOT, RenderError, render

spec = importlib.util.spec_from_file_location("values_table", ROOT / "scripts" / "chart-values-table.py")
values_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(values_table)

VALUES_TEXT = (CHART / "values.yaml").read_text()
VALUES = yaml.safe_load(VALUES_TEXT)
SCHEMA = json.loads((CHART / "values.schema.json").read_text())


def resolve(node):
    while "$ref" in node:
        node = SCHEMA["definitions"][node["$ref"].split("/")[-1]]
    return node


def schema_at(path: str):
    node = SCHEMA
    for part in path.split("."):
        node = resolve(node)
        assert node.get("type") == "object" or "object" in node.get("type", []), f"{path}: not an object in the schema"
        props = node.get("properties", {})
        assert part in props, f"values.schema.json has no {path}"
        node = props[part]
    return resolve(node)


def test_every_value_is_documented():
    rows = values_table.parse(VALUES_TEXT)  # raises on an undocumented value
    assert len(rows) > 150


def test_readme_values_table_is_current():
    readme = (CHART / "README.md").read_text()
    assert values_table.render_readme(readme, VALUES_TEXT) == readme, "run: python3 scripts/chart-values-table.py"


def test_schema_covers_every_documented_value():
    for path, value, _, _ in values_table.parse(VALUES_TEXT):
        schema_at(path)


def test_schema_is_closed_everywhere():
    """Every object of our own values refuses unknown keys (k8s pass-through
    objects like affinity or resources excepted: the API server checks them)."""
    open_objects = []

    def walk(node, path):
        node = resolve(node)
        if "properties" in node:
            if node.get("additionalProperties") is not False:
                open_objects.append(path)
            for k, v in node["properties"].items():
                walk(v, f"{path}.{k}" if path else k)

    walk(SCHEMA, "")
    assert open_objects == []
    assert SCHEMA["$schema"] == "http://json-schema.org/draft-07/schema#"


def test_defaults_validate_against_schema_types():
    """Spot-check a few enums/patterns against the defaults."""
    assert VALUES["otel"]["protocol"] in schema_at("otel.protocol")["enum"]
    assert schema_at("commandApi.replicas")["minimum"] == 0
    assert schema_at("otel.protocol")["enum"] == ["grpc", "http/protobuf"]


@pytest.mark.parametrize(
    "bad",
    [
        "commandApi.replicaz=2",
        "queryApi.image.tag=bad tag",
        "projector.keda.lagCount=0",
        "otel.traces.sampler=sometimes",
        "serviceMonitor.interval=30",
        "commandApi.service.type=ExternalName",
        "commandApi.image.digest=sha256:abc",
    ],
)
def test_schema_rejects(bad):
    with pytest.raises(RenderError, match="schema"):
        render("minimal-values.yaml", sets=[bad])


def test_defaults_fail_with_one_clear_message():
    with pytest.raises(RenderError) as err:
        render(str(CHART / "values.yaml"))
    msg = str(err.value)
    for want in ("postgresql.url or postgresql.existingSecret", "redis.url or redis.existingSecret", "auth.jwtSecret or auth.existingSecret"):
        assert want in msg
