"""`python -m stack up`: start everything on loopback, print where to open it, keep it running (a service that dies
is started again, the agent is sent back into rooms that lost it), stop it all on Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from pathlib import Path

from stack import redispatch, telephony
from stack.services import REPO, Service, Stack, StackError
from stack.settings import StackSettings
from stack.supervisor import Supervisor


def up(args: argparse.Namespace) -> int:
    log_dir = Path(args.log_dir) if args.log_dir else REPO / ".tools" / "logs"
    stack = Stack(
        echo=args.verbose,
        log_dir=log_dir,
        telephony=args.telephony or None,
        workers=args.workers,
        progress=lambda m: print(f"  {m}", flush=True),
    )
    log_dir.mkdir(parents=True, exist_ok=True)
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print("starting the stack (the agent worker loads its models and warms the LLM first) ...", flush=True)
    try:
        stack.start()
    except StackError as exc:
        stack.stop()
        print(f"stack: {exc}", file=sys.stderr)
        return 2
    print(
        f"\nReady. Open {stack.token_url} and press Connect to talk to the agent.\n"
        f"  livekit-server: {stack.livekit_url}  (keys from LIVEKIT_API_KEY / LIVEKIT_API_SECRET)\n"
        f"  token endpoint: POST {stack.token_url}/api/token\n"
        + (
            f"  telephony: SIP on 127.0.0.1:{stack.settings.sip_port} (udp/tcp), trunks in telephony.yaml;\n"
            "    outbound: uv run python -m stack call <number>\n"
            if stack.telephony
            else ""
        )
        + f"  logs: {log_dir}\n"
        "A service that stops is started again; Ctrl-C stops everything.",
        flush=True,
    )
    watcher = _redispatcher(stack.livekit_url, stack.settings)
    watching = redispatch.Thread(watcher).start()
    hooks = redispatch.hooks(watcher)

    def on_ready(service: Service) -> None:
        hooks["on_ready"](service)
        if service.name == "redis":  # trunks and dispatch rules lived in the Redis that died (it keeps no files)
            try:
                server = telephony.Server(
                    stack.livekit_url, stack.settings.livekit_api_key, stack.settings.livekit_api_secret
                )
                for line in telephony.apply_file(REPO / stack.settings.telephony_config, server):
                    print(f"  {line}", flush=True)
            except (telephony.TelephonyError, OSError) as exc:
                print(f"stack: re-applying telephony.yaml failed ({exc}): run `python -m stack provision`", flush=True)

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    supervisor = Supervisor(stack, say=say, on_exit=hooks["on_exit"], on_ready=on_ready)
    code = 0
    try:
        while not stopping:
            if reason := supervisor.poll():
                print(f"stack: {reason}", file=sys.stderr, flush=True)
                code = 1
                break
            time.sleep(0.2)
    finally:
        print("stopping ...", flush=True)
        watching.stop()
        stack.stop()
        print("stopped.", flush=True)
    return code


def _redispatcher(url: str, s: StackSettings) -> redispatch.Redispatcher:
    return redispatch.Redispatcher(
        url,
        s.livekit_api_key,
        s.livekit_api_secret,
        os.environ.get("AGENT_NAME") or "voice-agent",
        say=lambda m: print(m, file=sys.stderr, flush=True),
    )


def watch(args: argparse.Namespace) -> int:
    """`python -m stack redispatch`: the watcher alone, against the livekit-server at LIVEKIT_URL."""
    s = StackSettings()
    url = os.environ.get("LIVEKIT_URL") or f"ws://127.0.0.1:{s.livekit_port}"
    stop = asyncio.Event()

    async def run() -> None:
        loop = asyncio.get_running_loop()
        watcher = _redispatcher(url, s)
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, lambda: (stop.set(), watcher.wake()))
        print(f"re-dispatching {watcher.agent_name} into rooms that lose it ({url})", flush=True)
        await watcher.run(stop)

    asyncio.run(run())
    return 0


def _server() -> telephony.Server:
    s = StackSettings()
    return telephony.Server(f"ws://127.0.0.1:{s.livekit_port}", s.livekit_api_key, s.livekit_api_secret)


def provision(args: argparse.Namespace) -> int:
    try:
        for line in telephony.apply_file(Path(args.file), _server()):
            print(line)
    except (telephony.TelephonyError, OSError) as exc:
        print(f"provision: {exc}", file=sys.stderr)
        return 2
    return 0


def call(args: argparse.Namespace) -> int:
    async def run() -> telephony.CallResult:
        async with _server().client() as lk:
            return await telephony.call(
                lk, args.number, trunk=args.trunk, agent=args.agent, ringing_timeout_s=args.ring_timeout
            )

    try:
        result = asyncio.run(run())
    except (telephony.TelephonyError, OSError) as exc:
        print(f"call: {exc}", file=sys.stderr)
        return 2
    print(f"{result.outcome} (SIP {result.sip_status} {result.detail}); room {result.room}")
    return 0 if result.outcome == "answered" else 1


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m stack")
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser("up", help="start the whole stack on loopback")
    cmd.add_argument("-v", "--verbose", action="store_true", help="show every service's log lines")
    cmd.add_argument("--telephony", action="store_true", help="also start Redis and livekit-sip (phone calls)")
    cmd.add_argument("--log-dir", help="where the services' logs go (default .tools/logs)")
    cmd.add_argument(
        "--workers", type=int, default=1, help="agent worker processes (each takes MAX_SESSIONS calls; default 1)"
    )
    cmd.set_defaults(func=up)
    cmd = sub.add_parser("redispatch", help="only send the agent back into rooms that lost it (LIVEKIT_URL's server)")
    cmd.set_defaults(func=watch)
    cmd = sub.add_parser("provision", help="apply telephony.yaml (trunks, dispatch rule) to the running livekit-server")
    cmd.add_argument("file", nargs="?", default=str(REPO / "telephony.yaml"))
    cmd.set_defaults(func=provision)
    cmd = sub.add_parser("call", help="make the agent call a phone number through an outbound trunk")
    cmd.add_argument("number", help="the number to call, e.g. +15550123")
    cmd.add_argument("--trunk", default="local-out", help="outbound trunk name from telephony.yaml")
    cmd.add_argument("--agent", default=os.environ.get("AGENT_NAME", "voice-agent"))
    cmd.add_argument("--ring-timeout", type=int, default=30, help="seconds to let it ring")
    cmd.set_defaults(func=call)
    args = parser.parse_args()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
