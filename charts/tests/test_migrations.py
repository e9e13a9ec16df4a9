"""The migration Job: hook annotations, image, args, and what it depends on."""

import pytest

from conftest import container, env_map, render

HELM_HOOK = "helm.sh/hook"
HOOK_ANNOTATIONS = {
    "helm.sh/hook": "pre-install,pre-upgrade",
    "helm.sh/hook-delete-policy": "before-hook-creation,hook-succeeded",
    "argocd.argoproj.io/hook": "PreSync",
    "argocd.argoproj.io/hook-delete-policy": "BeforeHookCreation",
}


def job(r) -> dict:
    (j,) = r.kind("Job")
    return j


def weight(obj) -> int:
    return int(obj["metadata"]["annotations"]["helm.sh/hook-weight"])


@pytest.mark.parametrize("values", ["minimal-values.yaml", "full-values.yaml", "keda-values.yaml"])
def test_hook_job(values):
    r = render(values)
    j = job(r)
    ann = j["metadata"]["annotations"]
    for k, v in HOOK_ANNOTATIONS.items():
        assert ann[k] == v, k
    assert ann["argocd.argoproj.io/sync-wave"] == ann["helm.sh/hook-weight"]
    spec = j["spec"]["template"]["spec"]
    c = container(spec)
    assert c["args"] == ["migrate"]
    assert "command" not in c, "the image ENTRYPOINT is the command-api binary"
    assert c["image"] == container(r.deployment("command-api")["spec"]["template"]["spec"])["image"]
    assert spec["restartPolicy"] == "Never"
    env = env_map(c)
    assert "secretKeyRef" in env["DATABASE_URL"]["valueFrom"]
    assert env["MIGRATE_WAIT_SECS"]["value"] in ("120", "180")
    assert not any(k.startswith("OTEL_") for k in env)


def test_job_settings(minimal, full):
    s = job(minimal)["spec"]
    assert (s["backoffLimit"], s["activeDeadlineSeconds"], s["ttlSecondsAfterFinished"]) == (2, 280, 86400)
    assert weight(job(minimal)) == 0
    s = job(full)["spec"]
    assert (s["activeDeadlineSeconds"], s["ttlSecondsAfterFinished"]) == (290, 3600)
    assert weight(job(full)) == 5
    assert env_map(container(job(full)["spec"]["template"]["spec"]))["MIGRATE_WAIT_SECS"]["value"] == "180"


@pytest.mark.parametrize("values", ["minimal-values.yaml", "full-values.yaml", "keda-values.yaml"])
def test_hook_job_only_uses_what_exists_before_install(values):
    """A pre-install hook runs before the release's normal resources exist:
    every Secret and the ServiceAccount the Job uses must be either external
    (existingSecret / not created by the chart) or a hook of lower weight."""
    r = render(values)
    j = job(r)
    spec = j["spec"]["template"]["spec"]
    rendered_secrets = {s["metadata"]["name"]: s for s in r.kind("Secret")}
    refs = [e["valueFrom"]["secretKeyRef"] for e in container(spec)["env"] if "secretKeyRef" in e.get("valueFrom", {})]
    assert refs
    for ref in refs:
        s = rendered_secrets.get(ref["name"])
        if s is None:
            continue  # an existingSecret: created outside the release
        assert HELM_HOOK in s["metadata"].get("annotations", {}), f"{ref['name']} is not a hook resource"
        assert weight(s) < weight(j)
        assert ref["key"] in s["data"]
        assert s["metadata"]["annotations"]["argocd.argoproj.io/hook"] == "PreSync"
    sa = r.find("ServiceAccount", spec["serviceAccountName"])
    assert sa is not None and HELM_HOOK in sa["metadata"]["annotations"]
    assert weight(sa) < weight(j)
    assert sa["automountServiceAccountToken"] is False


def test_hook_secret_holds_only_the_database_url(minimal):
    secrets = {s["metadata"]["name"]: s for s in minimal.kind("Secret")}
    hook = secrets.pop("sparkle-sparkle-community-migrate-credentials")
    (release,) = secrets.values()
    assert hook["data"] == {"database-url": release["data"]["database-url"]}
    assert HELM_HOOK not in release["metadata"].get("annotations", {}), "the release Secret is a normal resource"


def test_job_env_is_least_privilege(minimal):
    """`command-api migrate` reads only the database settings."""
    env = env_map(container(job(minimal)["spec"]["template"]["spec"]))
    assert set(env) == {"DATABASE_URL", "MIGRATE_WAIT_SECS", "RUST_LOG", "LOG_FORMAT"}


def test_no_hook_secret_with_existing_secrets(full):
    assert full.kind("Secret") == [], "all credentials come from existing Secrets"


@pytest.mark.parametrize("values", ["gitops-values.yaml", "dev-values.yaml"])
def test_plain_job_when_not_a_hook(values):
    r = render(values)
    j = job(r)
    ann = j["metadata"].get("annotations", {})
    assert not any(k.startswith(("helm.sh/", "argocd.argoproj.io/")) for k in ann), ann
    assert "ttlSecondsAfterFinished" not in j["spec"], "Tilt/GitOps keep the finished Job visible"
    for s in r.kind("Secret") + r.kind("ServiceAccount"):
        assert not s["metadata"].get("annotations", {}).get(HELM_HOOK)
    spec = j["spec"]["template"]["spec"]
    assert container(spec)["args"] == ["migrate"]
    # It uses the release's own ServiceAccount and Secret.
    assert spec["serviceAccountName"] == r.deployment("command-api")["spec"]["template"]["spec"]["serviceAccountName"]


def test_migrations_can_be_disabled():
    r = render("minimal-values.yaml", sets=["migrations.enabled=false"])
    assert r.kind("Job") == []
    assert all("migrate" not in d["metadata"]["name"] for d in r.docs)
