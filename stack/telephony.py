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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


@dataclass
class Kind:
    """How one kind of entry is listed, compared, made, changed and removed."""

    what: str  # "inbound trunk", ...
    fields: tuple[str, ...]
    id_of: Callable[[Any], str]
    create: Callable[[Any], Awaitable[Any]]
    update: Callable[[str, Any], Awaitable[Any]]
    delete: Callable[[str], Awaitable[Any]]


async def _reconcile(kind: Kind, have: list, wanted: list[tuple[str, Any, str]], changes: list[str]) -> dict[str, str]:
    """Makes the entries we manage (`have`) match `wanted` (name, desired entry, detail for the report); returns
    name -> ID. A changed entry is updated in place, so its ID (which rules refer to) stays; deletions come last."""
    ids: dict[str, str] = {}
    for name, desired, detail in wanted:
        current = next((entry for entry in have if entry.name == name), None)
        if current is not None and _same(current, desired, kind.fields):
            ids[name] = kind.id_of(current)
            continue
        made = await (kind.update(kind.id_of(current), desired) if current is not None else kind.create(desired))
        ids[name] = kind.id_of(made)
        changes.append(f"{'updated' if current is not None else 'created'} {kind.what} {name} ({detail})")
    for extra in have:
        if ids.get(extra.name) != kind.id_of(extra):
            with contextlib.suppress(api.TwirpError):  # gone already
                await kind.delete(kind.id_of(extra))
            changes.append(f"deleted {kind.what} {extra.name}")
    return ids


async def apply(config: TelephonyConfig, lk: api.LiveKitAPI) -> list[str]:
    """Makes the server's trunks and rules match the config; returns one line per change."""
    sip = lk.sip
    changes: list[str] = []

    def ours(items) -> list:
        return [entry for entry in items if entry.metadata == MARKER]

    async def delete_trunk(trunk_id: str) -> None:
        await sip.delete_trunk(api.DeleteSIPTrunkRequest(sip_trunk_id=trunk_id))

    inbound = Kind(
        "inbound trunk",
        INBOUND_FIELDS,
        lambda t: t.sip_trunk_id,
        lambda t: sip.create_inbound_trunk(api.CreateSIPInboundTrunkRequest(trunk=t)),
        sip.update_inbound_trunk,
        delete_trunk,
    )
    outbound = Kind(
        "outbound trunk",
        OUTBOUND_FIELDS,
        lambda t: t.sip_trunk_id,
        lambda t: sip.create_outbound_trunk(api.CreateSIPOutboundTrunkRequest(trunk=t)),
        sip.update_outbound_trunk,
        delete_trunk,
    )
    rules = Kind(
        "dispatch rule",
        RULE_FIELDS,
        lambda r: r.sip_dispatch_rule_id,
        lambda r: sip.create_dispatch_rule(api.CreateSIPDispatchRuleRequest(dispatch_rule=r)),
        sip.update_dispatch_rule,
        lambda rule_id: sip.delete_dispatch_rule(api.DeleteSIPDispatchRuleRequest(sip_dispatch_rule_id=rule_id)),
    )

    # Rules refer to inbound trunks: trunks are made before the rules, and removed after them.
    have_inbound = ours((await sip.list_inbound_trunk(api.ListSIPInboundTrunkRequest())).items)
    wanted = [(t.name, _inbound(t), ", ".join(t.numbers)) for t in config.inbound_trunks]
    kept = [entry for entry in have_inbound if entry.name in {name for name, _, _ in wanted}]
    trunk_ids = await _reconcile(inbound, kept, wanted, changes)

    have_outbound = ours((await sip.list_outbound_trunk(api.ListSIPOutboundTrunkRequest())).items)
    wanted = [(t.name, _outbound(t), t.address) for t in config.outbound_trunks]
    await _reconcile(outbound, have_outbound, wanted, changes)

    have_rules = ours((await sip.list_dispatch_rule(api.ListSIPDispatchRuleRequest())).items)
    wanted = [(r.name, _rule(r, trunk_ids), f"agent {r.agent}") for r in config.dispatch_rules]
    await _reconcile(rules, have_rules, wanted, changes)

    await _reconcile(inbound, [entry for entry in have_inbound if entry not in kept], [], changes)
    return changes


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
