"""Brings the whole self-hosted stack up on one machine: livekit-server, agent worker, token server + web."""
