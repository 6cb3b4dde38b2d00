"""Token server throughput benchmark: one uvicorn worker on one core, a load generator on the other.

Run: `uv run --no-sync python -m bench.token_server` (about 25 s: 10 s per endpoint after a short warm-up).
Options: `--seconds 10 --connections 32 --server-core 0 --client-core 1 --loop auto --http auto`.

The server is `uvicorn --factory token_server.app:create_app` (one worker, no access log; uvloop and httptools
when installed, `--loop asyncio --http h11` for the pure-Python ones) pinned to one core. This process pins itself
to another and drives it with a minimal HTTP/1.1 keep-alive client on raw asyncio streams (a full client such as
httpx would saturate its own core first). For POST /api/token (a valid body with room, identity and name) and
GET /healthz it prints requests/s, p50/p95 latency (under the given concurrency, so they include queueing), the
count of errors (failed connections or statuses other than the expected one) and both processes' CPU use.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from stack.services import free_port

REPO = Path(__file__).resolve().parent.parent
TOKEN_BODY = json.dumps({"room_name": "bench", "participant_identity": "bench-user", "participant_name": "Bench"})


@dataclass
class Endpoint:
    name: str
    request: bytes
    status: int


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0


def endpoints(port: int) -> list[Endpoint]:
    host = f"Host: 127.0.0.1:{port}\r\n"
    body = TOKEN_BODY.encode()
    token = (
        f"POST /api/token HTTP/1.1\r\n{host}content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode() + body
    health = f"GET /healthz HTTP/1.1\r\n{host}\r\n".encode()
    return [Endpoint("POST /api/token", token, 201), Endpoint("GET /healthz", health, 200)]


async def connection(port: int, endpoint: Endpoint, until: float, tally: Tally | None) -> None:
    """Sends the request over one keep-alive connection, again and again, until the deadline."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        if tally:
            tally.errors += 1
        return
    try:
        while (now := time.perf_counter()) < until:
            writer.write(endpoint.request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            if tally:
                tally.latencies.append(time.perf_counter() - now)
                tally.errors += status != endpoint.status
    except (OSError, asyncio.IncompleteReadError, ValueError):
        if tally:
            tally.errors += 1
    finally:
        writer.close()


async def load(port: int, endpoint: Endpoint, seconds: float, connections: int, tally: Tally | None) -> float:
    started = time.perf_counter()
    until = started + seconds
    await asyncio.gather(*(connection(port, endpoint, until, tally) for _ in range(connections)))
    return time.perf_counter() - started


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server(port: int, core: int, loop: str, http: str) -> subprocess.Popen:
    argv = [sys.executable, "-m", "uvicorn", "--factory", "token_server.app:create_app", "--loop", loop, "--http", http]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--no-access-log", "--log-level", "warning"]
    env = {**os.environ, "TOKEN_RATE_PER_S": "0"}  # the load generator is one client: measure the server, not the limit
    server = subprocess.Popen(argv, cwd=REPO, env=env, preexec_fn=lambda: os.sched_setaffinity(0, {core}))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the token server exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return server
        except OSError:
            time.sleep(0.1)
    server.terminate()
    raise SystemExit("the token server did not answer /healthz within 30 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per endpoint")
    parser.add_argument("--connections", type=int, default=32, help="concurrent keep-alive connections")
    parser.add_argument("--server-core", type=int, default=0)
    parser.add_argument("--client-core", type=int, default=1)
    parser.add_argument("--loop", default="auto", help="uvicorn's --loop (auto: uvloop when installed)")
    parser.add_argument("--http", default="auto", help="uvicorn's --http (auto: httptools when installed)")
    args = parser.parse_args()

    os.sched_setaffinity(0, {args.client_core})
    port = free_port()
    server = start_server(port, args.server_core, args.loop, args.http)
    loop = "uvloop" if args.loop == "auto" and importlib.util.find_spec("uvloop") else args.loop
    http = "httptools" if args.http == "auto" and importlib.util.find_spec("httptools") else args.http
    print(
        f"token server (uvicorn, 1 worker, loop {loop}, http {http}) on core {args.server_core}; "
        f"load from core {args.client_core} over {args.connections} connections, {args.seconds:.0f} s per endpoint"
    )
    try:
        for endpoint in endpoints(port):
            asyncio.run(load(port, endpoint, 1.0, args.connections, None))  # warm-up, not counted
            tally = Tally()
            server_cpu, client_cpu = cpu_seconds(server.pid), time.process_time()
            elapsed = asyncio.run(load(port, endpoint, args.seconds, args.connections, tally))
            server_cpu, client_cpu = cpu_seconds(server.pid) - server_cpu, time.process_time() - client_cpu
            done = sorted(tally.latencies)
            p50, p95 = (statistics.quantiles(done, n=100)[i] * 1000 for i in (49, 94)) if len(done) > 1 else (0, 0)
            print(
                f"{endpoint.name:<16} {len(done) / elapsed:8.0f} req/s  p50 {p50:6.2f} ms  p95 {p95:6.2f} ms  "
                f"errors {tally.errors} of {len(done)}  (CPU: server {server_cpu / elapsed:.0%}, "
                f"client {client_cpu / elapsed:.0%})"
            )
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
