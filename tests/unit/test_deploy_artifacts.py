"""The deployment artifacts validate against their schemas and stay in step with the settings.

Docker cannot run here, so the files are checked statically:

- ``deploy/compose/docker-compose.yml`` against the Compose Specification JSON schema that
  check-jsonschema ships (read from its package data: its CLI is not needed), and its cluster
  override ``docker-compose.cluster.yml`` (3 brokers, a Redis Cluster of 6) alone and merged;
- ``deploy/k8s/*.yaml`` against the Kubernetes JSON schemas vendored under
  ``deploy/k8s/schemas/`` (from the kubernetes-validate wheel, strict flavour: unknown fields fail),
  and the cluster overlay ``deploy/k8s/cluster/`` (its ConfigMap patch merged over the base);
- every setting a deployed process reads (the worker's ``attnrec.settings.Settings``, and what
  the trainer's and the dashboard's classes add: not the export/gate options the trainer
  inherits from ``attnrec models``, nor the hand-run tools' classes) is set in the compose
  environment and in the k8s ConfigMap/Secret wiring, or listed there as optional / not
  applicable / given on the command line;
- ``docs/CONFIGURATION.md`` is what ``deploy/gen_config_doc.py`` generates today.
"""

from __future__ import annotations

import importlib.util
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from attnrec.apps.cli import settings_classes
from attnrec.apps.dashboard.settings import DashboardSettings
from attnrec.exporter.settings import ModelsSettings, TrainerSettings
from referencing import Registry, Resource
from ruamel.yaml import YAML

from attnrec.settings import Settings, is_secret

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "compose" / "docker-compose.yml"
COMPOSE_CLUSTER = DEPLOY / "compose" / "docker-compose.cluster.yml"
K8S = DEPLOY / "k8s"
K8S_CLUSTER = K8S / "cluster"
K8S_SCHEMAS = K8S / "schemas" / "v1.34.0"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"

#: The deployed processes' settings: the worker's, the trainer's, the dashboard's.
DEPLOYED = (Settings, TrainerSettings, DashboardSettings)
SECRET_FIELDS = {n for cls in DEPLOYED for n in cls.model_fields if is_secret(cls, n)}
#: What the deployed processes read: the base, plus what the trainer and the dashboard add (the
#: trainer's export and gate options are ``attnrec models``' and come on its command line).
DEPLOYED_FIELDS = set(Settings.model_fields) | {
    n for cls in DEPLOYED[1:] for n in cls.model_fields if n not in ModelsSettings.model_fields}
ALL_VARS = {"ATTNREC_" + n.upper() for n in DEPLOYED_FIELDS}
ANY_VARS = {"ATTNREC_" + n.upper() for cls in settings_classes() for n in cls.model_fields}


def load_yaml_docs(path: Path) -> list[Any]:
    return [d for d in YAML(typ="safe", pure=True).load_all(path.read_text()) if d is not None]


def var(field: str) -> str:
    return "ATTNREC_" + field.upper()


def settings_from_env(env: dict[str, str]) -> Settings:
    """Each deployed process's settings built from a deployment's environment block (secrets
    given dummy values); returns the worker's."""
    kw: dict[str, Any] = {}
    for k, v in env.items():
        assert k in ANY_VARS, f"{k} is not a setting (typo?)"
        name = k.removeprefix("ATTNREC_").lower()
        kw[name] = "dummy-secret" if name in SECRET_FIELDS or str(v).startswith("${") else v
    for cls in DEPLOYED[1:]:
        cls(**{k: v for k, v in kw.items() if k in cls.model_fields})
    return Settings(**{k: v for k, v in kw.items() if k in Settings.model_fields})


# ----------------------------------------------------------------------------- docs


def test_configuration_doc_is_up_to_date() -> None:
    spec = importlib.util.spec_from_file_location("gen_config_doc", DEPLOY / "gen_config_doc.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--check"]) == 0, "docs/CONFIGURATION.md is stale: run python deploy/gen_config_doc.py"
    text = (REPO / "docs" / "CONFIGURATION.md").read_text()
    for field in (n for cls in settings_classes() for n in cls.model_fields):
        assert var(field) in text, f"{var(field)} missing from docs/CONFIGURATION.md"


