"""The split of the request set into a tuning half and a held-out half, made once with a fixed seed.

The two files are the only copy of the set: this pools them, sorts the requests by id and splits them again with
`random.Random(19)`, category by category (so each half has every kind of request), then shuffles each half so that
`--limit N` takes a mix. Run with `--check` to verify that the files are that split; without it, to write them
(after adding requests to either file, or with `--source FILE` for a new list). Adding requests draws a new split:
don't, once the held-out half has been used to judge the agent.

Run: `uv run python -m bench.requests.split [--check] [--source FILE]`.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import yaml

from bench.requests.spec import HALVES, SEED, raw_half

HEADERS = {
    "tuning": "# The tuning half of the spoken-request benchmark (bench/requests): tune the agent against these.\n",
    "held-out": "# The held-out half of the spoken-request benchmark (bench/requests). Do not read it, quote it\n"
    "# or tune against it: it shows whether what was tuned generalises.\n",
}


def split(requests: list[dict], seed: int = SEED) -> tuple[list[dict], list[dict]]:
    rng = random.Random(seed)
    tuning: list[dict] = []
    held_out: list[dict] = []
    for category in sorted({r["category"] for r in requests}):
        items = sorted((r for r in requests if r["category"] == category), key=lambda r: r["id"])
        rng.shuffle(items)
        cut = len(items) // 2 + (len(items) % 2 == 1 and rng.random() < 0.5)
        tuning += items[:cut]
        held_out += items[cut:]
    rng.shuffle(tuning)
    rng.shuffle(held_out)
    return tuning, held_out


def pooled() -> list[dict]:
    return sorted((r for half in HALVES for r in raw_half(half)), key=lambda r: r["id"])


def dump(requests: list[dict]) -> str:
    def line(request: dict) -> str:
        return "- " + yaml.safe_dump(request, default_flow_style=True, sort_keys=False, width=10_000).strip()

    return "\n".join(line(r) for r in requests) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only verify that the files are the seeded split")
    parser.add_argument("--source", type=Path, help="split this list (YAML) instead of the two halves pooled")
    args = parser.parse_args()
    requests = yaml.safe_load(args.source.read_text()) if args.source else pooled()
    ids = [r["id"] for r in requests]
    if len(set(ids)) != len(ids):
        print("duplicate request ids", file=sys.stderr)
        return 1
    halves = dict(zip(HALVES, split(requests), strict=True))
    if args.check:
        same = all(raw_half(half) == halves[half] for half in HALVES)
        print("the halves are the seeded split" if same else "the halves are NOT the seeded split")
        return 0 if same else 1
    for half, path in HALVES.items():
        path.write_text(HEADERS[half] + dump(halves[half]))
        print(f"{path}: {len(halves[half])} requests")
    return 0


if __name__ == "__main__":
    sys.exit(main())
