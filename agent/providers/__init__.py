"""One module per provider, each behind a livekit-agents plugin interface."""
