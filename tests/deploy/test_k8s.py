"""The Kubernetes overlays agree with the code: topics, ports, probes, settings, Kafka principals, config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from shopbotly.common.config import SecretRef, load_config
from shopbotly.common.topics import Topic, registry
from shopbotly.console.materializer import topic_roles
from shopbotly.mapper.domain import compile_tenant

from .conftest import K8S, OVERLAYS, SERVICES, Rendered, declared_env, service_settings

pytestmark = pytest.mark.unit

TENANT_SECRETS_MOUNT = "/var/run/secrets/shopbotly/tenants"
# The console reads the tenants file (its mapping playground) but resolves none of its secrets.
WITHOUT_TENANT_SECRETS = {"console"}
# Values for settings taken from Secrets when a rendered environment is validated: what a real one looks like.
SECRET_STUBS = {
    "SHOPBOTLY_CONSOLE_OPERATORS": json.dumps([{"name": "stub", "sha256": "0" * 64, "scopes": ["read"]}]),
}
SECRET_STUB = "stub-from-secret-at-least-32-characters"


def _containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    return list(workload["spec"]["template"]["spec"]["containers"])


def _settings(r: Rendered, name: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The service's Settings built from the rendered environment (Secret values stubbed)."""
    cls = service_settings(SERVICES[name][1])
    assert cls is not None, f"{name}: no shopbotly.<svc>.settings.Settings"
    with monkeypatch.context() as m:
        for var, value in r.container_env(r.workloads()[name]).items():
            m.setenv(var, value if isinstance(value, str) else SECRET_STUBS.get(var, SECRET_STUB))
        return cls()


def _consumer_group(settings: Any) -> str | None:
    for attr in ("consumer_group", "group_id", "app_id"):
        if isinstance(getattr(settings, attr, None), str):
            return str(getattr(settings, attr))
    return None


def _acl_covers(acl: dict[str, Any], kind: str, name: str) -> bool:
    res = acl["resource"]
    if res["type"] != kind:
        return False
    if res.get("patternType", "literal") == "prefix":
        return name.startswith(res["name"])
    return bool(res["name"] == name)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kafka_topics_are_the_registry_with_the_overlays_settings(
    rendered: dict[str, Rendered], overlay: str
) -> None:
    r = rendered[overlay]
    env = r.configmap("shopbotly-env")
    min_isr = env.get("SHOPBOTLY_KAFKA_MIN_INSYNC_REPLICAS")
    expected = registry(
        env["SHOPBOTLY_KAFKA_TOPIC_PREFIX"],
        partitions=int(env["SHOPBOTLY_KAFKA_PARTITIONS"]),
        min_insync_replicas=int(min_isr) if min_isr else None,
    )
    topics = {t["spec"]["topicName"]: t["spec"] for t in r.of_kind("KafkaTopic")}
    assert sorted(topics) == sorted(s.name for s in expected.values())
    for spec in expected.values():
        actual = topics[spec.name]
        assert actual["partitions"] == spec.partitions, spec.name
        assert {k: str(v) for k, v in actual["config"].items()} == spec.configs, spec.name
        assert actual["replicas"] == int(env["SHOPBOTLY_KAFKA_REPLICATION_FACTOR"]), spec.name


