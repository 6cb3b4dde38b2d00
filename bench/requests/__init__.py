"""Spoken-request benchmark (`python -m bench.requests`): 200+ requests played to the real agent, judged by content.

The requests live in two halves, `tuning.yaml` and `held_out.yaml`, split once by `bench.requests.split` (seed 19).
Tune the agent against `tuning.yaml` only: the held-out half is what tells whether a change generalises.
"""
