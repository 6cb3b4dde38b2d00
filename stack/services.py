"""Child processes with readiness checks, log capture and clean shutdown."""

from __future__ import annotations

import collections
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from stack.settings import StackSettings

REPO = Path(__file__).resolve().parent.parent


class StackError(RuntimeError):
    """Start-up failed; the message is one line that names the fix."""


def http_ok(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    return check


def check_port_free(port: int, what: str, udp: bool = False) -> None:
    kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as sock:
        if not udp:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0" if udp else "127.0.0.1", port))
        except OSError:
            proto = "udp" if udp else "tcp"
            raise StackError(
                f"port {port}/{proto} for {what} is already in use: stop what holds it "
                f"(`ss -lnp{'u' if udp else 't'}p | grep :{port}`) or choose another port in .env"
            ) from None


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _free(port: int, count: int = 1) -> bool:
    for p in range(port, port + count):
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            with socket.socket(socket.AF_INET, kind) as sock:
                try:
                    sock.bind(("127.0.0.1", p))
                except OSError:
                    return False
    return True


ERROR_MARKS = ('"level": "ERROR"', '"level": "CRITICAL"', "Error", "Traceback")
_handed_out: set[int] = set()
SINGLE_PORTS = (24000, 32000)  # free_port's band; free_port_block's is below it
BLOCK_PORTS = (10000, 24000)


def free_port_block(count: int = 1, band: tuple[int, int] = BLOCK_PORTS) -> int:
    """The first of `count` consecutive loopback ports free for TCP and UDP, chosen below the kernel's ephemeral
    range: a port from that range can be taken by any outgoing connection between this choice and the server's
    bind, which made a test stack's agent fail to start now and then."""
    low, high = band
    if _ephemeral_low() < high:  # an unusual kernel setting: fall back to the kernel's choice
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]
    for _ in range(200):
        port = random.randrange(low, high - count + 1)
        block = set(range(port, port + count))
        if not block & _handed_out and _free(port, count):
            _handed_out.update(block)
            return port
    raise StackError(f"no {count} free consecutive loopback ports between {low} and {high}")


def free_port() -> int:
    """A loopback port free for TCP and UDP, never handed out before by this process."""
    return free_port_block(1, SINGLE_PORTS)


def describe_exit(returncode: int | None) -> str:
    """How a process ended, in words: "exited with SIGKILL (signal 9)", "exited with code 2"."""
    if returncode is None:
        return "is still running"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "signal"
        return f"exited with {name} (signal {-returncode})"
    return f"exited with code {returncode}"


