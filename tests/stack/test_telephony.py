"""telephony.yaml applied to a real livekit-server (with Redis and livekit-sip, no agent): idempotent, removals
remove, hand-made entries are left alone, and a bad file fails with one line."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from livekit import api

from stack.services import REPO, Stack, free_port, redis_ok
from stack.telephony import Server, TelephonyError, apply_file
from tests.support.ports import loopback_ports

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def sip_stack(tmp_path_factory) -> Iterator[Stack]:
    empty = tmp_path_factory.mktemp("telephony") / "empty.yaml"
    empty.write_text("{}\n")
    settings = loopback_ports().model_copy(
        update={"redis_port": free_port(), "sip_port": free_port(), "telephony_config": str(empty)}
    )
    with Stack(settings, with_agent=False, telephony=True) as running:
        yield running


def server(stack: Stack) -> Server:
    return Server(stack.livekit_url, stack.settings.livekit_api_key, stack.settings.livekit_api_secret)


async def state(stack: Stack) -> dict[str, list]:
    async with server(stack).client() as lk:
        inbound = (await lk.sip.list_inbound_trunk(api.ListSIPInboundTrunkRequest())).items
        outbound = (await lk.sip.list_outbound_trunk(api.ListSIPOutboundTrunkRequest())).items
        rules = (await lk.sip.list_dispatch_rule(api.ListSIPDispatchRuleRequest())).items
    return {"inbound": list(inbound), "outbound": list(outbound), "rules": list(rules)}


def write(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def test_applying_twice_changes_nothing_and_removing_an_entry_removes_it(sip_stack, tmp_path):
    config = yaml.safe_load((REPO / "telephony.yaml").read_text())
    config["inbound_trunks"].append({"name": "second", "numbers": ["+15550200"], "allowed_addresses": ["10.0.0.0/8"]})
    path = write(tmp_path / "telephony.yaml", config)

    first = apply_file(path, server(sip_stack))
    assert len(first) == 4, first  # two inbound trunks, one outbound trunk, one rule
    made = asyncio.run(state(sip_stack))
    rule = made["rules"][0]
    trunk_ids = {t.name: t.sip_trunk_id for t in made["inbound"]}
    assert list(rule.trunk_ids) == [trunk_ids["local"]]
    assert rule.rule.dispatch_rule_individual.room_prefix == "call-"
    assert [a.agent_name for a in rule.room_config.agents] == ["voice-agent"]
    assert '"mode": "phone"' in rule.room_config.agents[0].metadata

    again = apply_file(path, server(sip_stack))
    assert again == ["telephony.yaml: trunks and dispatch rules already up to date"]
    assert asyncio.run(state(sip_stack)) == made, "a second apply changed the server"

    config["inbound_trunks"] = [t for t in config["inbound_trunks"] if t["name"] != "second"]
    config["inbound_trunks"][0]["numbers"].append("+15550101")
    changes = apply_file(write(path, config), server(sip_stack))
    assert "deleted inbound trunk second" in changes
    assert any(line.startswith("updated inbound trunk local") for line in changes)
    after = asyncio.run(state(sip_stack))
    assert [(t.name, list(t.numbers)) for t in after["inbound"]] == [("local", ["+15550100", "+15550101"])]
    assert list(after["rules"][0].trunk_ids) == [after["inbound"][0].sip_trunk_id], "the rule follows its trunk"


def test_entries_made_by_hand_are_left_alone(sip_stack, tmp_path):
    async def add_by_hand() -> str:
        async with server(sip_stack).client() as lk:
            trunk = api.SIPInboundTrunkInfo(name="by-hand", numbers=["+15550999"])
            return (await lk.sip.create_inbound_trunk(api.CreateSIPInboundTrunkRequest(trunk=trunk))).sip_trunk_id

    hand_made = asyncio.run(add_by_hand())
    apply_file(write(tmp_path / "empty.yaml", {}), server(sip_stack))
    left = asyncio.run(state(sip_stack))
    assert [t.sip_trunk_id for t in left["inbound"]] == [hand_made]
    assert left["outbound"] == [] and left["rules"] == []


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"inbound_trunks": [{"name": "x", "numbers": []}]}, "inbound_trunks.0.numbers"),
        ({"dispatch_rules": [{"name": "r", "trunks": ["nope"]}]}, "unknown inbound trunk"),
        ({"outbound_trunks": [{"name": "o", "address": "a", "numbers": ["1"], "transport": "pigeon"}]}, "transport"),
        ({"inbound_trunk": []}, "inbound_trunk"),
        (
            {"inbound_trunks": [{"name": "x", "numbers": ["1"], "auth_username": "u", "auth_password_env": "NOPE_PW"}]},
            "NOPE_PW is empty",
        ),
    ],
)
def test_a_bad_file_fails_with_one_line_and_changes_nothing(sip_stack, tmp_path, config, message):
    before = asyncio.run(state(sip_stack))
    with pytest.raises(TelephonyError, match=message) as failed:
        apply_file(write(tmp_path / "bad.yaml", config), server(sip_stack))
    assert "\n" not in str(failed.value)
    assert asyncio.run(state(sip_stack)) == before


def test_the_provision_command_reports_a_bad_file_without_a_traceback(tmp_path):
    bad = write(tmp_path / "bad.yaml", {"dispatch_rules": [{"name": "r", "trunks": ["nope"]}]})
    done = subprocess.run(
        [sys.executable, "-m", "stack", "provision", str(bad)], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "unknown inbound trunk" in done.stderr and "Traceback" not in done.stderr


def test_a_redis_already_running_on_the_port_is_used_as_it_is(tmp_path):
    port = free_port()
    redis = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not redis_ok(port)() and time.monotonic() < deadline:
            time.sleep(0.05)
        empty = write(tmp_path / "empty.yaml", {})
        settings = loopback_ports().model_copy(
            update={"redis_port": port, "sip_port": free_port(), "telephony_config": str(empty)}
        )
        with Stack(settings, with_agent=False, telephony=True) as running:
            assert [svc.name for svc in running.services] == ["livekit-server", "livekit-sip", "token-server"]
            assert asyncio.run(state(running)) == {"inbound": [], "outbound": [], "rules": []}
        assert redis.poll() is None, "the stack stopped a Redis it did not start"
    finally:
        redis.terminate()
        redis.wait(5)
