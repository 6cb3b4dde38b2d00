"""Telephony as code: the trunks and dispatch rules in telephony.yaml, applied to livekit-server through livekit-api,
and outbound calls placed by the agent.

`apply` is idempotent: entries it made before carry a marker in their metadata; an unchanged entry is left alone, a
changed one is replaced, and one removed from the file is deleted. Entries made by hand (no marker) are never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import yaml
from livekit import api
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

MARKER = "managed-by=voice-agent/telephony.yaml"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InboundTrunk(Strict):
    name: str
    numbers: list[str] = Field(min_length=1)
    # Only these source networks may call (a carrier's signalling addresses); empty means anyone who knows the numbers.
    allowed_addresses: list[str] = []
    allowed_numbers: list[str] = []
    auth_username: str = ""
    auth_password_env: str = ""  # the name of the environment variable that holds the password, never the password
    ringing_timeout_s: int = 0  # 0: livekit-sip's default


class OutboundTrunk(Strict):
    name: str
    address: str  # the carrier's or PBX's SIP host[:port]
    transport: str = "udp"
    numbers: list[str] = Field(min_length=1)  # caller ID numbers the agent may call from
    auth_username: str = ""
    auth_password_env: str = ""

    @field_validator("transport")
    @classmethod
    def _known_transport(cls, value: str) -> str:
        if value not in ("udp", "tcp", "tls", "auto"):
            raise ValueError("transport must be udp, tcp, tls or auto")
        return value


class DispatchRule(Strict):
    name: str
    trunks: list[str] = []  # inbound trunk names; empty means every trunk
    room_prefix: str = "call-"  # one new room per caller: <prefix><caller number>_<random>
    agent: str = "voice-agent"  # the agent worker's AGENT_NAME, dispatched through the rule's room configuration
    metadata: dict = {"mode": "phone"}


class TelephonyConfig(Strict):
    inbound_trunks: list[InboundTrunk] = []
    outbound_trunks: list[OutboundTrunk] = []
    dispatch_rules: list[DispatchRule] = []


class TelephonyError(RuntimeError):
    """The file or the server refused; the message is one line that says why."""


def load(path: Path) -> TelephonyConfig:
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise TelephonyError(f"cannot read {path}: {exc}") from None
    try:
        config = TelephonyConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise TelephonyError(f"{path}: {where}: {first['msg']}") from None
    for kind in ("inbound_trunks", "outbound_trunks", "dispatch_rules"):
        seen = [entry.name for entry in getattr(config, kind)]
        if len(seen) != len(set(seen)):
            raise TelephonyError(f"{path}: {kind}: names must be unique, got {seen}")
    names = [t.name for t in config.inbound_trunks]
    for rule in config.dispatch_rules:
        unknown = [t for t in rule.trunks if t not in names]
        if unknown:
            raise TelephonyError(f"{path}: dispatch rule {rule.name!r} names unknown inbound trunk(s) {unknown}")
    return config


def _secret(env_name: str, what: str) -> str:
    if not env_name:
        return ""
    value = os.environ.get(env_name, "")
    if not value:
        raise TelephonyError(f"{what}: environment variable {env_name} is empty (it should hold the SIP password)")
    return value


def _inbound(t: InboundTrunk) -> api.SIPInboundTrunkInfo:
    return api.SIPInboundTrunkInfo(
        name=t.name,
        metadata=MARKER,
        numbers=t.numbers,
        allowed_addresses=t.allowed_addresses,
        allowed_numbers=t.allowed_numbers,
        auth_username=t.auth_username,
        auth_password=_secret(t.auth_password_env, f"inbound trunk {t.name}"),
        ringing_timeout=_duration(t.ringing_timeout_s),
    )


def _outbound(t: OutboundTrunk) -> api.SIPOutboundTrunkInfo:
    transports = {
        "udp": api.SIPTransport.SIP_TRANSPORT_UDP,
        "tcp": api.SIPTransport.SIP_TRANSPORT_TCP,
        "tls": api.SIPTransport.SIP_TRANSPORT_TLS,
        "auto": api.SIPTransport.SIP_TRANSPORT_AUTO,
    }
    return api.SIPOutboundTrunkInfo(
        name=t.name,
        metadata=MARKER,
        address=t.address,
        transport=transports[t.transport],
        numbers=t.numbers,
        auth_username=t.auth_username,
        auth_password=_secret(t.auth_password_env, f"outbound trunk {t.name}"),
    )


def _rule(r: DispatchRule, trunk_ids: dict[str, str]) -> api.SIPDispatchRuleInfo:
    return api.SIPDispatchRuleInfo(
        name=r.name,
        metadata=MARKER,
        trunk_ids=[trunk_ids[name] for name in r.trunks],
        rule=api.SIPDispatchRule(dispatch_rule_individual=api.SIPDispatchRuleIndividual(room_prefix=r.room_prefix)),
        room_config=api.RoomConfiguration(
            agents=[api.RoomAgentDispatch(agent_name=r.agent, metadata=json.dumps(r.metadata, sort_keys=True))]
        ),
    )


def _duration(seconds: int):
    from google.protobuf.duration_pb2 import Duration

    return Duration(seconds=seconds) if seconds else None


def _same(current, desired, fields: tuple[str, ...]) -> bool:
    return all(getattr(current, f) == getattr(desired, f) for f in fields)


INBOUND_FIELDS = ("numbers", "allowed_addresses", "allowed_numbers", "auth_username", "auth_password")
INBOUND_FIELDS += ("ringing_timeout",)
OUTBOUND_FIELDS = ("address", "transport", "numbers", "auth_username", "auth_password")
RULE_FIELDS = ("trunk_ids", "rule", "room_config")


async def apply(config: TelephonyConfig, lk: api.LiveKitAPI) -> list[str]:
    """Makes the server's trunks and rules match the config; returns one line per change."""
    sip = lk.sip
    changes: list[str] = []

    inbound = (await sip.list_inbound_trunk(api.ListSIPInboundTrunkRequest())).items
    inbound = [t for t in inbound if t.metadata == MARKER]
    trunk_ids: dict[str, str] = {}
    for want in config.inbound_trunks:
        desired = _inbound(want)
        have = next((t for t in inbound if t.name == want.name), None)
        if have is not None and _same(have, desired, INBOUND_FIELDS):
            trunk_ids[want.name] = have.sip_trunk_id
            continue
        if have is not None:  # replaced in place: its ID, which rules refer to, stays
            made = await sip.update_inbound_trunk(have.sip_trunk_id, desired)
        else:
            made = await sip.create_inbound_trunk(api.CreateSIPInboundTrunkRequest(trunk=desired))
        trunk_ids[want.name] = made.sip_trunk_id
        changes.append(f"{'updated' if have else 'created'} inbound trunk {want.name} ({', '.join(want.numbers)})")
    stale_trunks = [t for t in inbound if trunk_ids.get(t.name) != t.sip_trunk_id]

    outbound = (await sip.list_outbound_trunk(api.ListSIPOutboundTrunkRequest())).items
    outbound = [t for t in outbound if t.metadata == MARKER]
    kept: set[str] = set()
    for want in config.outbound_trunks:
        desired = _outbound(want)
        have = next((t for t in outbound if t.name == want.name), None)
        if have is not None and _same(have, desired, OUTBOUND_FIELDS):
            kept.add(have.sip_trunk_id)
            continue
        if have is not None:
            made = await sip.update_outbound_trunk(have.sip_trunk_id, desired)
        else:
            made = await sip.create_outbound_trunk(api.CreateSIPOutboundTrunkRequest(trunk=desired))
        kept.add(made.sip_trunk_id)
        changes.append(f"{'updated' if have else 'created'} outbound trunk {want.name} ({want.address})")
    for extra in outbound:
        if extra.sip_trunk_id not in kept:
            await sip.delete_trunk(api.DeleteSIPTrunkRequest(sip_trunk_id=extra.sip_trunk_id))
            changes.append(f"deleted outbound trunk {extra.name}")

    rules = [r for r in (await sip.list_dispatch_rule(api.ListSIPDispatchRuleRequest())).items if r.metadata == MARKER]
    kept = set()
    for want in config.dispatch_rules:
        desired = _rule(want, trunk_ids)
        have = next((r for r in rules if r.name == want.name), None)
        if have is not None and _same(have, desired, RULE_FIELDS):
            kept.add(have.sip_dispatch_rule_id)
            continue
        if have is not None:
            made = await sip.update_dispatch_rule(have.sip_dispatch_rule_id, desired)
        else:
            made = await sip.create_dispatch_rule(api.CreateSIPDispatchRuleRequest(dispatch_rule=desired))
        kept.add(made.sip_dispatch_rule_id)
        changes.append(f"{'updated' if have else 'created'} dispatch rule {want.name} (agent {want.agent})")
    for extra in rules:
        if extra.sip_dispatch_rule_id not in kept:
            await _delete_rule(sip, extra.sip_dispatch_rule_id)
            changes.append(f"deleted dispatch rule {extra.name}")
    # Trunks last, once no rule of ours refers to them.
    for extra in stale_trunks:
        with contextlib.suppress(api.TwirpError):
            await sip.delete_trunk(api.DeleteSIPTrunkRequest(sip_trunk_id=extra.sip_trunk_id))
        changes.append(f"deleted inbound trunk {extra.name}")
    return changes


