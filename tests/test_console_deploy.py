"""The autoscaling and dashboard files: they parse, and they read only metrics gearworker exports."""

from __future__ import annotations

import json
import re

import yaml
from support import ROOT

from gearworker.exporter.collect import ServerState, render
from gearworker.metrics.prometheus import Metrics
from gearworker.protocol import StatusRow

DASHBOARD = ROOT / "deploy" / "grafana-dashboard.json"
DEPLOY_MD = ROOT / "docs" / "deploy.md"


def exported_names() -> set[str]:
    """Every metric name the exporter and a worker write (histogram and counter suffixes included)."""
    text = render([ServerState("gm:4730", True, [StatusRow("f", 3, 1, 2)], "1.1.20")], {"f": 1}, failed_store_up=True)
    worker = Metrics(process_metrics=False)
    worker.job_started("f")
    worker.job_finished("f", "complete", 0.1)
    worker.set_connection("gm:4730", "connected")
    text += worker.render()
    return {line.split("{")[0].split(" ")[0] for line in text.decode().splitlines() if line and line[0] != "#"}


def test_the_grafana_dashboard_reads_only_metrics_we_export() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 10
    used = {m for e in exprs for m in re.findall(r"\b(gearman_\w+|gearworker_\w+)", e)}
    assert used <= exported_names(), used - exported_names()
    assert {"gearman_jobs_waiting", "gearman_jobs_running", "gearman_workers", "gearworker_failed_jobs"} <= used
    assert "gearworker_job_duration_seconds_bucket" in used  # p50/p95
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert variables == {"datasource", "server", "function"}


def test_the_keda_and_hpa_examples_parse_and_scale_on_jobs_waiting() -> None:
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", DEPLOY_MD.read_text(), re.S)]
    kinds = {b.get("kind"): b for b in blocks if isinstance(b, dict) and "kind" in b}
    trigger = kinds["ScaledObject"]["spec"]["triggers"][0]
    assert trigger["type"] == "prometheus" and "gearman_jobs_waiting" in trigger["metadata"]["query"]
    assert float(trigger["metadata"]["threshold"]) > 0
    hpa = kinds["HorizontalPodAutoscaler"]["spec"]["metrics"][0]["external"]
    assert hpa["metric"]["name"] == "gearman_jobs_waiting" and hpa["target"]["type"] == "AverageValue"
    (rules,) = [b for b in blocks if isinstance(b, dict) and "externalRules" in b]
    assert rules["externalRules"][0]["name"]["as"] == "gearman_jobs_waiting"


def test_the_exporter_text_has_the_common_exporters_names_and_waiting_is_total_minus_running() -> None:
    text = render(
        [ServerState("gm1:4730", True, [StatusRow("resize", 5, 2, 3)], "1.1.20"), ServerState("gm2:4730", False)],
        {"resize": 4},
        failed_store_up=True,
    ).decode()
    lines = set(text.splitlines())
    assert 'gearman_up{server="gm1:4730"} 1' in lines and 'gearman_up{server="gm2:4730"} 0' in lines
    assert 'gearman_jobs{server="gm1:4730",function="resize"} 5' in lines
    assert 'gearman_jobs_running{server="gm1:4730",function="resize"} 2' in lines
    assert 'gearman_jobs_waiting{server="gm1:4730",function="resize"} 3' in lines
    assert 'gearman_workers{server="gm1:4730",function="resize"} 3' in lines
    assert 'gearman_version_info{server="gm1:4730",version="1.1.20"} 1' in lines
    assert 'gearworker_failed_jobs{function="resize"} 4' in lines
    assert "# TYPE gearman_jobs_waiting gauge" in lines
    odd = render([ServerState('a"b\\c', True, [StatusRow("x\ny", 1, 0, 0)])]).decode()
    assert 'gearman_jobs{server="a\\"b\\\\c",function="x\\ny"} 1' in odd.splitlines()
