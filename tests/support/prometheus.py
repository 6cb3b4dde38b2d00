"""Reading Prometheus expositions and dashboard queries, and running Debian's Prometheus against a test stack."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import yaml

from stack.services import free_port

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboards" / "voice-agent.json"
SUFFIXES = {
    "histogram": ("_bucket", "_sum", "_count"),
    "counter": ("_total", "_created"),
    "summary": ("_sum", "_count"),
}
PROMQL_WORDS = {
    "sum", "avg", "min", "max", "count", "rate", "irate", "increase", "histogram_quantile", "by", "without", "on",
    "ignoring", "group_left", "group_right", "and", "or", "unless", "offset", "bool", "topk", "bottomk", "abs",
}  # fmt: skip


def exported_names(exposition: str) -> set[str]:
    """Every series name an exposition can have, from its TYPE lines (a labelled metric may have no sample yet)."""
    names = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", exposition, re.MULTILINE):
        base = name.removesuffix("_total")
        names |= {name, base, *(base + s for s in SUFFIXES.get(kind, ()))}
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads."""
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"", " ", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", " ", expr)
    words = re.findall(r"(?<![\w:])[A-Za-z_:][\w:]*+(?!\s*\()", expr)
    return {w for w in words if w not in PROMQL_WORDS and not re.fullmatch(r"\d+\w*", w)}


def dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel["targets"]]


@contextmanager
def prometheus(targets: dict[str, str]) -> Iterator[str]:
    """Runs Prometheus on loopback scraping `targets` (job -> host:port) every second; yields its base URL."""
    binary = shutil.which("prometheus")
    if binary is None:
        raise RuntimeError("prometheus is missing: run `bash scripts/setup --test` (it installs Debian's package)")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="prometheus-") as tmp:
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [t]}]} for job, t in targets.items()],
        }
        (Path(tmp) / "prometheus.yml").write_text(yaml.safe_dump(config))
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={tmp}/prometheus.yml",
                f"--storage.tsdb.path={tmp}/data",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(Path(tmp) / "prometheus.log", "w"),  # noqa: SIM115
        )
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


def wait_until_up(base: str, jobs: set[str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    health: dict[str, str] = {}
    while time.monotonic() < deadline:
        try:
            active = httpx.get(f"{base}/api/v1/targets", timeout=2).json()["data"]["activeTargets"]
            health = {t["labels"]["job"]: t["health"] for t in active}
            if jobs <= {job for job, state in health.items() if state == "up"}:
                return
        except (httpx.HTTPError, KeyError, ValueError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"Prometheus did not scrape every service within {timeout:.0f} s: {health}")


def query(base: str, expr: str) -> list[dict]:
    body = httpx.get(f"{base}/api/v1/query", params={"query": expr}, timeout=5).json()
    assert body["status"] == "success", (expr, body)
    return body["data"]["result"]
