"""`python -m stack up`: start everything on loopback, print where to open it, stop it all on Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import sys
import time

from stack.services import REPO, Stack, StackError


def up(args: argparse.Namespace) -> int:
    stack = Stack(echo=args.verbose, log_dir=REPO / ".tools" / "logs", progress=lambda m: print(f"  {m}", flush=True))
    (REPO / ".tools" / "logs").mkdir(parents=True, exist_ok=True)
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
        f"  logs: {REPO / '.tools' / 'logs'}\n"
        "Press Ctrl-C to stop.",
        flush=True,
    )
    code = 0
    while not stopping:
        if dead := stack.dead():
            print(f"stack: {dead.name} stopped unexpectedly: {dead.last_words()}", file=sys.stderr)
            code = 1
            break
        time.sleep(0.5)
    print("stopping ...", flush=True)
    stack.stop()
    print("stopped.", flush=True)
    return code


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m stack")
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser("up", help="start the whole stack on loopback")
    cmd.add_argument("-v", "--verbose", action="store_true", help="show every service's log lines")
    cmd.set_defaults(func=up)
    args = parser.parse_args()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
