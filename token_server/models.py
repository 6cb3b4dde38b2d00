"""Request and response bodies of LiveKit's standard token endpoint."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

# Room names and identities end up in URLs, logs and SIP headers: keep them to a safe alphabet.
SafeId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[\w.\-:@=+]+$")]
# Display names are free text without control characters.
DisplayName = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")]

MAX_ATTRIBUTES = 32


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    room_name: SafeId | None = None
    participant_identity: SafeId | None = None
    participant_name: DisplayName | None = None
    participant_metadata: Annotated[str, StringConstraints(max_length=4096)] | None = None
    participant_attributes: dict[str, Annotated[str, StringConstraints(max_length=1024)]] | None = None
    room_config: dict[str, Any] | None = None

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
            if key.startswith("lk."):
                raise ValueError(f"attribute '{key}' is reserved (lk.*)")
        return value


class TokenResponse(BaseModel):
    server_url: str = Field(description="The LiveKit server URL to connect to")
    participant_token: str = Field(description="A JWT that joins the requested room only")
