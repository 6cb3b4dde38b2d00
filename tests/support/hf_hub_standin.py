"""A loopback stand-in for the Hugging Face Hub, speaking the part of its HTTP API that `huggingface_hub` (2.x)
uses to download a model repo with `snapshot_download` / `hf_hub_download` when `HF_ENDPOINT` points at it:

- `GET /api/models/{repo}` and `GET /api/models/{repo}/revision/{revision}`: the repo's info (`id`, `sha`: the
  commit the revision resolves to, `siblings`);
- `GET /api/models/{repo}/tree/{revision}[/{path}]?recursive=...`: the file listing (`type`, `path`, `size`, `oid`,
  and `lfs` for large files), which snapshot_download caches per commit;
- `HEAD` and `GET /{repo}/resolve/{revision}/{file}`: a file's metadata in headers (`X-Repo-Commit`, `ETag`,
  `Content-Length`) and its bytes. Large (LFS) files answer as the Hub does: a 302 to a CDN (here a second loopback
  port, so a different origin that huggingface_hub does not follow on HEAD) with `X-Linked-Etag` (the sha256) and
  `X-Linked-Size`; the CDN serves `GET`/`HEAD /cdn/{sha256}` with `Range` support (resumed downloads).
- errors as the Hub signals them: 404 with `X-Error-Code` RepoNotFound / RevisionNotFound / EntryNotFound;
- `GET /api/agent-harnesses`: the registry of AI coding agents that huggingface_hub 2.x fetches (at most once a day,
  cached in HF_HOME) to name the agent in its User-Agent; here an empty one.

It sends no Xet headers (`X-Xet-Hash`, `Link: ...xet-auth`), so downloads take the plain HTTP path even where
`hf_xet` is installed. Every request is recorded as `(method, path)` in `requests`, so tests can assert what was
fetched; `fetches(name)` counts the GETs of a file's bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

LFS_THRESHOLD = 10 << 20  # the Hub stores files above 10 MB in LFS
CHUNK = 1 << 20


@dataclass(frozen=True)
class HubFile:
    path: str  # in the repo
    source: Path  # on this machine
    size: int
    blob_id: str  # git blob sha1 (of the LFS pointer for LFS files)
    sha256: str | None  # LFS files only

    @property
    def etag(self) -> str:
        return self.sha256 or self.blob_id


def _git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _hub_file(path: str, source: Path) -> HubFile:
    size = source.stat().st_size
    if size <= LFS_THRESHOLD:
        return HubFile(path, source, size, _git_blob_id(source.read_bytes()), None)
    digest = hashlib.sha256()
    with open(source, "rb") as f:
        while chunk := f.read(8 * CHUNK):
            digest.update(chunk)
    sha256 = digest.hexdigest()
    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()
    return HubFile(path, source, size, _git_blob_id(pointer), sha256)


class HubRepo:
    """A model repo at one commit on the `main` branch: the files of a local folder (plus any `extra` files)."""

    def __init__(self, repo_id: str, folder: Path, extra: dict[str, bytes] | None = None, workdir: Path | None = None):
        self.repo_id = repo_id
        sources = {p.name: p for p in sorted(Path(folder).iterdir()) if p.is_file() and not p.name.startswith(".")}
        if extra:
            if workdir is None:
                raise ValueError("extra files need a workdir to be written to")
            for name, data in extra.items():
                target = Path(workdir) / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
                sources[name] = target
        self.files = {name: _hub_file(name, source) for name, source in sorted(sources.items())}
        self.sha = hashlib.sha1("".join(f.path + f.blob_id for f in self.files.values()).encode()).hexdigest()

    def resolves(self, revision: str) -> bool:
        return revision in ("main", self.sha)

    def info(self) -> dict:
        return {
            "_id": self.sha[:24],
            "id": self.repo_id,
            "modelId": self.repo_id,
            "author": self.repo_id.split("/")[0],
            "sha": self.sha,
            "lastModified": "2024-01-01T00:00:00.000Z",
            "private": False,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": ["ctranslate2", "audio", "automatic-speech-recognition"],
            "library_name": "ctranslate2",
            "siblings": [{"rfilename": name} for name in self.files],
        }

    def tree(self, path: str) -> list[dict]:
        entries = []
        for f in self.files.values():
            if path and not f.path.startswith(path.rstrip("/") + "/"):
                continue
            entry: dict = {"type": "file", "oid": f.blob_id, "size": f.size, "path": f.path}
            if f.sha256:
                entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": 134}
            entries.append(entry)
        return entries


class HubStandIn:
    """`with HubStandIn([HubRepo(...)]) as hub:` then `HF_ENDPOINT=hub.endpoint`."""

    def __init__(self, repos: list[HubRepo]):
        self.repos = {repo.repo_id: repo for repo in repos}
        self.requests: list[tuple[str, str]] = []  # (method, path with query), hub and CDN alike
        self._lock = threading.Lock()
        self._servers: list[ThreadingHTTPServer] = []
        self._threads: list[threading.Thread] = []
        self._ports: dict[str, int] = {}
        self._connections: set[socket.socket] = set()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._ports['hub']}"

    @property
    def cdn(self) -> str:
        return f"http://127.0.0.1:{self._ports['cdn']}"

    def fetches(self, name: str) -> int:
        """How many times the bytes of a file named `name` were requested (GETs on the Hub or on the CDN)."""
        by_sha = {f.sha256: f.path for repo in self.repos.values() for f in repo.files.values() if f.sha256}

        def names(path: str) -> bool:
            target = unquote(urlsplit(path).path)
            if target.startswith("/cdn/"):
                return by_sha.get(target.rsplit("/", 1)[-1]) == name
            return "/resolve/" in target and target.endswith("/" + name)

        return sum(1 for method, path in self.requests if method == "GET" and names(path))

    def start(self) -> HubStandIn:
        for role in ("hub", "cdn"):
            server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler(role))
            server.daemon_threads = True
            self._ports[role] = server.server_address[1]
            thread = threading.Thread(target=server.serve_forever, name=f"hf-{role}-standin", daemon=True)
            thread.start()
            self._servers.append(server)
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop listening (new connections are refused); safe to call twice."""
        servers, self._servers = self._servers, []
        for server in servers:
            server.shutdown()
            server.server_close()
        with self._lock:  # and drop kept-alive connections, so a stopped hub answers nothing
            connections, self._connections = self._connections, set()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(5)

    def __enter__(self) -> HubStandIn:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _record(self, method: str, path: str) -> None:
        with self._lock:
            self.requests.append((method, path))

    def _handler(self, role: str) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as httpx expects; every answer has a Content-Length

            def log_message(self, *args) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                with hub._lock:
                    hub._connections.add(self.connection)

            def finish(self) -> None:
                with hub._lock:
                    hub._connections.discard(self.connection)
                with contextlib.suppress(OSError):
                    super().finish()

            def do_HEAD(self) -> None:  # noqa: N802
                self._answer(head=True)

            def do_GET(self) -> None:  # noqa: N802
                self._answer(head=False)

            def _answer(self, head: bool) -> None:
                hub._record(self.command, self.path)
                path = unquote(urlsplit(self.path).path)
                if role == "cdn":
                    self._cdn(path, head)
                elif path == "/api/agent-harnesses":  # huggingface_hub >= 2.x fetches it once a day (see above)
                    self._json({"standardEnvVars": ["AI_AGENT", "AGENT"], "harnesses": {}}, head)
                elif path.startswith("/api/models/"):
                    self._api(path[len("/api/models/") :], head)
                elif m := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
                    self._resolve(m.group(1), m.group(2), m.group(3), head)
                else:
                    self._error(404, "EntryNotFound", "not a Hub route", head)

            def _api(self, rest: str, head: bool) -> None:
                m = re.fullmatch(r"([^/]+/[^/]+)(?:/revision/([^/]+)|/tree/([^/]+)(?:/(.*))?)?", rest)
                repo = hub.repos.get(m.group(1)) if m else None
                if repo is None:
                    return self._error(404, "RepoNotFound", "Repository not found", head)
                revision = m.group(2) or m.group(3) or "main"
                if not repo.resolves(revision):
                    return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", head)
                body = repo.tree(m.group(4) or "") if m.group(3) else repo.info()
                self._json(body, head)

            def _resolve(self, repo_id: str, revision: str, name: str, head: bool) -> None:
                repo = hub.repos.get(repo_id)
                if repo is None:
                    return self._error(404, "RepoNotFound", "Repository not found", head)
                if not repo.resolves(revision):
                    return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", head)
                f = repo.files.get(name)
                if f is None:
                    return self._error(404, "EntryNotFound", "Entry not found", head, commit=repo.sha)
                if f.sha256:  # LFS: the Hub redirects to its CDN, naming the real file in X-Linked-* headers
                    self.send_response(302)
                    self.send_header("Location", f"{hub.cdn}/cdn/{f.sha256}")
                    self.send_header("X-Repo-Commit", repo.sha)
                    self.send_header("ETag", f'"{f.blob_id}"')
                    self.send_header("X-Linked-Etag", f'"{f.sha256}"')
                    self.send_header("X-Linked-Size", str(f.size))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self._file(f, head, {"X-Repo-Commit": repo.sha, "ETag": f'"{f.blob_id}"'})

            def _cdn(self, path: str, head: bool) -> None:
                sha256 = path.rsplit("/", 1)[-1]
                for repo in hub.repos.values():
                    for f in repo.files.values():
                        if path.startswith("/cdn/") and f.sha256 == sha256:
                            return self._file(f, head, {"ETag": f'"{f.sha256}"'})
                self._error(404, None, "NoSuchKey", head)

            def _file(self, f: HubFile, head: bool, headers: dict[str, str]) -> None:
                start, end = 0, f.size - 1
                partial = False
                if (rng := self.headers.get("Range")) and (m := re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())):
                    start = int(m.group(1))
                    end = min(int(m.group(2)), f.size - 1) if m.group(2) else f.size - 1
                    if start >= f.size:
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{f.size}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    partial = True
                self.send_response(206 if partial else 200)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Type", "application/octet-stream")
                if partial:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{f.size}")
                self.send_header("Content-Length", str(end - start + 1))
                self.end_headers()
                if head:
                    return
                with open(f.source, "rb") as src:
                    src.seek(start)
                    remaining = end - start + 1
                    try:
                        while remaining > 0 and (chunk := src.read(min(CHUNK, remaining))):
                            self.wfile.write(chunk)
                            remaining -= len(chunk)
                    except (BrokenPipeError, ConnectionResetError):
                        self.close_connection = True

            def _json(self, body: object, head: bool) -> None:
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if not head:
                    self.wfile.write(data)

            def _error(self, status: int, code: str | None, message: str, head: bool, commit: str | None = None):
                data = json.dumps({"error": message}).encode()
                self.send_response(status)
                if code:
                    self.send_header("X-Error-Code", code)
                    self.send_header("X-Error-Message", message)
                if commit:
                    self.send_header("X-Repo-Commit", commit)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if not head:
                    self.wfile.write(data)

        return Handler
