"""Request and response bodies of LiveKit's standard token endpoint."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

# Room names and identities end up in URLs, logs and SIP headers: keep them to a safe alphabet.
SafeId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[\w.\-:@=+]+$")]
# Display names are free text without control characters.
DisplayName = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")]

MAX_ATTRIBUTES = 32
# The attributes a client may set on itself. Everything else is reserved: `role` (the agent's moderator check),
# `sip.*` (phone lines), `lk.*` (LiveKit and the agents framework), in any case. An application's own: `app.<name>`.
ALLOWED_ATTRIBUTES = frozenset({"language", "display_color"})
APP_ATTRIBUTE = re.compile(r"app\.[a-z0-9_][a-z0-9_.-]{0,59}")
ATTRIBUTES_HELP = "clients may set language, display_color and app.<name> (lowercase)"
Invitation = Annotated[str, StringConstraints(min_length=1, max_length=2048)]


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    room_name: SafeId | None = None
    participant_identity: SafeId | None = None
    participant_name: DisplayName | None = None
    participant_metadata: Annotated[str, StringConstraints(max_length=4096)] | None = None
    participant_attributes: dict[str, Annotated[str, StringConstraints(max_length=1024)]] | None = None
    room_config: dict[str, Any] | None = None
    # Not part of LiveKit's contract: a group room's invite (POST /api/rooms); also accepted as X-Room-Invite.
    invite: Invitation | None = None

    @field_validator("participant_attributes")
    @classmethod
    def _check_attributes(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return value
        if len(value) > MAX_ATTRIBUTES:
            raise ValueError(f"at most {MAX_ATTRIBUTES} attributes")
        for key in value:
            if not (0 < len(key) <= 64):
                raise ValueError("attribute names must be 1-64 characters")
            if key not in ALLOWED_ATTRIBUTES and not APP_ATTRIBUTE.fullmatch(key):
                raise ValueError(f"attribute '{key}' is reserved: {ATTRIBUTES_HELP}")
        return value


class TokenResponse(BaseModel):
    server_url: str = Field(description="The LiveKit server URL to connect to")
    participant_token: str = Field(description="A JWT that joins the requested room only")


class RoomRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    # Development mode only: production mode names the room itself.
    room_name: SafeId | None = None
    # Whose moderator invite this is, where the identity is not already known from the sign-in (API keys, dev).
    participant_identity: SafeId | None = None


class RoomResponse(BaseModel):
    room_name: str = Field(description="The group room")
    invite: str = Field(description="Lets anyone who holds it join the room: send it as `invite` to /api/token")
    moderator_invite: str | None = Field(
        default=None, description="Makes its holder the room's moderator; only for the identity that created it"
    )
    expires_at: int = Field(description="When both invites expire (Unix time)")
