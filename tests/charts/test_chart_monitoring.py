"""Prometheus and Grafana of the application chart (monitoring.enabled), and the infra chart's exporters."""

import json

import yaml

from .conftest import APP, INFRA, find, one, render

MONITORING = APP / "ci" / "04-monitoring-values.yaml"
DASHBOARD = APP / "dashboards" / "claimcheck.json"


def test_monitoring_is_off_by_default() -> None:
    docs = render(APP)
    assert not [d for d in docs if d["metadata"]["name"].endswith(("-prometheus", "-grafana", "-grafana-admin"))]


def test_prometheus_scrapes_apps_broker_haproxy_and_minio() -> None:
    docs = render(APP, MONITORING)
    config = yaml.safe_load(one(docs, "ConfigMap", "claimcheck-prometheus")["data"]["prometheus.yml"])
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"claimcheck", "rabbitmq", "rabbitmq-queues", "haproxy", "minio"}
    assert jobs["minio"]["metrics_path"] == "/minio/v2/metrics/cluster"
    assert jobs["rabbitmq-queues"]["params"] == {"family": ["queue_coarse_metrics"]}
    for job in jobs.values():
        assert job["kubernetes_sd_configs"][0]["namespaces"]["names"] == ["claimcheck"]
    deployment = one(docs, "Deployment", "claimcheck-prometheus")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "claimcheck-prometheus"
    assert one(docs, "Service", "claimcheck-prometheus")["spec"]["ports"][0]["nodePort"] == 30090


def test_prometheus_may_only_read_pods_of_its_namespaces() -> None:
    docs = render(APP, MONITORING, sets=("infra.namespace=infra",))
    roles = find(docs, "Role", "claimcheck-prometheus")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["claimcheck", "infra"]
    for role in roles:
        assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
    assert not [d for d in find(docs, "ClusterRole") if "prometheus" in d["metadata"]["name"]]


def test_grafana_is_provisioned_with_prometheus_and_the_dashboard() -> None:
    docs = render(APP, MONITORING)
    data = one(docs, "ConfigMap", "claimcheck-grafana")["data"]
    assert json.loads(data["claimcheck.json"]) == json.loads(DASHBOARD.read_text())
    source = yaml.safe_load(data["datasources.yaml"])["datasources"][0]
    assert source["url"] == "http://claimcheck-prometheus.claimcheck.svc.cluster.local:9090"
    assert yaml.safe_load(data["dashboards.yaml"])["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    secret = one(docs, "Secret", "claimcheck-grafana-admin")
    assert set(secret["data"]) == {"admin-user", "admin-password"}


def test_every_dashboard_expression_uses_the_datasource_variable() -> None:
    document = json.loads(DASHBOARD.read_text())
    panels = [p for p in document["panels"] if p["type"] != "row"]
    assert panels and all(p["datasource"]["uid"] == "${datasource}" and p["description"] for p in panels)


def test_infra_exposes_haproxy_and_minio_metrics() -> None:
    docs = render(INFRA)
    haproxy = next(d for d in find(docs, "ConfigMap") if "haproxy" in d["metadata"]["name"])
    assert "use-service prometheus-exporter if { path /metrics }" in json.dumps(haproxy["data"])
    minio = next(d for d in find(docs, "StatefulSet") if "minio" in d["metadata"]["name"])
    env = {e["name"]: e.get("value") for e in minio["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MINIO_PROMETHEUS_AUTH_TYPE"] == "public"