# ----------------------------------------------------------------------------- compose


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    (doc,) = load_yaml_docs(COMPOSE)
    return doc


def compose_schema() -> dict[str, Any]:
    spec = importlib.util.find_spec("check_jsonschema")  # package data only: no import of its CLI
    assert spec is not None and spec.submodule_search_locations, "check-jsonschema (dev dependency) is not installed"
    path = Path(list(spec.submodule_search_locations)[0]) / "builtin_schemas" / "vendor" / "compose-spec.json"
    return json.loads(path.read_text())


def test_compose_file_matches_the_compose_spec(compose: dict[str, Any]) -> None:
    schema = compose_schema()
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors[:10])


def test_the_compose_schema_rejects_a_typo(compose: dict[str, Any]) -> None:
    bad = json.loads(json.dumps(compose))
    bad["services"]["worker"]["stop_grace_periode"] = "45s"
    assert list(jsonschema.Draft202012Validator(compose_schema()).iter_errors(bad))


def test_compose_has_the_one_host_topology(compose: dict[str, Any]) -> None:
    svc = compose["services"]
    assert {"kafka", "redis", "worker", "trainer", "dashboard", "prometheus", "grafana"} <= set(svc)
    # Apache Kafka in KRaft mode: the broker is its own controller, no ZooKeeper anywhere
    kafka = svc["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"]
    assert not any("zookeeper" in name for name in svc)
    # Redis with AOF
    cmd = svc["redis"]["command"]
    assert cmd[cmd.index("--appendonly") + 1] == "yes"
    # N workers, trainer every 10 minutes, the dashboard
    assert svc["worker"]["deploy"]["replicas"] >= 2
    assert svc["worker"]["build"]["target"] == "worker" and svc["trainer"]["build"]["target"] == "trainer"
    assert svc["trainer"]["command"][:3] == ["trainer", "--every", "10m"]
    assert svc["dashboard"]["command"][0] == "dashboard"
    assert svc["dashboard"]["image"] == svc["worker"]["image"], "the dashboard runs from the torch-free image"
    # SIGTERM grace covers the worker's 30 s batch-finishing limit
    assert svc["worker"]["stop_signal"] == "SIGTERM"
    assert int(svc["worker"]["stop_grace_period"].rstrip("s")) > 30
    # only the dashboard and Grafana are published, on loopback
    for name, s in svc.items():
        for port in s.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    # the registry: one writer (trainer), read-only for the others
    mounts = {name: [m for m in s.get("volumes", []) if str(m).startswith("registry:")] for name, s in svc.items()}
    assert mounts["trainer"] == ["registry:/var/lib/attnrec/registry"]
    assert mounts["worker"] == ["registry:/var/lib/attnrec/registry:ro"]


def test_compose_prometheus_and_grafana_are_wired(compose: dict[str, Any]) -> None:
    svc = compose["services"]
    (prom,) = load_yaml_docs(COMPOSE.parent / "prometheus.yml")
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    w = jobs["attnrec-worker"]
    assert w["dns_sd_configs"][0]["names"] == ["worker"] and w["dns_sd_configs"][0]["port"] == 6066
    assert w["authorization"]["credentials_file"] == "/run/secrets/api_token"
    assert compose["secrets"]["api_token"]["environment"] == "ATTNREC_API_TOKEN"
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml:ro" in svc["prometheus"]["volumes"]
    # Grafana loads the dashboard JSON of deploy/grafana/ through the provisioning file
    mounts = dict(m.rsplit(":", 1)[0].split(":", 1) for m in svc["grafana"]["volumes"] if m.startswith("."))
    assert (COMPOSE.parent / "../grafana").resolve() == DEPLOY / "grafana"
    dash_target = mounts["../grafana"]
    (prov,) = load_yaml_docs(COMPOSE.parent / "grafana" / "provisioning" / "dashboards" / "attnrec.yml")
    assert prov["providers"][0]["options"]["path"] == dash_target
    (ds,) = load_yaml_docs(COMPOSE.parent / "grafana" / "provisioning" / "datasources" / "prometheus.yml")
    assert ds["datasources"][0]["url"] == "http://prometheus:9090"
    for f in sorted((DEPLOY / "grafana").glob("**/*.json")):
        json.loads(f.read_text())  # the other engineer's dashboards are valid JSON