async def _delete_rule(sip, rule_id: str) -> None:
    with contextlib.suppress(api.TwirpError):  # gone already
        await sip.delete_dispatch_rule(api.DeleteSIPDispatchRuleRequest(sip_dispatch_rule_id=rule_id))


@dataclass
class Server:
    url: str
    api_key: str
    api_secret: str

    def client(self) -> api.LiveKitAPI:
        return api.LiveKitAPI(self.url.replace("ws", "http", 1), self.api_key, self.api_secret)


def apply_file(path: Path, server: Server) -> list[str]:
    """Applies the file; returns what changed (or says nothing did)."""
    config = load(path)

    async def run() -> list[str]:
        async with server.client() as lk:
            return await apply(config, lk)

    try:
        changes = asyncio.run(run())
    except api.TwirpError as exc:
        raise TelephonyError(f"livekit-server refused the telephony config: {exc.message}") from None
    return changes or [f"{path.name}: trunks and dispatch rules already up to date"]


@dataclass
class CallResult:
    outcome: str  # answered | no-answer | busy | failed
    sip_status: int
    detail: str
    room: str
    participant: str = ""


async def call(
    lk: api.LiveKitAPI,
    number: str,
    *,
    trunk: str,
    agent: str = "voice-agent",
    room: str = "",
    caller_id: str = "",
    ringing_timeout_s: int = 30,
) -> CallResult:
    """Makes the agent call a number: a room, the agent dispatched to it, then the phone dialled through a trunk.
    Waits for the answer and says how the call went, with the SIP status."""
    trunks = (await lk.sip.list_outbound_trunk(api.ListSIPOutboundTrunkRequest())).items
    found = next((t for t in trunks if t.name == trunk or t.sip_trunk_id == trunk), None)
    if found is None:
        raise TelephonyError(f"no outbound trunk named {trunk!r}: add it to telephony.yaml and apply it")
    room = room or f"outbound-{number.lstrip('+')}-{os.urandom(3).hex()}"
    metadata = json.dumps({"mode": "phone", "direction": "outbound", "number": number})
    dispatch = api.CreateAgentDispatchRequest(agent_name=agent, room=room, metadata=metadata)
    await lk.agent_dispatch.create_dispatch(dispatch)
    identity = f"phone-{number.lstrip('+')}"
    request = api.CreateSIPParticipantRequest(
        sip_trunk_id=found.sip_trunk_id,
        sip_call_to=number,
        sip_number=caller_id,
        room_name=room,
        participant_identity=identity,
        participant_name=number,
        wait_until_answered=True,
        ringing_timeout=_duration(ringing_timeout_s),
    )
    try:
        await lk.sip.create_sip_participant(request, timeout=ringing_timeout_s + 15)
    except api.TwirpError as exc:
        status = int(exc.metadata.get("sip_status_code", 0) or 0)
        text = exc.metadata.get("sip_status", "") or exc.message
        await _close_room(lk, room)
        if status == 486 or status == 600:
            return CallResult("busy", status, text, room)
        if status in (408, 480, 487) or exc.code == "deadline_exceeded" or "timed out" in exc.message:
            return CallResult("no-answer", status, text, room)
        return CallResult("failed", status, text, room)
    except TimeoutError:
        await _close_room(lk, room)
        return CallResult("no-answer", 0, "no answer before the ringing timeout", room)
    return CallResult("answered", 200, "OK", room, identity)


async def _close_room(lk: api.LiveKitAPI, room: str) -> None:
    with contextlib.suppress(api.TwirpError):
        await lk.room.delete_room(api.DeleteRoomRequest(room=room))
