"""deploy/k8s: valid Kubernetes objects (offline, against the bundled JSON schemas of kubernetes-validate) that agree
with docker-compose.yml, livekit.yaml, .env.example and the services' real settings.

Pure file reads: no cluster, no network.
"""

from __future__ import annotations

import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from agent.settings import AgentSettings
from token_server.settings import TokenServerSettings

REPO = Path(__file__).resolve().parent.parent
K8S = REPO / "deploy" / "k8s"
KUBERNETES_VERSION = "1.30.0"
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
LIVEKIT = yaml.safe_load((REPO / "livekit.yaml").read_text())
KUSTOMIZATION = yaml.safe_load((K8S / "kustomization.yaml").read_text())
MANIFESTS = sorted(path for path in K8S.glob("*.yaml") if path.name != "kustomization.yaml")
SECRET_TEMPLATE = "secret.example.yaml"

# livekit-server's own variables (its CLI reads them: cmd/server/main.go), not settings of this project.
LIVEKIT_SERVER_VARIABLES = {"LIVEKIT_KEYS", "REDIS_PASSWORD"}
# Real settings (agent/settings.py, token_server/settings.py; described in docs/configuration.md) that .env.example
# does not list yet: a cluster needs both, to listen on the pod's address.
NOT_IN_ENV_EXAMPLE = {"AGENT_HTTP_HOST", "TOKEN_SERVER_HOST"}


