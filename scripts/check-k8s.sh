#!/usr/bin/env bash
# Offline checks of the Kubernetes delivery (chart, dev manifests, Dockerfile,
# Tiltfile). No cluster, no Docker, no network beyond the first tool install.
#
#   bash scripts/check-k8s.sh            # everything
#   KEEP_RENDERED=1 bash scripts/check-k8s.sh   # keep the rendered manifests
#
# Steps (each reported PASS/FAIL in the closing summary; exit 1 on any FAIL):
#   1. tools        scripts/install-tools.sh (pinned, into .tools/)
#   2. lint         helm lint --strict for every value set (ci/*.yaml and
#                   k8s/dev-values.yaml); the chart's defaults alone must FAIL
#                   with the message naming the missing credentials
#   3. render       helm template of every value set for each Kubernetes
#                   version in K8S_VERSIONS
#   4. validate     kubernetes-validate --strict against that version's
#                   OpenAPI schemas (CRD kinds: see crd_only_warnings below);
#                   also the plain manifests in k8s/
#   5. yamllint     rendered output, values files and k8s/ manifests
#   6. schema       misspelled keys and out-of-range values must make
#                   helm template fail (values.schema.json)
#   7. checkov      policy scan of every rendered value set and of the
#                   Dockerfile, skips only as listed in .checkov.yaml
#   8. pytest       charts/tests (rendered-YAML assertions + Tiltfile)
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
CHART=charts/sparkle-community
RELEASE=sparkle
NAMESPACE=sparkle
K8S_VERSIONS=(${K8S_VERSIONS:-1.29 1.31 1.33})
# Kinds that come from CRDs: kubernetes-validate has no schema for them.
CRD_GROUPS='monitoring\.coreos\.com|keda\.sh|gateway\.networking\.k8s\.io'

OUT=$(mktemp -d "${TMPDIR:-/tmp}/check-k8s.XXXXXX")
if [ "${KEEP_RENDERED:-0}" = 1 ]; then
  echo "rendered manifests kept in $OUT"
else
  trap 'rm -rf "$OUT"' EXIT
fi

SUMMARY=()
FAILED=0
if [ -t 1 ]; then GREEN=$'\033[32m' RED=$'\033[31m' OFF=$'\033[0m'; else GREEN='' RED='' OFF=''; fi
pass() { SUMMARY+=("PASS  $1"); printf '  %sPASS%s %s\n' "$GREEN" "$OFF" "$1"; }
fail() { SUMMARY+=("FAIL  $1"); FAILED=1; printf '  %sFAIL%s %s\n' "$RED" "$OFF" "$1"; }
section() { printf '\n== %s\n' "$1"; }
# run NAME CMD...: run, keep the output, show it only on failure.
run() {
  local name=$1; shift
  if "$@" >"$OUT/last.log" 2>&1; then pass "$name"; else fail "$name"; sed 's/^/      /' "$OUT/last.log" | tail -40; fi
}

# ---------------------------------------------------------------- 1. tools
section "tools"
if bash scripts/install-tools.sh; then pass "install-tools.sh"; else fail "install-tools.sh"; echo "cannot continue without tools"; exit 1; fi
export PATH="$ROOT/.tools/bin:$ROOT/.tools/venv/bin:$PATH"
export PYTHONDONTWRITEBYTECODE=1
export HELM_CACHE_HOME="$ROOT/.tools/helm/cache" HELM_CONFIG_HOME="$ROOT/.tools/helm/config" HELM_DATA_HOME="$ROOT/.tools/helm/data"
echo "helm $(helm version --short), $(kubernetes-validate --version 2>&1 | tail -1), checkov $(checkov --version 2>/dev/null), $(yamllint --version)"