@dataclass
class Service:
    name: str
    argv: list[str]
    env: dict[str, str]
    ready: Callable[[], bool] | None = None
    ready_line: str | None = None
    log_path: Path | None = None
    echo: bool = False
    stop_timeout: float = 15.0
    start_timeout: float = 30.0  # how long a (re)start may take to become ready
    proc: subprocess.Popen | None = None
    tail: collections.deque = field(default_factory=lambda: collections.deque(maxlen=40))
    # (time.monotonic(), line) of the latest lines, for whoever watches for a line (tests, the supervisor)
    history: collections.deque = field(default_factory=lambda: collections.deque(maxlen=5000))
    stopping: bool = False  # set by stop(): an exit from now on is asked for, not a crash
    _line_seen: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        """Starts the program (again: a service that has exited may be started anew)."""
        self.stopping = False
        self._line_seen = seen = threading.Event()  # a new event per start: an old process's lines count no more
        self.proc = proc = subprocess.Popen(
            self.argv,
            cwd=REPO,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        threading.Thread(target=self._pump, args=(proc, seen), name=f"log-{self.name}", daemon=True).start()

    def _pump(self, proc: subprocess.Popen, seen: threading.Event) -> None:
        assert proc.stdout
        with open(self.log_path or os.devnull, "a", encoding="utf-8") as log:
            for raw in proc.stdout:
                line = raw.decode("utf-8", "replace").rstrip()
                self.tail.append(line)
                self.history.append((time.monotonic(), line))
                log.write(line + "\n")
                log.flush()
                if self.echo:
                    print(f"{self.name:>13} | {line}", flush=True)
                if self.ready_line and self.ready_line in line:
                    seen.set()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exit_description(self) -> str:
        return describe_exit(self.proc.poll() if self.proc else None)

    def lines_since(self, since: float, text: str) -> list[float]:
        """When lines containing `text` were printed after `since` (time.monotonic())."""
        return [at for at, line in list(self.history) if at > since and text in line]

    def last_words(self) -> str:
        """The last line of output, after the last error line when one came before it (a worker logs its
        failure, then "draining worker")."""
        lines = [line for line in self.tail if line.strip()]
        if not lines:
            return "(no output)"
        errors = [line for line in lines if any(mark in line for mark in ERROR_MARKS)]
        if errors and errors[-1] != lines[-1]:
            return f"{errors[-1][:2000]} ... {lines[-1]}"
        return lines[-1]

    def is_ready(self) -> bool:
        """Ready now (its line seen and its check passing); does not wait."""
        line_ok = self.ready_line is None or self._line_seen.is_set()
        return self.alive() and line_ok and (self.ready is None or self.ready())

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise StackError(f"{self.name} {self.exit_description()} during start-up: {self.last_words()}")
            if self.is_ready():
                return
            time.sleep(0.1)
        raise StackError(f"{self.name} was not ready after {timeout:.0f} s; last output: {self.last_words()}")

    def kill_leftovers(self) -> None:
        """After the main process has died: its children (a job process, a forkserver) go too, so none holds a
        port or the log pipe when the service starts again."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def stop(self) -> None:
        self.stopping = True
        if not self.alive():
            self.kill_leftovers()
            return
        assert self.proc
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            self.kill_leftovers()
            self.proc.wait(5)
        self.kill_leftovers()


def redis_ok(port: int) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    return check


def sip_ok(port: int) -> Callable[[], bool]:
    """livekit-sip answers a SIP OPTIONS request once it listens."""

    def check() -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.5)
            sock.bind(("127.0.0.1", 0))
            here = sock.getsockname()[1]
            probe = (
                f"OPTIONS sip:ping@127.0.0.1:{port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{here};branch=z9hG4bK-{time.monotonic_ns()}\r\n"
                "Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=probe\r\nTo: <sip:ping@127.0.0.1>\r\n"
                f"Call-ID: probe-{time.monotonic_ns()}@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
            )
            try:
                sock.sendto(probe.encode(), ("127.0.0.1", port))
                return sock.recv(2048).startswith(b"SIP/2.0")
            except OSError:
                return False

    return check


def tool_binary(name: str, env_name: str, fix: str) -> str:
    """A program scripts/setup found or built (.tools/bin), unless the env names another."""
    for candidate in (os.environ.get(env_name), str(REPO / ".tools" / "bin" / name)):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise StackError(f"{name} not found: {fix} or set {env_name}")


def livekit_binary() -> str:
    return tool_binary("livekit-server", "LIVEKIT_SERVER_BIN", "run `bash scripts/setup` (it builds it with Go)")


def sip_binary() -> str:
    return tool_binary("livekit-sip", "LIVEKIT_SIP_BIN", "run `bash scripts/setup --telephony` (it builds it with Go)")


def redis_binary() -> str:
    import shutil

    found = os.environ.get("REDIS_SERVER_BIN") or shutil.which("redis-server")
    if not found:
        raise StackError("redis-server not found: run `bash scripts/setup --telephony` (apt redis-server)")
    return found


class Stack:
    """livekit-server + agent worker + token server, on loopback, with the given ports."""

    def __init__(
        self,
        settings: StackSettings | None = None,
        *,
        env: dict[str, str] | None = None,
        log_dir: Path | None = None,
        echo: bool = False,
        with_agent: bool = True,
        workers: int = 1,
        telephony: bool | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = s = settings or StackSettings()
        self.log_dir = log_dir
        self.echo = echo
        self.with_agent = with_agent
        self.workers = max(1, workers)  # agent worker processes: they register with livekit-server and share calls
        self.telephony = s.stack_telephony if telephony is None else telephony
        self.progress = progress or (lambda _message: None)
        self.livekit_url = f"ws://127.0.0.1:{s.livekit_port}"
        self.token_url = f"http://127.0.0.1:{s.token_server_port}"
        self.env = {
            **os.environ,
            **(env or {}),
            "LIVEKIT_URL": self.livekit_url,
            "LIVEKIT_API_KEY": s.livekit_api_key,
            "LIVEKIT_API_SECRET": s.livekit_api_secret,
            "TOKEN_SERVER_PORT": str(s.token_server_port),
            "AGENT_HTTP_PORT": str(s.agent_http_port),
            "AGENT_METRICS_PORT": str(s.agent_metrics_port),
            "PYTHONUNBUFFERED": "1",
        }
        self.services: list[Service] = []
        self._tmp = tempfile.TemporaryDirectory(prefix="stack-")

    def _log(self, name: str) -> Path | None:
        return self.log_dir / f"{name}.log" if self.log_dir else None

    def _livekit_config(self) -> str:
        config = yaml.safe_load((REPO / "livekit.yaml").read_text())
        config["port"] = self.settings.livekit_port
        config["rtc"]["tcp_port"] = self.settings.livekit_rtc_tcp_port
        config["rtc"]["udp_port"] = self.settings.livekit_rtc_udp_port
        config.pop("prometheus_port", None)
        if self.telephony:
            config["redis"] = {"address": f"127.0.0.1:{self.settings.redis_port}"}
        else:
            config.pop("redis", None)
        if self.settings.livekit_prometheus_port:
            config["prometheus"] = {**config.get("prometheus", {}), "port": self.settings.livekit_prometheus_port}
        else:
            config.pop("prometheus", None)
        path = Path(self._tmp.name) / "livekit.yaml"
        path.write_text(yaml.safe_dump(config))
        return str(path)

    def _sip_config(self) -> str:
        s = self.settings
        config = yaml.safe_load((REPO / "sip.yaml").read_text())
        config.update(
            api_key=s.livekit_api_key,
            api_secret=s.livekit_api_secret,
            ws_url=self.livekit_url,
            redis={"address": f"127.0.0.1:{s.redis_port}"},
            sip_port=s.sip_port,
            rtp_port=f"{s.sip_rtp_port_start}-{s.sip_rtp_port_end}",
        )
        path = Path(self._tmp.name) / "sip.yaml"
        path.touch(mode=0o600)  # it holds the API secret
        path.write_text(yaml.safe_dump(config))
        return str(path)

    def check_ports(self) -> None:
        s = self.settings
        check_port_free(s.livekit_port, "livekit-server signalling")
        check_port_free(s.livekit_rtc_tcp_port, "livekit-server ICE/TCP")
        check_port_free(s.livekit_rtc_udp_port, "livekit-server ICE/UDP", udp=True)
        if s.livekit_prometheus_port:
            check_port_free(s.livekit_prometheus_port, "livekit-server metrics")
        check_port_free(s.token_server_port, "the token server")
        if self.telephony:
            if not redis_ok(s.redis_port)():  # a Redis already there (e.g. Debian's service) is used as it is
                check_port_free(s.redis_port, "Redis")
            check_port_free(s.sip_port, "livekit-sip (SIP over TCP)")
            check_port_free(s.sip_port, "livekit-sip (SIP over UDP)", udp=True)
        if self.with_agent:
            check_port_free(s.agent_http_port, "the agent worker's health server")
            if s.agent_metrics_port:
                check_port_free(s.agent_metrics_port, "the agent worker's metrics")

    def start(self, agent_timeout: float = 300.0) -> None:
        self.check_ports()
        s = self.settings
        python = sys.executable
        if self.telephony and redis_ok(s.redis_port)():
            self.progress(f"using the Redis already running on 127.0.0.1:{s.redis_port}")
        elif self.telephony:
            redis = Service(
                "redis",
                [redis_binary(), "--bind", "127.0.0.1", "--port", str(s.redis_port)]
                + ["--save", "", "--appendonly", "no"],
                self.env,
                ready=redis_ok(s.redis_port),
                log_path=self._log("redis"),
                echo=self.echo,
            )
            self._run(redis, 15)
        livekit = Service(
            "livekit-server",
            [livekit_binary(), "--config", self._livekit_config()],
            {**self.env, "LIVEKIT_KEYS": f"{s.livekit_api_key}: {s.livekit_api_secret}"},
            ready=http_ok(f"http://127.0.0.1:{s.livekit_port}/"),
            log_path=self._log("livekit-server"),
            echo=self.echo,
        )
        self._run(livekit, 30)
        if self.telephony:
            sip = Service(
                "livekit-sip",
                [sip_binary(), "--config", self._sip_config()],
                self.env,
                ready=sip_ok(s.sip_port),
                log_path=self._log("livekit-sip"),
                echo=self.echo,
            )
            self._run(sip, 30)
            self.progress("applying telephony.yaml (trunks and dispatch rule) ...")
            from stack import telephony

            server = telephony.Server(self.livekit_url, s.livekit_api_key, s.livekit_api_secret)
            try:
                for line in telephony.apply_file(REPO / s.telephony_config, server):
                    self.progress(line)
            except telephony.TelephonyError as exc:
                raise StackError(str(exc)) from None
        if self.with_agent:
            self.start_agent(timeout=agent_timeout)
            for n in range(2, self.workers + 1):
                # Each further worker: its own health port, and its metrics on a free port (logged at start).
                ports = {"AGENT_HTTP_PORT": str(free_port()), "AGENT_METRICS_PORT": str(free_port())}
                self.start_agent(ports, timeout=agent_timeout, name=f"agent-{n}")
        token = Service(
            "token-server",
            [python, "-m", "token_server"],
            self.env,
            ready=http_ok(f"{self.token_url}/healthz"),
            log_path=self._log("token-server"),
            echo=self.echo,
        )
        self._run(token, 30)

    def start_agent(self, env: dict[str, str] | None = None, timeout: float = 300.0, name: str = "agent") -> Service:
        """An agent worker, started as `scripts/up` starts it, with `env` over the stack's environment; ready once it
        has registered with livekit-server."""
        agent = Service(
            name,
            [sys.executable, "-m", "agent.main", "start"],
            {**self.env, **(env or {})},
            ready_line="registered worker",
            log_path=self._log(name),
            echo=self.echo,
        )
        self._run(agent, timeout)
        return agent

    def stop_service(self, service: Service) -> None:
        service.stop()
        if service in self.services:
            self.services.remove(service)

    def _run(self, service: Service, timeout: float) -> None:
        service.start_timeout = timeout
        self.services.append(service)
        started = time.monotonic()
        self.progress(f"starting {service.name} ...")
        service.start()
        service.wait_ready(timeout)
        self.progress(f"{service.name} ready in {time.monotonic() - started:.1f} s (pid {service.pid})")

    def service(self, name: str) -> Service:
        return next(svc for svc in self.services if svc.name == name)

    def dead(self) -> Service | None:
        return next((svc for svc in self.services if not svc.alive()), None)

    def stop(self) -> None:
        for service in reversed(self.services):
            service.stop()
        self.services.clear()
        self._tmp.cleanup()

    def __enter__(self) -> Stack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
