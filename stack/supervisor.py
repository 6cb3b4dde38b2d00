"""Keeps the stack's services running: a service that dies is started again after a growing pause, the others stay
up, and a service that keeps dying stops the stack with one clear line.

`python -m stack up` runs `Supervisor.poll` twice a second. Each exit is reported by how the process ended (its exit
code or the signal that killed it), not by its last log line:

    stack: agent exited with SIGKILL (signal 9); restarting in 1 s (restart 1)
    stack: agent is back (ready in 7.9 s, pid 4242)

The pause doubles from `first_delay` with each crash (1 s, 2 s, 4 s ... up to `max_delay`) and goes back to the first
step once the service has run `healthy_after` seconds. `crash_limit` exits within `crash_window` seconds stop the
stack. A clean exit (code 0: an agent worker that was sent SIGTERM finishes its calls and exits 0) is a stop, not a
crash: the service is started again at once, with no pause.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from stack.services import Service, Stack


@dataclass
class Policy:
    first_delay: float = 1.0
    max_delay: float = 30.0
    healthy_after: float = 60.0  # running this long resets the pause to first_delay
    crash_limit: int = 5  # this many exits ...
    crash_window: float = 60.0  # ... within this many seconds stop the stack


@dataclass
class _Watch:
    service: Service
    state: str = "running"  # running | waiting (to restart) | starting
    crashes: int = 0  # since the service last ran healthy_after seconds: sets the pause
    restarts: int = 0
    exits: collections.deque = field(default_factory=collections.deque)  # when it exited, for crash_limit
    since: float = 0.0  # running: when it became ready; starting: when it was started
    restart_at: float = 0.0


class Supervisor:
    def __init__(
        self,
        stack: Stack,
        policy: Policy | None = None,
        say: Callable[[str], None] = print,
        clock: Callable[[], float] = time.monotonic,
        on_exit: Callable[[Service], None] | None = None,
        on_ready: Callable[[Service], None] | None = None,
    ) -> None:
        """`on_exit(service)` is called when a service has exited by itself, `on_ready(service)` when it is back."""
        self.stack = stack
        self.policy = policy or Policy()
        self.say = say
        self.clock = clock
        self.on_exit = on_exit or (lambda _service: None)
        self.on_ready = on_ready or (lambda _service: None)
        now = clock()
        self._watches = {id(svc): _Watch(svc, since=now) for svc in stack.services}

    def _watched(self) -> list[_Watch]:
        """The stack's services now (a test may start or stop a second agent meanwhile)."""
        current = {id(svc): svc for svc in self.stack.services}
        for key in list(self._watches):
            if key not in current:
                del self._watches[key]
        for key, svc in current.items():
            self._watches.setdefault(key, _Watch(svc, since=self.clock()))
        return list(self._watches.values())

    def poll(self) -> str | None:
        """One round: restarts what is due. Returns why the stack must stop, or None."""
        now = self.clock()
        for watch in self._watched():
            svc = watch.service
            if svc.stopping:  # stopped on purpose (Stack.stop, stop_service)
                continue
            if watch.state == "running":
                if not svc.alive():
                    if reason := self._exited(watch, now):
                        return reason
                elif watch.crashes and now - watch.since >= self.policy.healthy_after:
                    watch.crashes = 0
            elif watch.state == "waiting":
                if now >= watch.restart_at:
                    try:
                        svc.start()
                    except OSError as exc:  # its program is gone (rebuilt, deleted)
                        if reason := self._exited(watch, now, why=f"could not be started ({exc})"):
                            return reason
                        continue
                    watch.state, watch.since = "starting", now
            elif watch.state == "starting":
                if not svc.alive():
                    if reason := self._exited(watch, now, during_start=True):
                        return reason
                elif svc.is_ready():
                    took, watch.state, watch.since = now - watch.since, "running", now
                    self.say(f"stack: {svc.name} is back (ready in {took:.1f} s, pid {svc.pid})")
                    self.on_ready(svc)
                elif now - watch.since > svc.start_timeout:
                    svc.kill_leftovers()
                    svc.proc.wait(5)
                    if reason := self._exited(watch, now, why=f"was not ready after {svc.start_timeout:.0f} s"):
                        return reason
        return None

    def _exited(self, watch: _Watch, now: float, during_start: bool = False, why: str | None = None) -> str | None:
        svc = watch.service
        svc.kill_leftovers()
        self.on_exit(svc)
        how = why or svc.exit_description() + (" during start-up" if during_start else "")
        clean = why is None and svc.proc is not None and svc.proc.returncode == 0
        watch.exits.append(now)
        while watch.exits and now - watch.exits[0] > self.policy.crash_window:
            watch.exits.popleft()
        if len(watch.exits) >= self.policy.crash_limit:
            return (
                f"{svc.name} {how}; it exited {len(watch.exits)} times within {self.policy.crash_window:.0f} s, "
                f"so the stack stops. Its last output: {svc.last_words()}"
            )
        if clean:
            delay = 0.0
            what = f"{svc.name} stopped by itself ({how}); starting it again"
        else:
            watch.crashes += 1
            delay = min(self.policy.first_delay * 2 ** (watch.crashes - 1), self.policy.max_delay)
            what = f"{svc.name} {how}; restarting in {delay:g} s"
        watch.restarts += 1
        self.say(f"stack: {what} (restart {watch.restarts})")
        failed = why is not None or (svc.proc is not None and (svc.proc.returncode or 0) > 0)
        if failed and (words := svc.last_words()) != "(no output)":  # it may have said why (a signal says it all)
            self.say(f"  {svc.name}'s last output: {words[:500]}")
        watch.state, watch.restart_at = "waiting", now + delay
        return None