VALUE_SETS=("$CHART"/ci/*.yaml k8s/dev-values.yaml)
setname() { basename "$1" .yaml; }

# ---------------------------------------------------------------- 2. lint
section "helm lint --strict"
for vs in "${VALUE_SETS[@]}"; do
  run "helm lint --strict -f $vs" helm lint --strict "$CHART" -f "$vs"
done
# The defaults have no credentials on purpose: they must fail, clearly.
defaults_fail_clearly() {
  local out
  if out=$(helm template "$RELEASE" "$CHART" 2>&1); then
    echo "helm template with the chart defaults succeeded; expected a failure naming the credentials"; return 1
  fi
  echo "$out"
  for want in "postgresql.url or postgresql.existingSecret is required" \
              "redis.url or redis.existingSecret is required" \
              "auth.jwtSecret or auth.existingSecret is required"; do
    grep -qF "$want" <<<"$out" || { echo "missing message: $want"; return 1; }
  done
}
run "defaults alone fail with a message naming the 3 credentials" defaults_fail_clearly

# ---------------------------------------------------------------- 3+4. render + validate
section "helm template | kubernetes-validate --strict (Kubernetes ${K8S_VERSIONS[*]})"
# kubernetes-validate ships schemas for built-in kinds only. A kind without a
# schema is reported as "WARN ... Couldn't find schema" and does not fail the
# run; it has no flag to ignore missing schemas selectively (--no-warn hides
# them all, which would also hide a typo in a core apiVersion). So we keep the
# warnings and fail on any that is not about one of the CRD groups we render
# on purpose (ServiceMonitor, ScaledObject/TriggerAuthentication, HTTPRoute).
# Those objects are checked structurally by charts/tests instead.
crd_only_warnings() { # $1 = validator output
  local unexpected
  unexpected=$(grep -E '^WARN' "$1" | grep -vE "api version ($CRD_GROUPS)/" || true)
  [ -z "$unexpected" ] || { echo "schema missing for a non-CRD kind:"; echo "$unexpected"; return 1; }
}
validate_file() { # $1 file, $2 version
  local log="$OUT/validate.log"
  kubernetes-validate --strict --quiet -k "$2" "$1" >"$log" 2>&1
  local rc=$?
  cat "$log"
  [ $rc -eq 0 ] && crd_only_warnings "$log"
}
render() { # $1 value set, $2 kube version, $3 output file
  helm template "$RELEASE" "$CHART" --namespace "$NAMESPACE" --kube-version "$2" -f "$1" >"$3"
}
mkdir -p "$OUT/rendered" "$OUT/checkov"
for vs in "${VALUE_SETS[@]}"; do
  for kv in "${K8S_VERSIONS[@]}"; do
    f="$OUT/rendered/$(setname "$vs")-k$kv.yaml"
    if render "$vs" "$kv" "$f" 2>"$OUT/last.log"; then
      run "validate $(setname "$vs") on k8s $kv ($(grep -c '^kind:' "$f") objects)" validate_file "$f" "$kv"
    else
      fail "render $(setname "$vs") for k8s $kv"; sed 's/^/      /' "$OUT/last.log"
    fi
  done
  cp "$OUT/rendered/$(setname "$vs")-k${K8S_VERSIONS[-1]}.yaml" "$OUT/checkov/$(setname "$vs").yaml" 2>/dev/null || true
done
for m in k8s/postgres.yaml k8s/redis.yaml k8s/jaeger.yaml; do
  for kv in "${K8S_VERSIONS[@]}"; do
    run "validate $m on k8s $kv" validate_file "$m" "$kv"
  done
done

# Rendered kinds per value set (for the docs).
echo
echo "rendered kinds per value set:"
for f in "$OUT"/checkov/*.yaml; do
  printf '  %-16s %s\n' "$(basename "$f" .yaml)" "$(grep '^kind:' "$f" | awk '{print $2}' | sort | uniq -c | awk '{printf "%s %s, ", $1, $2}' | sed 's/, $//')"
done

# ---------------------------------------------------------------- 5. yamllint
section "yamllint"
run "yamllint rendered manifests" yamllint -c .yamllint.yaml -f parsable "$OUT"/rendered
run "yamllint values files and k8s/ manifests" yamllint -c .yamllint.yaml -f parsable \
  "$CHART/values.yaml" "$CHART"/ci k8s "$CHART/Chart.yaml" .checkov.yaml
run "values.schema.json is valid JSON" python -m json.tool "$CHART/values.schema.json"

# ---------------------------------------------------------------- 6. schema negatives
section "values.schema.json rejects bad values"
MIN="$CHART/ci/minimal-values.yaml"
must_fail() { # $1 expected text, rest = helm template args
  local want=$1; shift
  local out
  if out=$(helm template "$RELEASE" "$CHART" -f "$MIN" "$@" 2>&1); then
    echo "helm template $* succeeded; expected it to fail"; return 1
  fi
  grep -qF -- "$want" <<<"$out" || { echo "expected '$want' in:"; echo "$out"; return 1; }
}
run "misspelled key: --set commandApi.replicaz=2" must_fail "replicaz" --set commandApi.replicaz=2
run "misspelled top-level key: --set ingres.enabled=true" must_fail "ingres" --set ingres.enabled=true
run "misspelled nested key: --set projector.keda.lagcount=5" must_fail "lagcount" --set projector.keda.lagcount=5
run "negative replicas: --set queryApi.replicas=-1" must_fail "replicas" --set queryApi.replicas=-1
run "OTEL protocol enum: --set otel.protocol=http" must_fail "otel.protocol" --set otel.protocol=http
run "log format enum: --set logging.format=xml" must_fail "logging.format" --set logging.format=xml
run "Postgres URL pattern: --set postgresql.url=mysql://x" must_fail "postgresql.url" --set postgresql.url=mysql://x
run "short JWT key rejected" must_fail "at least 32 characters" --set auth.jwtSecret=short
run "HTTPRoute without parentRefs rejected" must_fail "httpRoute.parentRefs is required" --set httpRoute.enabled=true
run "KEDA without address rejected" must_fail "projector.keda.address" --set projector.keda.enabled=true

# ---------------------------------------------------------------- 7. checkov
section "checkov (offline, --skip-download)"
# One scan per value set: checkov's graph checks (e.g. "pod has a
# NetworkPolicy") connect objects across all files of one scan, so scanning
# the sets together would let one install's objects satisfy another's.
checkov_scan() { # $1 framework, $2 file, $3 report name
  checkov --skip-download --config-file .checkov.yaml --framework "$1" -f "$2" \
    -o json >"$OUT/$3.json" 2>"$OUT/$3.err"
  local rc=$?
  python - "$OUT/$3.json" <<'PY'
import json, sys
try:
    data = json.load(open(sys.argv[1]))
except ValueError:
    print(open(sys.argv[1]).read()[-2000:]); sys.exit(1)
reports = data if isinstance(data, list) else [data]
p = f = s = 0
skipped = {}
for r in reports:
    summ = r.get("summary", {})
    p += summ.get("passed", 0); f += summ.get("failed", 0); s += summ.get("skipped", 0)
    for c in r.get("results", {}).get("failed_checks", []):
        print(f"FAILED {c['check_id']} {c['check_name']}: {c['resource']} ({c['file_path']}:{c['file_line_range']})")
    for c in r.get("results", {}).get("skipped_checks", []):
        skipped.setdefault(c["check_id"], set()).add((c.get("check_result") or {}).get("suppress_comment", ""))
print(f"checkov summary: passed={p} failed={f} skipped-by-annotation={s}")
for cid in sorted(skipped):
    print(f"  annotation skip {cid}: {'; '.join(sorted(x for x in skipped[cid] if x))}")
if p == 0:
    print("checkov scanned nothing (passed=0): treat as a failure")
    sys.exit(1)
PY
  local prc=$?
  [ $rc -eq 0 ] && [ $prc -eq 0 ]
}
for f in "$OUT"/checkov/*.yaml; do
  run "checkov kubernetes: $(basename "$f" .yaml)" checkov_scan kubernetes "$f" "checkov-$(basename "$f" .yaml)"
  grep -E '^(checkov summary|  annotation skip)' "$OUT/last.log" | sed 's/^/      /'
done
run "checkov dockerfile: Dockerfile" checkov_scan dockerfile Dockerfile checkov-dockerfile
grep -E '^checkov summary' "$OUT/last.log" | sed 's/^/      /'
echo "  checks skipped for every scan (.checkov.yaml), with reasons:"
python - <<'PY'
import re
lines = open(".checkov.yaml").read().splitlines()
reason = ""
for line in lines:
    m = re.match(r"\s*#\s*(.*)", line)
    if m and reason is not None:
        reason = m.group(1) if not reason else reason + " " + m.group(1)
        continue
    m = re.match(r"\s*-\s*(CKV\S+)", line)
    if m:
        print(f"      {m.group(1)}: {reason}")
    reason = ""
PY

# ---------------------------------------------------------------- 8. pytest
section "pytest charts/tests"
if python -m pytest -q -p no:cacheprovider charts/tests 2>&1 | tee "$OUT/pytest.log" | tail -15; [ "${PIPESTATUS[0]}" -eq 0 ]; then
  pass "pytest charts/tests ($(grep -Eo '[0-9]+ passed' "$OUT/pytest.log" | tail -1))"
else
  fail "pytest charts/tests"
fi

# ---------------------------------------------------------------- summary
section "summary"
npass=0; nfail=0
for line in "${SUMMARY[@]}"; do
  case $line in PASS*) npass=$((npass + 1)) ;; *) nfail=$((nfail + 1)); echo "$line" ;; esac
done
echo "check-k8s: $npass passed, $nfail failed"
exit $FAILED
