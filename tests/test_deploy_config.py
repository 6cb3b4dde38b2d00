"""docker-compose.yml and .env.example must agree with livekit.yaml and the services' real settings."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from agent.settings import AgentSettings
from stack.services import Stack
from stack.settings import StackSettings
from tests.support.ports import loopback_ports
from token_server.settings import TokenServerSettings

REPO = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
LIVEKIT = yaml.safe_load((REPO / "livekit.yaml").read_text())
SERVICES = COMPOSE["services"]


def default(value: str) -> str:
    """'${NAME:-fallback}' -> 'fallback'; plain values unchanged."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(value))


def env_names(settings_cls) -> set[str]:
    return {name.upper() for name in settings_cls.model_fields}


def test_services_and_livekit_image():
    assert set(SERVICES) == {"redis", "livekit", "sip", "agent", "redispatch", "token-server", "prometheus", "grafana"}
    setup = (REPO / "scripts" / "setup").read_text()
    version = re.search(r"LIVEKIT_VERSION=([\d.]+)", setup).group(1)
    assert SERVICES["livekit"]["image"] == f"livekit/livekit-server:v{version}"
    assert "./livekit.yaml:/etc/livekit.yaml:ro" in SERVICES["livekit"]["volumes"]
    assert SERVICES["livekit"]["command"] == ["--config", "/etc/livekit.yaml"]


def test_livekit_yaml_ports_match_the_launcher():
    stack = StackSettings()
    assert LIVEKIT["port"] == stack.livekit_port == 7880
    assert LIVEKIT["rtc"]["tcp_port"] == stack.livekit_rtc_tcp_port == 7881
    assert LIVEKIT["rtc"]["udp_port"] == stack.livekit_rtc_udp_port
    assert LIVEKIT["prometheus"]["port"] == stack.livekit_prometheus_port == 6789
    assert "prometheus_port" not in LIVEKIT, "deprecated spelling: prometheus.port"
    assert LIVEKIT["bind_addresses"] == ["127.0.0.1"]
    assert LIVEKIT["rtc"]["use_external_ip"] is False
    assert "keys" not in LIVEKIT, "keys come from the environment, never from the file"


def launched_livekit_config(settings: StackSettings) -> dict:
    stack = Stack(settings, with_agent=False)
    try:
        return yaml.safe_load(Path(stack._livekit_config()).read_text())
    finally:
        stack.stop()


def test_each_launched_stack_gets_its_own_livekit_ports():
    ports = loopback_ports()
    config = launched_livekit_config(ports)
    assert (config["port"], config["rtc"]["tcp_port"], config["rtc"]["udp_port"], config["prometheus"]["port"]) == (
        ports.livekit_port,
        ports.livekit_rtc_tcp_port,
        ports.livekit_rtc_udp_port,
        ports.livekit_prometheus_port,
    )
    assert config["bind_addresses"] == ["127.0.0.1"]
    assert "prometheus" not in launched_livekit_config(ports.model_copy(update={"livekit_prometheus_port": 0}))


@pytest.mark.parametrize(("service", "settings_cls"), [("agent", AgentSettings), ("token-server", TokenServerSettings)])
def test_service_env_names_are_real_settings(service, settings_cls):
    env = SERVICES[service]["environment"]
    unknown = set(env) - env_names(settings_cls)
    assert not unknown, f"{service} sets variables its settings do not read: {unknown}"
    url = default(env["LIVEKIT_URL"])
    assert url == f"ws://127.0.0.1:{LIVEKIT['port']}"
    fields = settings_cls()
    assert default(env["LIVEKIT_API_KEY"]) == fields.livekit_api_key
    assert default(env["LIVEKIT_API_SECRET"]) == fields.livekit_api_secret
    assert default(env["AGENT_NAME"]) == fields.agent_name


def test_health_checks_use_the_configured_ports():
    agent, token = SERVICES["agent"], SERVICES["token-server"]
    # The agent's check reads the port the worker was given (a scaled replica's is 0: its own free port).
    assert "os.environ['AGENT_HTTP_PORT']" in " ".join(agent["healthcheck"]["test"])
    assert default(agent["environment"]["AGENT_HTTP_PORT"]) == str(AgentSettings().agent_http_port)
    assert f":{token['environment']['TOKEN_SERVER_PORT']}/healthz" in " ".join(token["healthcheck"]["test"])


def test_the_agent_service_scales():
    """`docker compose up --scale agent=N`: nothing in the agent service is one of a kind on the host."""
    agent = SERVICES["agent"]
    assert not {"container_name", "ports", "hostname"} & set(agent), "a fixed name or host port stops --scale"
    assert "replicas" not in agent.get("deploy", {}), "the replica count comes from --scale"
    env = agent["environment"]
    # Replicas share the host's network: their ports come from the environment, so N of them run with 0 (free ones).
    for name in ("AGENT_HTTP_PORT", "AGENT_METRICS_PORT", "MAX_SESSIONS"):
        assert re.fullmatch(rf"\$\{{{name}:-\d+\}}", env[name]), env[name]
    check = agent["healthcheck"]["test"]
    assert "p == '0' or" in check[-1], "a replica on port 0 must not be reported unhealthy"
    assert "agent-data:/data" in agent["volumes"]  # notes and memories: one SQLite file all replicas share