def test_every_setting_is_in_the_compose_environment(compose: dict[str, Any]) -> None:
    env = compose["x-attnrec-env"]
    optional, na = compose["x-attnrec-optional"], compose["x-attnrec-not-applicable"]
    missing = sorted(ALL_VARS - set(env) - set(optional) - set(na))
    assert not missing, f"settings missing from deploy/compose/docker-compose.yml x-attnrec-env: {missing}"
    unknown = sorted((set(env) | set(optional) | set(na)) - ALL_VARS)
    assert not unknown, f"not settings (typo, or a setting was removed): {unknown}"
    for field in SECRET_FIELDS:
        if var(field) in env:
            assert re.fullmatch(r"\$\{[A-Z0-9_]+:\?[^}]*\}", env[var(field)]), (
                f"{var(field)} must come from .env, not the file"
            )
    for name in ("worker", "trainer", "dashboard"):
        assert compose["services"][name]["environment"] == env, f"{name} does not use x-attnrec-env"
    s = settings_from_env(env)  # the values are valid settings
    assert s.web_port == 6066 and s.partitions >= compose["services"]["worker"]["deploy"]["replicas"]
    example = (COMPOSE.parent / "env.example").read_text()
    for ref in set(re.findall(r"\$\{([A-Z0-9_]+):\?", COMPOSE.read_text())):
        assert re.search(rf"^{ref}=$", example, re.M), f"{ref} is required by the compose file but not in env.example"
    assert ".env" in (COMPOSE.parent / ".gitignore").read_text().split()


def _merge(base: Any, over: Any) -> Any:
    """docker compose's merge of an override, as far as these files need it: mappings merged
    key by key, anything else replaced."""
    if isinstance(base, dict) and isinstance(over, dict):
        return {k: _merge(base[k], v) if k in base else v for k, v in over.items()} | {
            k: v for k, v in base.items() if k not in over}
    return over


