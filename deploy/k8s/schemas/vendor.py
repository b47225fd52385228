"""Vendor the Kubernetes JSON schemas that deploy/k8s needs, pruned to what they reference.

The schemas come from the ``kubernetes-validate`` wheel on PyPI (Apache-2.0; generated from the
Kubernetes OpenAPI spec), "local-strict" flavour: additionalProperties are refused, so a typo in
a field name fails validation. Re-run after adding a kind to deploy/k8s:

    pip download --no-deps kubernetes-validate==1.37.0 -d /tmp/kv
    python deploy/k8s/schemas/vendor.py /tmp/kv/kubernetes_validate-1.37.0-py3-none-any.whl
"""

from __future__ import annotations

import json
import re
import sys
import zipfile
from pathlib import Path

K8S_VERSION = "v1.34.0"
KINDS = [  # file names in kubernetes-json-schema/<version>-local-strict/
    "configmap-v1.json",
    "secret-v1.json",
    "service-v1.json",
    "persistentvolumeclaim-v1.json",
    "deployment-apps-v1.json",
    "horizontalpodautoscaler-autoscaling-v2.json",
    "poddisruptionbudget-policy-v1.json",
    "namespace-v1.json",
]
HERE = Path(__file__).resolve().parent
_REF = re.compile(r'"\$ref":\s*"(?:/api/_definitions\.json)?#/\$defs/([^"]+)"')


def main(wheel: str) -> None:
    base = f"kubernetes_validate/kubernetes-json-schema/{K8S_VERSION}-local-strict/"
    with zipfile.ZipFile(wheel) as z:
        defs = json.loads(z.read(base + "_definitions.json"))
        kinds = {k: z.read(base + k).decode() for k in KINDS}
    all_defs = defs["$defs"]
    keep: set[str] = set()
    todo = [m for text in kinds.values() for m in _REF.findall(text)]
    while todo:
        name = todo.pop()
        if name in keep:
            continue
        keep.add(name)
        todo.extend(_REF.findall(json.dumps(all_defs[name])))
    pruned = dict(defs)
    pruned["$defs"] = {k: all_defs[k] for k in sorted(keep)}
    out = HERE / K8S_VERSION
    out.mkdir(exist_ok=True)
    (out / "_definitions.json").write_text(json.dumps(pruned, indent=1, sort_keys=True) + "\n")
    for k, text in kinds.items():
        (out / k).write_text(text if text.endswith("\n") else text + "\n")
    print(f"{len(kinds)} kinds, {len(keep)} of {len(all_defs)} definitions -> {out}")


if __name__ == "__main__":
    main(sys.argv[1])
