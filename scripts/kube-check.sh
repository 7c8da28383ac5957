#!/usr/bin/env bash
# Validate examples/kubernetes/ddcolor-job.yaml without a cluster (run by .ci/run):
#  1. kubectl reads it as the objects it declares (`kubectl annotate --local`, which needs no
#     API server; `apply --dry-run=client` does need one for discovery);
#  2. every field of every object is one the Kubernetes API defines, with the right type,
#     checked against the generated models of the official Python client (Debian's
#     python3-kubernetes, API 1.22): a misspelt field or a string where a list goes fails;
#  3. the recipe is consistent: an Indexed Job whose completions, parallelism and
#     DDCOLOR_SHARDS agree, one GPU per pod, the cache URL from a Secret.
# The checker is tried on a copy with a misspelt field first, which it must refuse.
set -euo pipefail
cd "$(dirname "$0")/.."
manifest="${1:-examples/kubernetes/ddcolor-job.yaml}"
py=/usr/bin/python3
if ! command -v kubectl >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubernetes-client) >/dev/null
fi
if ! "$py" -c 'import kubernetes, yaml' 2>/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-kubernetes) >/dev/null
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

check() { # MANIFEST
  kubectl annotate --local --dry-run=client -o json -f "$1" ddcolor/checked=yes >"$work/objects.json"
  "$py" - "$work/objects.json" <<'EOF'
import json, re, sys
import kubernetes.client as k8s

def model(type_name):
    return getattr(k8s, type_name, None)

def walk(value, type_name, where):
    """Check `value` against the client's type `type_name` (as in openapi_types)."""
    if type_name.startswith("list["):
        if not isinstance(value, list):
            raise SystemExit(f"{where}: expected a list")
        for i, v in enumerate(value):
            walk(v, type_name[5:-1], f"{where}[{i}]")
        return
    if type_name.startswith("dict("):
        if not isinstance(value, dict):
            raise SystemExit(f"{where}: expected a map")
        inner = re.match(r"dict\(str, (.*)\)$", type_name).group(1)
        for k, v in value.items():
            walk(v, inner, f"{where}.{k}")
        return
    scalar = {"str": str, "int": int, "bool": bool, "float": (int, float), "object": object,
              "datetime": str, "date": str}
    if type_name in scalar:
        if type_name == "int" and isinstance(value, bool):
            raise SystemExit(f"{where}: expected a number")
        if not isinstance(value, scalar[type_name]):
            raise SystemExit(f"{where}: expected {type_name}, got {value!r}")
        return
    cls = model(type_name)
    if cls is None:
        raise SystemExit(f"{where}: unknown type {type_name}")
    if not isinstance(value, dict):
        raise SystemExit(f"{where}: expected an object ({type_name})")
    by_json = {j: p for p, j in cls.attribute_map.items()}
    for key, v in value.items():
        if key not in by_json:
            raise SystemExit(f"{where}: {type_name} has no field {key!r}")
        walk(v, cls.openapi_types[by_json[key]], f"{where}.{key}")

objects = json.load(open(sys.argv[1]))
objects = objects.get("items", [objects]) if objects.get("kind") == "List" else [objects]
jobs = 0
for o in objects:
    group, _, version = o["apiVersion"].rpartition("/")
    name = (group.split(".")[0].capitalize() if group else "") + version.capitalize() + o["kind"]
    name = name[0].upper() + name[1:]
    if model(name.replace("Batch", "")) is None and model(name) is None:
        raise SystemExit(f"unknown kind {o['apiVersion']} {o['kind']}")
    walk(o, name if model(name) else name.replace("Batch", ""), o["kind"])
    if o["kind"] == "Job":
        jobs += 1
        spec = o["spec"]
        pod = spec["template"]["spec"]
        env = {e["name"]: e for c in pod["containers"] for e in c.get("env", [])}
        assert spec.get("completionMode") == "Indexed", "not an Indexed Job"
        n = spec["completions"]
        assert spec.get("parallelism") == n, "parallelism differs from completions"
        assert int(env["DDCOLOR_SHARDS"]["value"]) == n, "DDCOLOR_SHARDS differs from completions"
        assert "secretKeyRef" in env["DDCOLOR_CACHE"].get("valueFrom", {}), "cache URL not from a Secret"
        for c in pod["containers"]:
            assert c["resources"]["limits"].get("nvidia.com/gpu") in (1, "1"), "not one GPU per pod"
assert jobs == 1, f"{jobs} Jobs"
print(f"{len(objects)} object(s) valid against the Kubernetes {k8s.__version__} API models")
EOF
}

sed 's/completionMode:/completionMod:/' "$manifest" >"$work/misspelt.yaml"
if check "$work/misspelt.yaml" >/dev/null 2>&1; then
  echo "kube-check: FAILED: a misspelt field was not caught" >&2
  exit 1
fi
check "$manifest"
echo "kube-check: $manifest ok"