def test_production_topics_have_replication_3_and_min_insync_2(rendered: dict[str, Rendered]) -> None:
    prod = rendered["prod"]
    env = prod.configmap("shopbotly-env")
    assert env["SHOPBOTLY_ENVIRONMENT"] == "production"
    assert env["SHOPBOTLY_KAFKA_REPLICATION_FACTOR"] == "3"
    assert env["SHOPBOTLY_KAFKA_MIN_INSYNC_REPLICAS"] == "2"
    for topic in prod.of_kind("KafkaTopic"):
        assert topic["spec"]["replicas"] == 3
        assert topic["spec"]["config"]["min.insync.replicas"] == "2"
    kafka = prod.one("Kafka", "shopbotly-kafka")["spec"]["kafka"]["config"]
    assert kafka["default.replication.factor"] == 3 and kafka["min.insync.replicas"] == 2
    pool = prod.one("KafkaNodePool", "dual-role")
    assert pool["spec"]["replicas"] >= 3 and "broker" in pool["spec"]["roles"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_service_listens_on_its_port_with_probes_on_healthz_and_readyz(
    rendered: dict[str, Rendered], overlay: str
) -> None:
    r = rendered[overlay]
    workloads = r.workloads()
    assert sorted(workloads) == sorted(SERVICES)
    for name, (port, _) in SERVICES.items():
        (container,) = _containers(workloads[name])
        assert container["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}], name
        assert r.container_env(workloads[name])["SHOPBOTLY_PORT"] == str(port), name
        for probe, path in (
            ("startupProbe", "/healthz"),
            ("livenessProbe", "/healthz"),
            ("readinessProbe", "/readyz"),
        ):
            assert container[probe]["httpGet"] == {"path": path, "port": "http"}, f"{name} {probe}"
        service = r.one("Service", name)
        assert service["spec"]["ports"] == [
            {"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}
        ], name
        assert service["spec"]["selector"] == {"app.kubernetes.io/name": name}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_shopbotly_env_var_is_a_settings_field(rendered: dict[str, Rendered], overlay: str) -> None:
    r = rendered[overlay]
    unknown = []
    for name, workload in r.workloads().items():
        declared = declared_env(SERVICES[name][1])
        for var in r.container_env(workload):
            if var.startswith("SHOPBOTLY_") and var not in declared:
                unknown.append(f"{name}: {var}")
    assert not unknown, (
        "environment variables that no Settings class declares (ServiceSettings, KafkaSettings or the "
        f"service's shopbotly.<svc>.settings.Settings): {unknown}"
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_start_under_their_settings_classes(
    rendered: dict[str, Rendered], overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rendered environment (Secret values stubbed) passes each service's own Settings validation."""
    r = rendered[overlay]
    for name in r.workloads():
        settings = _settings(r, name, monkeypatch)
        assert settings.environment == r.configmap("shopbotly-env")["SHOPBOTLY_ENVIRONMENT"]
        assert settings.kafka.security_protocol == "SASL_SSL"
        assert settings.port == SERVICES[name][0]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_authenticates_to_kafka_as_its_own_kafkauser(
    rendered: dict[str, Rendered], overlay: str
) -> None:
    r = rendered[overlay]
    users = {u["metadata"]["name"]: u for u in r.of_kind("KafkaUser")}
    topic_names = {t["spec"]["topicName"] for t in r.of_kind("KafkaTopic")}
    ca_secret = "shopbotly-kafka-cluster-ca-cert"
    for name, workload in r.workloads().items():
        env = r.container_env(workload)
        user = env["SHOPBOTLY_KAFKA_SASL_USERNAME"]
        assert user == f"shopbotly-{name}" and user in users, name
        assert env["SHOPBOTLY_KAFKA_SASL_PASSWORD"] == {"secretKeyRef": {"name": user, "key": "password"}}
        assert users[user]["spec"]["authentication"]["type"] == "scram-sha-512"
        volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
        assert volumes["kafka-ca"]["secret"]["secretName"] == ca_secret
        (container,) = _containers(workload)
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert env["SHOPBOTLY_KAFKA_SSL_CAFILE"] == mounts["kafka-ca"] + "/ca.crt"
    # Literal topic ACLs name topics that exist; a typo would leave a service without access.
    for user in users.values():
        for acl in user["spec"]["authorization"]["acls"]:
            res = acl["resource"]
            if res["type"] == "topic" and res.get("patternType", "literal") == "literal":
                assert res["name"] in topic_names, f"{user['metadata']['name']}: {res['name']}"
    bootstrap = r.configmap("shopbotly-env")["SHOPBOTLY_KAFKA_BOOTSTRAP"]
    kafka = r.one("Kafka", "shopbotly-kafka")["spec"]["kafka"]
    (listener,) = [x for x in kafka["listeners"] if x["name"] == "tls"]
    assert bootstrap == f"shopbotly-kafka-kafka-bootstrap:{listener['port']}"
    assert listener["tls"] is True and listener["authentication"]["type"] == "scram-sha-512"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kafka_users_may_use_the_consumer_groups_the_services_join(
    rendered: dict[str, Rendered], overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = rendered[overlay]
    users = {u["metadata"]["name"]: u for u in r.of_kind("KafkaUser")}
    prefix = r.configmap("shopbotly-env")["SHOPBOTLY_KAFKA_TOPIC_PREFIX"]
    for name in ("mapper", "crm-writer"):
        group = _consumer_group(_settings(r, name, monkeypatch))
        assert group, f"{name}: Settings exposes no consumer group (consumer_group, group_id or app_id)"
        # Named after the topic prefix, so another stack on the same cluster (another prefix) has its own.
        assert group.startswith(prefix), f"{name}: group {group!r} does not carry the topic prefix {prefix!r}"
        acls = users[f"shopbotly-{name}"]["spec"]["authorization"]["acls"]
        assert any(_acl_covers(a, "group", group) and "Read" in a["operations"] for a in acls), (name, group)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_console_kafkauser_reads_its_model_and_writes_only_where_redrive_sends(
    rendered: dict[str, Rendered], overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read on the topics its read model follows and on the ledger (the redrive skips applied commands);
    Write only on the origin topics a redrive copies dead letters back into."""
    r = rendered[overlay]
    kafka = _settings(r, "console", monkeypatch).kafka
    acls = r.one("KafkaUser", "shopbotly-console")["spec"]["authorization"]["acls"]
    reads = [*topic_roles(kafka), kafka.topic(Topic.CRM_LEDGER)]
    for topic in reads:
        assert any(_acl_covers(a, "topic", topic) and "Read" in a["operations"] for a in acls), topic
    writable = {a["resource"]["name"] for a in acls if "Write" in a["operations"]}
    assert writable == {kafka.topic(Topic.RAW_EVENTS), kafka.topic(Topic.CRM_COMMANDS)}
    assert all(a["resource"]["type"] == "topic" for a in acls), "the console joins no consumer group"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ingest_kafkauser_writes_raw_events_and_reads_and_writes_its_idempotency_records(
    rendered: dict[str, Rendered], overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every ingest replica writes Idempotency-Key claims and follows all of them (no consumer group)."""
    r = rendered[overlay]
    kafka = _settings(r, "ingest", monkeypatch).kafka
    acls = r.one("KafkaUser", "shopbotly-ingest")["spec"]["authorization"]["acls"]
    records = kafka.topic(Topic.LEAD_IDEMPOTENCY)
    for operation in ("Read", "Write", "Describe"):
        assert any(_acl_covers(a, "topic", records) and operation in a["operations"] for a in acls), operation
    writable = {a["resource"]["name"] for a in acls if "Write" in a["operations"]}
    assert writable == {kafka.topic(Topic.RAW_EVENTS), records}
    assert all(a["resource"]["type"] == "topic" for a in acls), "ingest joins no consumer group"


def test_keda_scales_on_the_consumer_group_and_topic_each_service_uses(
    rendered: dict[str, Rendered], monkeypatch: pytest.MonkeyPatch
) -> None:
    prod = rendered["prod"]
    env = prod.configmap("shopbotly-env")
    topics = {
        spec.logical.value: spec.name for spec in registry(env["SHOPBOTLY_KAFKA_TOPIC_PREFIX"]).values()
    }
    consumes = {"mapper": topics["raw-events.v1"], "crm-writer": topics["crm-commands.v1"]}
    scaled = {s["spec"]["scaleTargetRef"]["name"]: s for s in prod.of_kind("ScaledObject")}
    assert sorted(scaled) == sorted(consumes)
    for name, topic in consumes.items():
        (trigger,) = scaled[name]["spec"]["triggers"]
        meta = trigger["metadata"]
        assert meta["topic"] == topic
        assert meta["bootstrapServers"] == env["SHOPBOTLY_KAFKA_BOOTSTRAP"]
        assert meta["consumerGroup"] == _consumer_group(_settings(prod, name, monkeypatch)), name
        assert scaled[name]["spec"]["maxReplicaCount"] <= int(env["SHOPBOTLY_KAFKA_PARTITIONS"])
        assert "replicas" not in prod.workloads()[name]["spec"], f"{name}: replicas fights KEDA's HPA"
    for hpa in prod.of_kind("HorizontalPodAutoscaler"):
        target = prod.workloads()[hpa["spec"]["scaleTargetRef"]["name"]]
        assert target["kind"] == hpa["spec"]["scaleTargetRef"]["kind"]
        assert "replicas" not in target["spec"]


# Every topic each service reads, from its code: mapper (app.py: its faust agent's group over raw-events and
# crm-results; statefeed.py: orders and tickets, every partition), crm-writer (engine: crm-commands in its
# group; ledger.py: crm-ledger, every partition), order-reader (materializer.py: orders and tickets).
READS: dict[str, tuple[Topic, ...]] = {
    "mapper": (Topic.RAW_EVENTS, Topic.CRM_RESULTS, Topic.ORDERS, Topic.TICKETS),
    "crm-writer": (Topic.CRM_COMMANDS, Topic.CRM_LEDGER),
    "order-reader": (Topic.ORDERS, Topic.TICKETS),
}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kafka_users_may_read_every_topic_their_service_reads(
    rendered: dict[str, Rendered], overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = rendered[overlay]
    for name, topics in READS.items():
        kafka = _settings(r, name, monkeypatch).kafka
        acls = r.one("KafkaUser", f"shopbotly-{name}")["spec"]["authorization"]["acls"]
        unreadable = [
            kafka.topic(t)
            for t in topics
            if not any(_acl_covers(a, "topic", kafka.topic(t)) and "Read" in a["operations"] for a in acls)
        ]
        assert unreadable == [], f"{name}: its KafkaUser may not read {unreadable}"


def _autoscalers(r: Rendered) -> list[tuple[str, str, int, list[str]]]:
    """(kind, target workload, max replicas, topics its lag triggers watch) of every HPA and ScaledObject."""
    found = [
        ("HorizontalPodAutoscaler", h["spec"]["scaleTargetRef"]["name"], h["spec"]["maxReplicas"], [])
        for h in r.of_kind("HorizontalPodAutoscaler")
    ]
    for s in r.of_kind("ScaledObject"):
        topics = [t["metadata"]["topic"] for t in s["spec"]["triggers"] if t["type"] == "kafka"]
        found.append(
            ("ScaledObject", s["spec"]["scaleTargetRef"]["name"], s["spec"]["maxReplicaCount"], topics)
        )
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_autoscaling_stops_at_the_partitions_of_what_a_consumer_group_member_consumes(
    rendered: dict[str, Rendered], overlay: str
) -> None:
    """docs/architecture.md, "Scaling model": a consumer group gives each partition to one member, so replicas
    past the partition count idle. Every autoscaler of a service that joins a consumer group (its KafkaUser
    may read a group) stops at the fewest partitions among the topics the service reads; a lag trigger
    watches a topic the service reads. Partitions come from the KafkaTopic manifests."""
    r = rendered[overlay]
    partitions = {t["spec"]["topicName"]: int(t["spec"]["partitions"]) for t in r.of_kind("KafkaTopic")}
    users = {u["metadata"]["labels"]["app.kubernetes.io/name"]: u for u in r.of_kind("KafkaUser")}
    bounded = 0
    for kind, target, max_replicas, trigger_topics in _autoscalers(r):
        acls = users[target]["spec"]["authorization"]["acls"]
        reads = [
            a["resource"]["name"]
            for a in acls
            if a["resource"]["type"] == "topic"
            and a["resource"].get("patternType", "literal") == "literal"
            and "Read" in a["operations"]
        ]
        for topic in trigger_topics:
            assert topic in reads, f"{kind}/{target}: triggers on {topic}, which {target} does not read"
            assert max_replicas <= partitions[topic], (kind, target, max_replicas, topic, partitions[topic])
        if any(a["resource"]["type"] == "group" and "Read" in a["operations"] for a in acls):
            bound = min(partitions[t] for t in reads)
            assert max_replicas <= bound, (
                f"{kind}/{target}: max {max_replicas} replicas, but {target} consumes in a group from "
                f"topics with {bound} partitions: the replicas past {bound} would idle"
            )
            bounded += 1
    # The overlays with autoscaling bound both group consumers (mapper, crm-writer); the others have none.
    assert bounded in (0, 2), f"{overlay}: {bounded} autoscaled group consumers"
    if overlay == "prod":
        assert bounded == 2


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_run_non_root_read_only_without_capabilities(
    rendered: dict[str, Rendered], overlay: str
) -> None:
    r = rendered[overlay]
    pdbs = {
        p["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
        for p in r.of_kind("PodDisruptionBudget")
    }
    accounts = {a["metadata"]["name"]: a for a in r.of_kind("ServiceAccount")}
    for name, workload in r.workloads().items():
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["automountServiceAccountToken"] is False
        assert accounts[pod["serviceAccountName"]]["automountServiceAccountToken"] is False
        assert {c["topologyKey"] for c in pod["topologySpreadConstraints"]} >= {
            "kubernetes.io/hostname",
            "topology.kubernetes.io/zone",
        }
        assert name in pdbs, f"{name} has no PodDisruptionBudget"
        (container,) = pod["containers"]
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert "limits" in container["resources"] and "requests" in container["resources"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert "emptyDir" in volumes[mounts["/tmp"]], f"{name}: /tmp must be an emptyDir"
        data_dir = r.container_env(workload).get("SHOPBOTLY_DATA_DIR")
        if data_dir is not None:
            assert data_dir in mounts, f"{name}: SHOPBOTLY_DATA_DIR {data_dir} is not a mounted volume"
    reader = r.workloads()["order-reader"]
    assert reader["kind"] == "StatefulSet"
    assert [t["metadata"]["name"] for t in reader["spec"]["volumeClaimTemplates"]] == ["data"]


def test_tenants_configmap_is_a_valid_config_with_file_secrets_under_the_mount(tmp_path: Path) -> None:
    path = K8S / "base" / "config" / "shopbotly.yaml"
    config = load_config(path)
    assert config.tenants
    refs: list[SecretRef] = []

    def walk(node: Any) -> None:
        if isinstance(node, SecretRef):
            refs.append(node)
        elif isinstance(node, BaseModel):
            for field in type(node).model_fields:
                walk(getattr(node, field))
        elif isinstance(node, dict):
            for v in node.values():
                walk(v)
        elif isinstance(node, list | tuple):
            for v in node:
                walk(v)

    walk(config)
    assert refs, "the example tenant references no secret"
    # The mapper compiles the tenant's presets and rules (unknown preset rules, fields, connections fail).
    for name, tenant in config.tenants.items():
        compile_tenant(name, tenant)
    for ref in refs:
        assert ref.file is not None and str(ref.file).startswith(TENANT_SECRETS_MOUNT + "/"), ref.describe()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_config_and_tenant_secrets_are_mounted_where_the_settings_point(
    rendered: dict[str, Rendered], overlay: str
) -> None:
    r = rendered[overlay]
    config_path = Path(r.configmap("shopbotly-env")["SHOPBOTLY_CONFIG"])
    assert config_path.name in r.configmap("shopbotly-config")
    for name, workload in r.workloads().items():
        pod = workload["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
        config_mount = mounts[str(config_path.parent)]
        assert volumes[config_mount["name"]]["configMap"]["name"].startswith("shopbotly-config-"), name
        if name in WITHOUT_TENANT_SECRETS:
            assert TENANT_SECRETS_MOUNT not in mounts, f"{name} needs no tenant secrets"
            assert all(
                v.get("secret", {}).get("secretName") != "shopbotly-tenant-secrets" for v in volumes.values()
            )
            continue
        secrets = mounts[TENANT_SECRETS_MOUNT]
        assert volumes[secrets["name"]]["secret"]["secretName"] == "shopbotly-tenant-secrets", name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_select_only_shopbotly_pods(rendered: dict[str, Rendered], overlay: str) -> None:
    policies = rendered[overlay].of_kind("NetworkPolicy")
    assert any(
        p["spec"]["policyTypes"] == ["Ingress", "Egress"]
        and "ingress" not in p["spec"]
        and "egress" not in p["spec"]
        for p in policies
    ), "no default-deny policy"
    for policy in policies:
        (expr,) = policy["spec"]["podSelector"]["matchExpressions"]
        assert expr["key"] == "app.kubernetes.io/name" and set(expr["values"]) <= set(SERVICES)


def test_prometheus_rule_matches_the_compose_scrape_labels(rendered: dict[str, Rendered]) -> None:
    """Alerts select job="shopbotly", which both the ServiceMonitor and deploy/observability set."""
    rule = yaml.safe_load((K8S / "components" / "monitoring" / "prometheusrule.yaml").read_text())
    monitor = yaml.safe_load((K8S / "components" / "monitoring" / "servicemonitor.yaml").read_text())
    scrape = yaml.safe_load((K8S.parent / "observability" / "prometheus.yml").read_text())
    (job,) = [j for j in scrape["scrape_configs"] if j["job_name"] == "shopbotly"]
    relabel = monitor["spec"]["endpoints"][0]["relabelings"]
    assert {"action": "replace", "targetLabel": "job", "replacement": job["job_name"]} in relabel
    exprs = [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]
    assert exprs and all(f'job="{job["job_name"]}"' in e for e in exprs)
    compose_services = {t["labels"]["service"] for t in job["static_configs"]}
    assert compose_services == set(SERVICES)
    scraped = {
        s["metadata"]["labels"]["app.kubernetes.io/name"]
        for s in rendered["prod"].of_kind("Service")
        if s["metadata"]["labels"].get("shopbotly.io/metrics") == "true"
    }
    assert scraped == compose_services, "the ServiceMonitor and prometheus.yml scrape the same services"