def test_livekit_keys_match_the_services():
    keys = default(SERVICES["livekit"]["environment"]["LIVEKIT_KEYS"])
    agent_env = SERVICES["agent"]["environment"]
    assert keys == f"{default(agent_env['LIVEKIT_API_KEY'])}: {default(agent_env['LIVEKIT_API_SECRET'])}"


def test_env_example_documents_only_real_settings():
    names = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", (REPO / ".env.example").read_text(), re.M))
    known = env_names(AgentSettings) | env_names(TokenServerSettings) | env_names(StackSettings)
    # Read by OpenTelemetry's SDK and livekit-agents themselves (agent/tracing.py only turns them on).
    known |= {"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_HEADERS", "OTEL_SERVICE_NAME"}
    known |= {"LIVEKIT_TELEMETRY_ALLOW_PII"}
    assert names and not names - known, names - known


def test_prometheus_scrapes_the_ports_the_services_use():
    scrape = yaml.safe_load((REPO / "deploy" / "prometheus.yml").read_text())
    targets = {job["job_name"]: job["static_configs"][0]["targets"][0] for job in scrape["scrape_configs"]}
    agent_env = SERVICES["agent"]["environment"]
    assert targets["agent"] == f"127.0.0.1:{default(agent_env['AGENT_METRICS_PORT'])}"
    assert default(agent_env["AGENT_METRICS_PORT"]) == str(AgentSettings().agent_metrics_port)
    assert targets["token-server"] == f"127.0.0.1:{SERVICES['token-server']['environment']['TOKEN_SERVER_PORT']}"
    assert targets["livekit-server"] == f"127.0.0.1:{LIVEKIT['prometheus']['port']}"
    assert "./deploy/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in SERVICES["prometheus"]["volumes"]


def test_grafana_provisions_the_dashboard_from_prometheus():
    grafana = REPO / "deploy" / "grafana"
    source = yaml.safe_load((grafana / "provisioning" / "datasources" / "prometheus.yml").read_text())["datasources"][0]
    provider = yaml.safe_load((grafana / "provisioning" / "dashboards" / "voice-agent.yml").read_text())["providers"][0]
    volumes = SERVICES["grafana"]["volumes"]
    assert f"./deploy/grafana/dashboards:{provider['options']['path']}:ro" in volumes
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in volumes
    assert source["url"].endswith(":9090") and "127.0.0.1:9090" in " ".join(SERVICES["prometheus"]["command"])
    dashboard = json.loads((grafana / "dashboards" / "voice-agent.json").read_text())
    uids = {target["datasource"]["uid"] for panel in dashboard["panels"] for target in panel["targets"]}
    assert uids == {source["uid"]} and len(dashboard["panels"]) >= 10


SIP = yaml.safe_load((REPO / "sip.yaml").read_text())


def test_sip_service_matches_sip_yaml_livekit_and_the_setup():
    setup = (REPO / "scripts" / "setup").read_text()
    version = re.search(r"SIP_VERSION=([\d.]+)", setup).group(1)
    sip = SERVICES["sip"]
    assert sip["image"] == f"livekit/sip:v{version}"
    assert "./sip.yaml:/etc/sip.yaml:ro" in sip["volumes"] and sip["command"] == ["--config", "/etc/sip.yaml"]
    assert default(sip["environment"]["LIVEKIT_WS_URL"]) == f"ws://127.0.0.1:{LIVEKIT['port']}"
    assert default(sip["environment"]["LIVEKIT_API_KEY"]) == AgentSettings().livekit_api_key
    # livekit-server and livekit-sip meet in the same Redis, the one docker-compose runs.
    redis_port = SERVICES["redis"]["command"][SERVICES["redis"]["command"].index("--port") + 1]
    assert SIP["redis"]["address"] == LIVEKIT["redis"]["address"] == f"127.0.0.1:{redis_port}"
    stack = StackSettings()
    assert SIP["sip_port"] == stack.sip_port
    assert SIP["rtp_port"] == f"{stack.sip_rtp_port_start}-{stack.sip_rtp_port_end}"
    assert SIP["listen_ip"] == "127.0.0.1" and SIP["use_external_ip"] is False
    assert "api_secret" not in SIP, "the secret comes from the environment, never from the file"


def test_a_single_node_stack_drops_redis_and_the_telephony_stack_points_both_at_its_own():
    ports = loopback_ports()
    assert "redis" not in launched_livekit_config(ports)
    phone = ports.model_copy(update={"redis_port": 16379, "sip_port": 15060})
    stack = Stack(phone, with_agent=False, telephony=True)
    try:
        livekit = yaml.safe_load(Path(stack._livekit_config()).read_text())
        sip = yaml.safe_load(Path(stack._sip_config()).read_text())
    finally:
        stack.stop()
    assert livekit["redis"]["address"] == sip["redis"]["address"] == "127.0.0.1:16379"
    assert sip["sip_port"] == 15060 and sip["ws_url"] == f"ws://127.0.0.1:{ports.livekit_port}"
