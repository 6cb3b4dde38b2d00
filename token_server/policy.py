"""What any token may hold, in every mode: identities clients may not claim, server-made room names, and the
signed invites that let people into a group room (and make its creator its moderator)."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass

import jwt
from fastapi import HTTPException

# Identities that belong to agents (livekit-agents joins as agent-<job>), phone lines (livekit-sip's sip_<number>;
# the agent keeps a caller's notes under tel:<number>), LiveKit itself (lk...), and the namespaces of authenticated
# identities (app:<name>:..., user:<sub>), compared without case.
RESERVED_IDENTITY = re.compile(r"^(?:agent[-_]|sip[-_:]|sips:|tel:|lk|app:|user:|userh:)", re.IGNORECASE)
RESERVED_HELP = "agent-*, sip_*, sip:*, tel:*, lk*, app:* and user:* belong to agents, phone lines and signed-in users"

INVITE_AUDIENCE = "voice-agent:room-invite"
MODERATOR = "moderator"


def check_identity(identity: str) -> None:
    if RESERVED_IDENTITY.match(identity):
        raise HTTPException(403, f"participant_identity '{identity}' is reserved ({RESERVED_HELP})")


def check_role_attribute(attributes: dict[str, str], role_attribute: str) -> None:
    """The agent reads a participant's role from GROUP_ROLE_ATTRIBUTE: only a moderator invite sets it."""
    if any(key.lower() == role_attribute.lower() for key in attributes):
        raise HTTPException(422, f"participant_attributes: attribute '{role_attribute}' is reserved (set by invites)")


def call_room() -> str:
    """A 1:1 call's room, made by the server: nobody else can guess it."""
    return f"call-{secrets.token_hex(12)}"


def group_room() -> str:
    return f"group-{secrets.token_hex(12)}"


@dataclass(frozen=True)
class Invite:
    room: str
    moderator: str | None  # the identity a moderator invite belongs to; None for a guest invite


class Invites:
    """Signed, expiring invites to one room: JWTs (HS256) under a key derived from LIVEKIT_API_SECRET.

    The key is HMAC(LIVEKIT_API_SECRET, "voice-agent room invite v1"), so an invite is never a LiveKit token nor the
    other way round, and changing the LiveKit secret revokes every invite. A guest invite lets anyone who holds it
    join its room; a moderator invite also makes its holder the room's moderator, and only for the identity it was
    issued to.
    """

    def __init__(self, livekit_secret: str, ttl_s: int) -> None:
        self.key = hmac.new(livekit_secret.encode(), b"voice-agent room invite v1", hashlib.sha256).digest()
        self.ttl_s = ttl_s

    def issue(self, room: str, moderator: str | None = None, now: float | None = None) -> tuple[str, int]:
        issued = int(time.time() if now is None else now)
        claims: dict = {"aud": INVITE_AUDIENCE, "room": room, "iat": issued, "exp": issued + self.ttl_s}
        if moderator is not None:
            claims |= {"role": MODERATOR, "sub": moderator}
        return jwt.encode(claims, self.key, algorithm="HS256"), issued + self.ttl_s

    def verify(self, invite: str) -> Invite:
        try:
            claims = jwt.decode(
                invite, self.key, algorithms=["HS256"], audience=INVITE_AUDIENCE, options={"require": ["exp", "room"]}
            )
        except jwt.ExpiredSignatureError:
            raise HTTPException(403, "the invite has expired: ask for a new one") from None
        except (jwt.PyJWTError, ValueError, TypeError):
            raise HTTPException(403, "the invite is not valid here") from None
        room, sub = claims.get("room"), claims.get("sub")
        if not isinstance(room, str) or (claims.get("role") == MODERATOR and not isinstance(sub, str)):
            raise HTTPException(403, "the invite is not valid here")
        return Invite(room, sub if claims.get("role") == MODERATOR else None)