def test_the_cluster_compose_override_is_a_3_broker_kafka_and_a_redis_cluster(compose: dict[str, Any]) -> None:
    (over,) = load_yaml_docs(COMPOSE_CLUSTER)
    merged = _merge(compose, over)
    validator = jsonschema.Draft202012Validator(compose_schema())
    for name, doc in (("override", over), ("merged", merged)):
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
        assert not errors, name + ": " + "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors[:10])
    svc = merged["services"]
    brokers = {n: svc[n]["environment"] for n in ("kafka", "kafka-2", "kafka-3")}
    voters = {b["KAFKA_CONTROLLER_QUORUM_VOTERS"] for b in brokers.values()}
    assert voters == {"1@kafka:9093,2@kafka-2:9093,3@kafka-3:9093"}
    assert sorted(b["KAFKA_NODE_ID"] for b in brokers.values()) == ["1", "2", "3"]
    for b in brokers.values():
        assert (b["KAFKA_DEFAULT_REPLICATION_FACTOR"], b["KAFKA_MIN_INSYNC_REPLICAS"]) == ("3", "2")
        assert (b["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"], b["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"]) == ("3", "2")
        assert b["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "3"
    nodes = ["redis", *(f"redis-{i}" for i in range(2, 7))]
    for n in nodes:
        cmd = svc[n]["command"]
        assert cmd[cmd.index("--cluster-enabled") + 1] == "yes" and cmd[cmd.index("--appendonly") + 1] == "yes", n
    init = " ".join(svc["redis-cluster-init"]["command"])
    assert "--cluster-replicas 1" in init and all(f"{n} " in init or f"{n};" in init for n in nodes)
    for volume in [v.split(":")[0] for n in (*brokers, *nodes) for v in svc[n].get("volumes", [])]:
        assert volume in merged["volumes"], f"volume {volume} is not declared"
    # the attnrec processes: every broker, Redis Cluster nodes that exist, replicated topics
    for name in ("worker", "trainer", "dashboard"):
        env = svc[name]["environment"]
        s = settings_from_env(env)
        assert s.redis_is_cluster and (s.replication_factor, s.min_insync_replicas) == (3, 2)
        assert {h.split(":")[0] for h in s.kafka_bootstrap.split(",")} == set(brokers)
        from attnrec.units import parse_redis_cluster_url

        assert {h for h, _ in parse_redis_cluster_url(s.redis_url).nodes} <= set(nodes)
        assert env["ATTNREC_API_TOKEN"] == compose["x-attnrec-env"]["ATTNREC_API_TOKEN"], "the rest is the base's"


# ----------------------------------------------------------------------------- kubernetes


def k8s_docs() -> list[tuple[Path, dict[str, Any]]]:
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        out.extend((path, d) for d in load_yaml_docs(path))
    return out


def k8s_schema_file(api_version: str, kind: str) -> Path:
    group, _, version = api_version.rpartition("/")
    group = group.split(".")[0]
    name = f"{kind.lower()}-{group}-{version}.json" if group else f"{kind.lower()}-{version}.json"
    return K8S_SCHEMAS / name


def test_kubernetes_manifests_match_their_schemas() -> None:
    defs = json.loads((K8S_SCHEMAS / "_definitions.json").read_text())
    registry = Registry().with_resource(defs["$id"], Resource.from_contents(defs))
    docs = k8s_docs()
    assert len(docs) >= 9
    for path, doc in docs:
        schema_path = k8s_schema_file(doc["apiVersion"], doc["kind"])
        assert schema_path.exists(), (
            f"{path.name}: no vendored schema for {doc['apiVersion']} {doc['kind']} (deploy/k8s/schemas/vendor.py)"
        )
        schema = json.loads(schema_path.read_text())
        validator = jsonschema.Draft202012Validator(schema, registry=registry)
        errors = list(validator.iter_errors(doc))
        where = f"{path.name} {doc['kind']}/{doc['metadata']['name']}"
        assert not errors, (
            where + ":\n" + "\n".join(f"  {'/'.join(map(str, e.path))}: {e.message[:200]}" for e in errors[:10])
        )


def test_the_vendored_schemas_reject_a_typo() -> None:
    defs = json.loads((K8S_SCHEMAS / "_definitions.json").read_text())
    registry = Registry().with_resource(defs["$id"], Resource.from_contents(defs))
    schema = json.loads(k8s_schema_file("apps/v1", "Deployment").read_text())
    (doc,) = [d for p, d in k8s_docs() if d["kind"] == "Deployment" and d["metadata"]["name"] == "attnrec-worker"]
    doc = json.loads(json.dumps(doc))
    doc["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}
    assert list(jsonschema.Draft202012Validator(schema, registry=registry).iter_errors(doc))


def by_kind(kind: str, name: str) -> dict[str, Any]:
    hits = [d for _, d in k8s_docs() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(hits) == 1, f"{kind}/{name}: {len(hits)} found"
    return hits[0]


def test_every_setting_is_in_the_kubernetes_config() -> None:
    cm = by_kind("ConfigMap", "attnrec-config")
    data = cm["data"]
    ann = cm["metadata"]["annotations"]
    secret_vars = set(ann["attnrec/secret-settings"].split())
    na = set(ann["attnrec/not-applicable-settings"].split()) | set(ann["attnrec/command-line-settings"].split())
    missing = sorted(ALL_VARS - set(data) - secret_vars - na)
    assert not missing, f"settings missing from deploy/k8s/configmap.yaml: {missing}"
    assert not (set(data) | secret_vars | na) - ALL_VARS
    assert not {var(f) for f in SECRET_FIELDS} & set(data), "a secret in the ConfigMap"
    assert {var(f) for f in SECRET_FIELDS} <= secret_vars
    settings_from_env({**data, **{v: "dummy" for v in secret_vars}})  # the values are valid settings
    secret = by_kind("Secret", "attnrec-secrets")
    for name in ("attnrec-worker", "attnrec-dashboard"):
        (c,) = by_kind("Deployment", name)["spec"]["template"]["spec"]["containers"]
        assert {"configMapRef": {"name": "attnrec-config"}} in c["envFrom"]
        refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"] if "secretKeyRef" in e.get("valueFrom", {})}
        assert set(refs) == secret_vars, f"{name}: secrets wired {sorted(refs)}"
        for ref in refs.values():
            assert ref["name"] == "attnrec-secrets" and ref["key"] in secret["stringData"]
        assert refs["ATTNREC_API_TOKEN"].get("optional") is not True, "the token must be present (off-loopback bind)"


def test_worker_deployment_probes_resources_and_registry() -> None:
    dep = by_kind("Deployment", "attnrec-worker")
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["web"] == 6066
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe"):
        assert ports[c[probe]["httpGet"]["port"]] == 6066
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["terminationGracePeriodSeconds"] > 30
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0
    data = by_kind("ConfigMap", "attnrec-config")["data"]
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["registry"]["mountPath"] == data["ATTNREC_REGISTRY"] and mounts["registry"]["readOnly"] is True
    claim = {v["name"]: v for v in pod["volumes"]}["registry"]["persistentVolumeClaim"]["claimName"]
    pvc = by_kind("PersistentVolumeClaim", claim)
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"], "the registry is shared by every pod"
    (t,) = by_kind("Deployment", "attnrec-trainer")["spec"]["template"]["spec"]["containers"]
    assert any(m["mountPath"] == data["ATTNREC_REGISTRY"] and not m.get("readOnly") for m in t["volumeMounts"])
    for _, doc in k8s_docs():
        if doc["kind"] == "Deployment":
            for cont in doc["spec"]["template"]["spec"]["containers"]:
                req = cont["resources"]["requests"]
                assert "cpu" in req and "memory" in req, f"{doc['metadata']['name']}: resource requests"
                if cont.get("securityContext", {}).get("readOnlyRootFilesystem"):
                    # faust writes its data dir into the working directory (ATTNREC_HOME)
                    writable = {m["mountPath"] for m in cont["volumeMounts"] if not m.get("readOnly")}
                    assert data["ATTNREC_HOME"] in writable, f"{doc['metadata']['name']}: ATTNREC_HOME not writable"


def test_dashboard_is_probed_on_its_open_health_path(compose: dict[str, Any]) -> None:
    """The dashboard needs a token off loopback, except /healthz, which its probes use."""
    (c,) = by_kind("Deployment", "attnrec-dashboard")["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"]["path"] == "/healthz" and ports[c[probe]["httpGet"]["port"]] == 6080
    hc = compose["services"]["dashboard"]["healthcheck"]["test"]
    assert any("6080/healthz" in part for part in hc)


def test_autoscaling_is_tied_to_consumer_lag_and_bounded_by_partitions() -> None:
    hpa = by_kind("HorizontalPodAutoscaler", "attnrec-worker")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "attnrec-worker"
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "External" and "lag" in metric["external"]["metric"]["name"]
    data = by_kind("ConfigMap", "attnrec-config")["data"]
    assert metric["external"]["metric"]["selector"]["matchLabels"]["consumergroup"] == data["ATTNREC_GROUP_ID"]
    assert hpa["spec"]["maxReplicas"] <= int(data["ATTNREC_PARTITIONS"]), "workers beyond the partition count idle"


def test_the_kubernetes_cluster_overlay_points_at_a_kafka_cluster_and_a_redis_cluster() -> None:
    (k,) = load_yaml_docs(K8S_CLUSTER / "kustomization.yaml")
    assert k["resources"] == [".."]
    (patch,) = [load_yaml_docs(K8S_CLUSTER / p["path"])[0] for p in k["patches"]]
    base = by_kind("ConfigMap", "attnrec-config")
    assert (patch["kind"], patch["metadata"]["name"]) == ("ConfigMap", base["metadata"]["name"])
    merged = {**base, "data": {**base["data"], **patch["data"]}}
    defs = json.loads((K8S_SCHEMAS / "_definitions.json").read_text())
    registry = Registry().with_resource(defs["$id"], Resource.from_contents(defs))
    schema = json.loads(k8s_schema_file("v1", "ConfigMap").read_text())
    assert not list(jsonschema.Draft202012Validator(schema, registry=registry).iter_errors(merged))
    secret_vars = base["metadata"]["annotations"]["attnrec/secret-settings"].split()
    s = settings_from_env({**merged["data"], **{v: "dummy" for v in secret_vars}})
    assert s.redis_is_cluster and len(s.kafka_bootstrap.split(",")) >= 3
    assert (s.replication_factor, s.min_insync_replicas, s.redis_wait_replicas) == (3, 2, 1)


def test_kustomization_lists_existing_files() -> None:
    (k,) = load_yaml_docs(K8S / "kustomization.yaml")
    for res in k["resources"]:
        assert (K8S / res).exists(), res
    assert "secret.example.yaml" not in k["resources"], "the example Secret must not be applied"


# ----------------------------------------------------------------------------- Dockerfile


def dockerfile_stages() -> dict[str, list[str]]:
    stages: dict[str, list[str]] = {}
    current = None
    logical: list[str] = []
    buf = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        buf += line.rstrip("\\").strip() + " "
        if line.endswith("\\"):
            continue
        logical.append(buf.strip())
        buf = ""
    for ins in logical:
        m = re.match(r"FROM\s+\S+\s+AS\s+(\S+)", ins, re.I)
        if m:
            current = m.group(1)
            stages[current] = [ins]
        elif current is not None:
            stages[current].append(ins)
    return stages


def test_dockerfile_is_multi_stage_non_root_and_the_worker_has_no_torch() -> None:
    stages = dockerfile_stages()
    assert list(stages)[-1] == "worker", "the default (last) stage is the worker image"
    assert {"build", "runtime", "worker", "trainer"} <= set(stages)
    for name in ("worker", "trainer"):
        users = [i for i in stages[name] if i.upper().startswith("USER ")]
        assert users and users[-1].split()[1].split(":")[0] not in ("0", "root"), f"{name} runs as root"
    worker = " ".join(stages["worker"])
    assert "torch" not in worker.replace("find_spec('torch')", "") and "[train]" not in worker
    assert "from=build," in worker and "from=build-train" not in worker
    assert "find_spec('torch')" in worker, "the worker image build asserts torch is absent"
    assert any(i.startswith("HEALTHCHECK") and "/healthz" in i for i in stages["worker"])
    assert any(i.startswith("EXPOSE") and "6066" in i for i in stages["worker"])
    assert "[train]" not in " ".join(stages["build"])
    for ins in stages["build"]:
        if ins.startswith("COPY"):
            for src in ins.split()[1:-1]:
                assert (REPO / src).exists(), f"Dockerfile copies missing {src}"
    # the worker's dependencies really are torch-free
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if d.lower().startswith(("torch", "onnx=", "onnxscript"))]
    assert any(d.startswith("torch") for d in project["optional-dependencies"]["train"])
    ignore = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().split()
    for pkg in ("attnrec/", "stream/", "training/", "exporter/", "apps/"):
        assert f"!{pkg}" in ignore, f"the image build context leaves out {pkg}, which the Dockerfile copies"


def test_the_worker_image_commands_work_without_torch() -> None:
    """What the worker image runs (worker, dashboard, models) imports with the train extra absent."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "for m in ('torch', 'onnx', 'onnxscript', 'matplotlib', 'pyarrow'): sys.modules[m] = None\n"
        "from attnrec.apps.cli import build_parser\n"
        "p = build_parser()\n"
        "sub = next(a for a in p._actions if a.__class__.__name__ == '_SubParsersAction')\n"
        "missing = {'worker', 'dashboard', 'models', 'replay'} - set(sub.choices)\n"
        "assert not missing, missing\n"
        "from attnrec.settings import Settings\n"
        "from attnrec.stream.app import create_app\n"
        "create_app(Settings())\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-3000:]