def objects(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


ALL = [obj for path in MANIFESTS for obj in objects(path)]


def find(kind: str, name: str) -> dict:
    found = [obj for obj in ALL if obj["kind"] == kind and obj["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def container(deployment: str) -> dict:
    (only,) = find("Deployment", deployment)["spec"]["template"]["spec"]["containers"]
    return only


def env_names(deployment: str) -> set[str]:
    """Every variable the container gets: `env:` and the ConfigMaps of `envFrom:`."""
    spec = container(deployment)
    names = {item["name"] for item in spec.get("env", [])}
    for source in spec.get("envFrom", []):
        names |= set(find("ConfigMap", source["configMapRef"]["name"])["data"])
    return names


def env_value(deployment: str, name: str) -> str:
    spec = container(deployment)
    for item in spec.get("env", []):
        if item["name"] == name:
            return item["value"]
    for source in spec.get("envFrom", []):
        data = find("ConfigMap", source["configMapRef"]["name"])["data"]
        if name in data:
            return data[name]
    raise KeyError(name)


def ports(deployment: str) -> dict[str, tuple[int, str]]:
    return {p["name"]: (p["containerPort"], p.get("protocol", "TCP")) for p in container(deployment)["ports"]}


def env_example_names() -> set[str]:
    return set(re.findall(r"^[ \t]*#?[ \t]*([A-Z][A-Z0-9_]+)=", (REPO / ".env.example").read_text(), re.M))


def settings_names(settings_cls) -> set[str]:
    return {name.upper() for name in settings_cls.model_fields}


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_every_object_validates_against_the_kubernetes_schema(path: Path):
    docs = objects(path)
    assert docs, f"{path.name} holds no object"
    for obj in docs:
        assert {"apiVersion", "kind", "metadata"} <= set(obj), f"{path.name}: not a Kubernetes object"
        # strict: an unknown (misspelt) field fails too
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        assert obj["kind"] == "Namespace" or obj["metadata"]["namespace"] == KUSTOMIZATION["namespace"]


def test_the_kustomization_applies_every_manifest_but_the_secret_template():
    assert KUSTOMIZATION["kind"] == "Kustomization"
    assert sorted(KUSTOMIZATION["resources"]) == sorted(p.name for p in MANIFESTS if p.name != SECRET_TEMPLATE)
    assert find("Namespace", KUSTOMIZATION["namespace"])


def test_the_secret_template_holds_no_secret():
    (secret,) = objects(K8S / SECRET_TEMPLATE)
    assert secret["kind"] == "Secret" and secret["stringData"]
    assert all(value == "" for value in secret["stringData"].values()), "a template, never a real secret"
    # Every key a container reads from it is in the template, and nothing else reads another Secret.
    keys = set(secret["stringData"])
    for obj in ALL:
        if obj["kind"] != "Deployment":
            continue
        for spec in obj["spec"]["template"]["spec"]["containers"]:
            for item in spec.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == secret["metadata"]["name"] and ref["key"] in keys, (obj["metadata"], ref)
                    assert ref["key"] == item["name"]


def test_images_and_commands_match_docker_compose():
    assert container("redis")["image"] == COMPOSE["redis"]["image"]
    assert container("livekit-server")["image"] == COMPOSE["livekit"]["image"]
    assert container("livekit-server")["args"] == COMPOSE["livekit"]["command"]
    # One image, built from this repo's Dockerfile, runs the agent and the token server, as compose builds both.
    assert COMPOSE["agent"]["build"] == COMPOSE["token-server"]["build"] == "."
    assert container("agent")["image"] == container("token-server")["image"]
    assert container("agent")["command"] == COMPOSE["agent"]["command"]
    assert container("token-server")["command"] == COMPOSE["token-server"]["command"]
    assert container("redispatch")["image"] == container("agent")["image"]
    assert (
        container("redispatch")["command"]
        == COMPOSE["redispatch"]["command"]
        == ["python", "-m", "stack", "redispatch"]
    )


def test_the_watcher_reaches_the_same_server_as_the_workers_with_the_same_keys():
    """One watcher (a second would only dispatch twice), with the agent's LIVEKIT_URL, AGENT_NAME and API keys."""
    watcher = find("Deployment", "redispatch")
    assert watcher["spec"]["replicas"] == 1
    env = {item["name"]: item["valueFrom"] for item in container("redispatch")["env"]}
    assert env["LIVEKIT_URL"]["configMapKeyRef"] == {"name": "agent-config", "key": "LIVEKIT_URL"}
    assert env["AGENT_NAME"]["configMapKeyRef"] == {"name": "agent-config", "key": "AGENT_NAME"}
    agent = {item["name"]: item.get("valueFrom") for item in container("agent")["env"]}
    for key in ("LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"):
        assert env[key] == agent[key]


SERVICES = [("agent", AgentSettings), ("token-server", TokenServerSettings)]


@pytest.mark.parametrize(("deployment", "settings_cls"), SERVICES)
def test_env_names_are_real_settings_in_env_example(deployment, settings_cls):
    names = env_names(deployment)
    assert not names - settings_names(settings_cls), f"{deployment} sets variables it does not read"
    missing = names - env_example_names() - NOT_IN_ENV_EXAMPLE
    assert not missing, f"{deployment} uses variables .env.example does not list: {missing}"


def test_livekit_server_gets_its_keys_from_the_same_secret():
    names = env_names("livekit-server")
    assert names - LIVEKIT_SERVER_VARIABLES <= env_example_names(), names
    env = [item["name"] for item in container("livekit-server")["env"]]
    # LIVEKIT_KEYS is built from the two names defined before it (Kubernetes expands only earlier variables).
    assert env_value("livekit-server", "LIVEKIT_KEYS") == "$(LIVEKIT_API_KEY): $(LIVEKIT_API_SECRET)"
    assert env.index("LIVEKIT_API_KEY") < env.index("LIVEKIT_KEYS") and env.index("LIVEKIT_API_SECRET") < env.index(
        "LIVEKIT_KEYS"
    )
    assert env_names("redis") == {"REDIS_PASSWORD"}
    assert "$(REDIS_PASSWORD)" in container("redis")["command"]


def cluster_livekit_config() -> dict:
    return yaml.safe_load(find("ConfigMap", "livekit-config")["data"]["livekit.yaml"])


def test_the_livekit_config_is_livekit_yaml_on_a_cluster():
    config = cluster_livekit_config()
    assert config["port"] == LIVEKIT["port"]
    assert config["rtc"]["tcp_port"] == LIVEKIT["rtc"]["tcp_port"]
    assert config["rtc"]["udp_port"] == LIVEKIT["rtc"]["udp_port"]
    assert config["prometheus"]["port"] == LIVEKIT["prometheus"]["port"]
    assert config["room"] == LIVEKIT["room"]
    assert config["agents"] == LIVEKIT["agents"]
    assert "keys" not in config and "bind_addresses" not in config  # keys from the Secret; every interface
    # All nodes on the one Redis, at its Service.
    redis = find("Service", "redis")["spec"]["ports"][0]
    assert config["redis"]["address"] == f"{find('Service', 'redis')['metadata']['name']}:{redis['port']}"
    assert ports("redis")["redis"] == (redis["port"], "TCP")


def test_ports_match_livekit_yaml_and_the_settings():
    config = cluster_livekit_config()
    assert ports("livekit-server") == {
        "http": (config["port"], "TCP"),
        "rtc-tcp": (config["rtc"]["tcp_port"], "TCP"),
        "rtc-udp": (config["rtc"]["udp_port"], "UDP"),
        "metrics": (config["prometheus"]["port"], "TCP"),
    }
    service = find("Service", "livekit")
    assert service["spec"]["ports"][0]["port"] == config["port"]
    livekit_url = f"ws://{service['metadata']['name']}:{config['port']}"
    assert env_value("agent", "LIVEKIT_URL") == env_value("token-server", "LIVEKIT_URL") == livekit_url

    agent = AgentSettings()
    assert env_value("agent", "AGENT_HTTP_PORT") == str(agent.agent_http_port)
    assert env_value("agent", "AGENT_METRICS_PORT") == str(agent.agent_metrics_port)
    assert ports("agent") == {"health": (agent.agent_http_port, "TCP"), "metrics": (agent.agent_metrics_port, "TCP")}
    assert env_value("agent", "AGENT_HTTP_HOST") == "0.0.0.0", "probes reach the pod's address, not its loopback"
    assert float(env_value("agent", "LIVEKIT_TARGET_LOAD")) == config["agents"]["target_load"]
    assert env_value("agent", "AGENT_NAME") == env_value("token-server", "AGENT_NAME") == agent.agent_name

    token = TokenServerSettings()
    assert env_value("token-server", "TOKEN_SERVER_PORT") == str(token.token_server_port)
    assert ports("token-server") == {"http": (token.token_server_port, "TCP")}
    assert find("Service", "token-server")["spec"]["ports"][0]["port"] == token.token_server_port


def test_probes_use_the_health_endpoints():
    for deployment, path, port in (("agent", "/", "health"), ("token-server", "/healthz", "http")):
        spec = container(deployment)
        for probe in ("readinessProbe", "livenessProbe"):
            assert spec[probe]["httpGet"] == {"path": path, "port": port}, (deployment, probe)
    # The worker opens its health server only once the models are loaded: minutes on a cold node.
    startup = container("agent")["startupProbe"]
    assert startup["httpGet"] == {"path": "/", "port": "health"}
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 180
    assert container("livekit-server")["readinessProbe"]["httpGet"] == {"path": "/", "port": "http"}


def test_every_container_requests_resources():
    for obj in ALL:
        if obj["kind"] == "Deployment":
            for spec in obj["spec"]["template"]["spec"]["containers"]:
                requests = spec.get("resources", {}).get("requests", {})
                assert {"cpu", "memory"} <= set(requests), obj["metadata"]["name"]
                assert "memory" in spec["resources"].get("limits", {}), obj["metadata"]["name"]


def test_agent_workers_scale_and_drain():
    agent = find("Deployment", "agent")
    assert agent["spec"]["replicas"] >= 2
    hpa = find("HorizontalPodAutoscaler", "agent")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "agent"}
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    # The worker drains for up to drain_timeout seconds after SIGTERM; Kubernetes must not kill it before.
    drain = int(re.search(r"drain_timeout=(\d+)", (REPO / "agent" / "main.py").read_text()).group(1))
    assert agent["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= drain + 15
    assert int(env_value("agent", "MAX_SESSIONS")) >= 1


def test_livekit_nodes_own_their_hosts_media_ports():
    livekit = find("Deployment", "livekit-server")
    pod = livekit["spec"]["template"]["spec"]
    assert livekit["spec"]["replicas"] == 2
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    (rule,) = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert rule["topologyKey"] == "kubernetes.io/hostname"
    assert rule["labelSelector"]["matchLabels"] == livekit["spec"]["selector"]["matchLabels"]
    assert livekit["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0, "a surge pod would find the ports taken"
