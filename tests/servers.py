"""Real HTTP servers on 127.0.0.1 for the tests: a file host with faults on demand, and a small Hub.

`FileHost` serves bytes over HTTP/1.1 with Range/If-Range support, and can cut a body short, hang,
reset the connection, answer 5xx, ignore ranges or trickle slowly, one request at a time.
`HubServer` speaks enough of the Hugging Face Hub's HTTP API for huggingface_hub 2.x to download
(`resolve`, repo info) and to publish over the classic (non-xet) path: whoami, repo creation, branches,
YAML validation, preupload, the LFS batch/upload/verify exchange and NDJSON commits, pull-request refs.
Both record every request, so tests can assert what reached the network.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

CHUNK = 64 * 1024


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    app: Any  # set per server

    def log_message(self, *args: object) -> None:
        pass

    def _dispatch(self) -> None:
        self.app.log.append((self.command, self.path, dict(self.headers)))
        with suppress(BrokenPipeError, ConnectionResetError):
            self.app.handle(self)

    do_GET = do_HEAD = do_POST = do_PUT = _dispatch

    def body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def reply_json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
        self.reply(status, json.dumps(data).encode(), {"Content-Type": "application/json", **(headers or {})})


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        """Clients hang up on purpose in these tests; nothing to report."""


@contextmanager
def _serving(app: Any) -> Iterator[str]:
    handler = type("Handler", (_Handler,), {"app": app})
    server = _QuietServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def free_port() -> int:
    """A port nothing listens on (connections to it are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- a file host with faults ---------------------------------------------------------------------


@dataclass
class FileHost:
    files: dict[str, bytes] = field(default_factory=dict)
    faults: dict[str, list[str]] = field(default_factory=dict)  # path -> one fault per coming request
    delay: float = 0.0  # seconds between chunks of a body
    log: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    url: str = ""

    def add(self, path: str, data: bytes, *faults: str) -> str:
        self.files["/" + path.lstrip("/")] = data
        if faults:
            self.faults["/" + path.lstrip("/")] = list(faults)
        return f"{self.url}/{path.lstrip('/')}"

    def gets(self, path: str) -> list[dict[str, str]]:
        """Headers of every GET of `path`."""
        return [h for m, p, h in self.log if m == "GET" and p == "/" + path.lstrip("/")]

    @contextmanager
    def running(self) -> Iterator[FileHost]:
        with _serving(self) as url:
            self.url = url
            yield self

    def handle(self, h: _Handler) -> None:
        path = urlsplit(h.path).path
        queue = self.faults.get(path) or []
        fault = queue.pop(0) if queue else ""
        if fault == "hang":
            time.sleep(5)
        if fault == "reset":
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            h.close_connection = True
            return
        if fault == "500":
            h.reply(500, b"server error")
            return
        if path not in self.files:
            h.reply(404, b"not found")
            return
        data = self.files[path]
        etag = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
        start, status, headers = 0, 200, {"ETag": etag, "Accept-Ranges": "bytes"}
        m = re.match(r"bytes=(\d+)-$", h.headers.get("Range", ""))
        if_range = h.headers.get("If-Range")
        if m and fault != "ignore-range" and (if_range is None or if_range == etag):
            start = int(m.group(1))
            if start >= len(data):
                h.reply(416, b"", {"Content-Range": f"bytes */{len(data)}"})
                return
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if h.command == "HEAD":
            return
        end = len(body) // 2 if fault == "cut" else len(body)
        for i in range(0, end, CHUNK):
            h.wfile.write(body[i : min(i + CHUNK, end)])
            h.wfile.flush()
            if self.delay:
                time.sleep(self.delay)
        if fault == "cut":
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)


# --- a small Hugging Face Hub --------------------------------------------------------------------

RESOLVE = r"/(?:(?P<type>datasets|spaces)/)?(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)"
LFS_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")
LFS_THRESHOLD = 10 * 2**20


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Commit:
    oid: str
    parent: str | None
    message: str
    files: dict[str, bytes]


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool = False
    refs: dict[str, str] = field(default_factory=dict)  # branch or refs/pr/N -> commit oid
    commits: dict[str, Commit] = field(default_factory=dict)

    def commit(self, files: dict[str, bytes], message: str, parent: str | None) -> Commit:
        oid = hashlib.sha1(f"{message}{parent}{sorted(files)}{time.time_ns()}".encode()).hexdigest()
        self.commits[oid] = Commit(oid, parent, message, files)
        return self.commits[oid]

    def resolve(self, revision: str) -> Commit | None:
        oid = self.refs.get(revision, revision)
        return self.commits.get(oid)


@dataclass
class HubServer:
    """Tokens map to (user, role); every repo starts with one empty commit on main, as the Hub's do."""

    tokens: dict[str, tuple[str, str]] = field(default_factory=dict)
    repos: dict[tuple[str, str], Repo] = field(default_factory=dict)
    lfs: dict[str, bytes] = field(default_factory=dict)
    log: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    url: str = ""
    commit_failures: int = 0  # answer this many commits with a 500
    lfs_delay: float = 0.0  # seconds an LFS upload takes

    @contextmanager
    def running(self) -> Iterator[HubServer]:
        with _serving(self) as url:
            self.url = url
            yield self

    def create(
        self, repo_type: str, repo_id: str, files: dict[str, bytes] | None = None, private: bool = False
    ) -> Repo:
        repo = Repo(repo_type, repo_id, private)
        first = repo.commit(dict(files or {}), "initial commit", None)
        repo.refs["main"] = first.oid
        self.repos[(repo_type, repo_id)] = repo
        return repo

    def api_calls(self) -> list[tuple[str, str]]:
        return [(m, urlsplit(p).path) for m, p, _ in self.log]

    # --- routing

    ROUTES = (
        ("GET", r"/api/whoami-v2", "whoami"),
        ("POST", r"/api/repos/create", "create_repo"),
        ("POST", r"/api/validate-yaml", "validate_yaml"),
        ("GET", r"/api/(?P<type>models|datasets|spaces)/(?P<repo>[^/]+/[^/]+)/revision/(?P<rev>.+)", "info"),
        ("GET", r"/api/(?P<type>models|datasets|spaces)/(?P<repo>[^/]+/[^/]+)", "info"),
        ("GET", r"/api/(?P<type>models|datasets|spaces)/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)(?:/.*)?", "tree"),
        ("POST", r"/api/(?P<type>models|datasets|spaces)/(?P<repo>[^/]+/[^/]+)/branch/(?P<rev>.+)", "branch"),
        ("POST", r"/api/(?P<type>models|datasets|spaces)/(?P<repo>[^/]+/[^/]+)/preupload/(?P<rev>.+)", "preupload"),
        ("POST", r"/api/(?P<type>models|datasets|spaces)/(?P<repo>[^/]+/[^/]+)/commit/(?P<rev>.+)", "commit"),
        ("POST", r"/(?:(?P<type>datasets|spaces)/)?(?P<repo>[^/]+/[^/]+)\.git/info/lfs/objects/batch", "lfs_batch"),
        ("PUT", r"/lfs-upload/(?P<oid>[0-9a-f]{64})", "lfs_upload"),
        ("POST", r"/lfs-verify/(?P<oid>[0-9a-f]{64})", "lfs_verify"),
        (
            "GET",
            r"/(?:(?P<type>datasets|spaces)/)?(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)",
            "resolve",
        ),
        (
            "HEAD",
            r"/(?:(?P<type>datasets|spaces)/)?(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)",
            "resolve",
        ),
    )

    def handle(self, h: _Handler) -> None:
        parts = urlsplit(h.path)
        for method, pattern, name in self.ROUTES:
            m = re.fullmatch(pattern, parts.path)
            if method == h.command and m:
                args = {k: unquote(v) if v else v for k, v in m.groupdict().items()}
                getattr(self, name)(h, query=parse_qs(parts.query), **args)
                return
        h.reply_json(404, {"error": f"no route {h.command} {parts.path}"})

    # --- helpers

    def _user(self, h: _Handler) -> tuple[str, str] | None:
        auth = h.headers.get("Authorization", "")
        return self.tokens.get(auth.removeprefix("Bearer ")) if auth.startswith("Bearer ") else None

    def _auth(self, h: _Handler, *, write: bool) -> tuple[str, str] | None:
        """The caller, or None after replying 401/403."""
        user = self._user(h)
        if user is None:
            h.reply_json(401, {"error": "Invalid credentials in Authorization header"})
            return None
        if write and user[1] != "write":
            h.reply_json(403, {"error": "You don't have the rights to write to this namespace"})
            return None
        return user

    def _repo(self, h: _Handler, repo_type: str | None, repo_id: str) -> Repo | None:
        kind = {"models": "model", "datasets": "dataset", "spaces": "space", None: "model"}[repo_type]
        repo = self.repos.get((kind, repo_id))
        if repo is None or (repo.private and self._user(h) is None):
            h.reply_json(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
            return None
        return repo

    def _revision(self, h: _Handler, repo_type: str | None, repo_id: str, rev: str) -> tuple[Any, Commit | None]:
        """The repo and its commit at `rev`, or (…, None) after replying 404."""
        found = self._repo(h, repo_type, repo_id)
        if not found:
            return None, None
        commit = found.resolve(rev)
        if commit is None:
            h.reply_json(404, {"error": f"Invalid rev id: {rev}"}, {"X-Error-Code": "RevisionNotFound"})
        return found, commit

    # --- endpoints

    def whoami(self, h: _Handler, query: dict) -> None:
        user = self._auth(h, write=False)
        if user:
            role = user[1]
            h.reply_json(200, {"type": "user", "name": user[0], "auth": {"accessToken": {"role": role}}, "orgs": []})

    def create_repo(self, h: _Handler, query: dict) -> None:
        payload = json.loads(h.body())
        user = self._auth(h, write=True)
        if not user:
            return
        namespace = payload.get("organization") or user[0]
        if namespace != user[0]:
            h.reply_json(403, {"error": "You don't have the rights to create a repo in this namespace"})
            return
        kind = payload.get("type") or "model"
        repo_id = f"{namespace}/{payload['name']}"
        if (kind, repo_id) in self.repos:
            h.reply_json(409, {"error": "You already created this model repo", "url": f"{self.url}/{repo_id}"})
            return
        self.create(kind, repo_id, private=payload.get("visibility") == "private" or bool(payload.get("private")))
        prefix = "" if kind == "model" else f"{kind}s/"
        h.reply_json(200, {"url": f"{self.url}/{prefix}{repo_id}"})

    def validate_yaml(self, h: _Handler, query: dict) -> None:
        json.loads(h.body())
        h.reply_json(200, {"warnings": []})

    def info(self, h: _Handler, query: dict, type: str, repo: str, rev: str = "main") -> None:
        found, commit = self._revision(h, type, repo, rev)
        if commit is None:
            return
        siblings = [{"rfilename": name} for name in sorted(commit.files)]
        h.reply_json(200, {"id": repo, "sha": commit.oid, "private": found.private, "siblings": siblings})

    def tree(self, h: _Handler, query: dict, type: str, repo: str, rev: str) -> None:
        _, commit = self._revision(h, type, repo, rev)
        if commit is None:
            return
        entries = [
            {"type": "file", "path": name, "size": len(data), "oid": git_blob_oid(data)}
            for name, data in sorted(commit.files.items())
        ]
        h.reply_json(200, entries)

    def branch(self, h: _Handler, query: dict, type: str, repo: str, rev: str) -> None:
        payload = json.loads(h.body() or b"{}")
        found = self._repo(h, type, repo)
        if not found or not self._auth(h, write=True):
            return
        if rev in found.refs:
            h.reply_json(409, {"error": "Reference already exists"})
            return
        start = found.resolve(payload.get("startingPoint") or "main")
        found.refs[rev] = start.oid if start else found.refs["main"]
        h.reply_json(200, {})

    def _existing(self, repo: Repo, rev: str) -> dict[str, bytes]:
        commit = repo.resolve(rev)
        return commit.files if commit else {}

    def preupload(self, h: _Handler, query: dict, type: str, repo: str, rev: str) -> None:
        payload = json.loads(h.body())
        found = self._repo(h, type, repo)
        if not found or not self._auth(h, write=True):
            return
        existing = self._existing(found, rev)
        files = []
        for f in payload["files"]:
            lfs = f["path"].endswith(LFS_SUFFIXES) or f["size"] > LFS_THRESHOLD
            old = existing.get(f["path"])
            oid = None if old is None else hashlib.sha256(old).hexdigest() if lfs else git_blob_oid(old)
            files.append(
                {"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid}
            )
        h.reply_json(200, {"files": files})

    def lfs_batch(self, h: _Handler, query: dict, type: str | None, repo: str) -> None:
        payload = json.loads(h.body())
        found = self._repo(h, type, repo)
        if not found or not self._auth(h, write=True):
            return
        objects = []
        for obj in payload["objects"]:
            entry: dict[str, Any] = {"oid": obj["oid"], "size": obj["size"]}
            if obj["oid"] not in self.lfs:
                entry["actions"] = {
                    "upload": {"href": f"{self.url}/lfs-upload/{obj['oid']}"},
                    "verify": {"href": f"{self.url}/lfs-verify/{obj['oid']}"},
                }
            objects.append(entry)
        h.reply_json(200, {"transfer": "basic", "objects": objects})

    def lfs_upload(self, h: _Handler, query: dict, oid: str) -> None:
        data = h.body()
        time.sleep(self.lfs_delay)
        if hashlib.sha256(data).hexdigest() != oid:
            h.reply_json(400, {"error": "content does not match its oid"})
            return
        self.lfs[oid] = data
        h.reply(200)

    def lfs_verify(self, h: _Handler, query: dict, oid: str) -> None:
        payload = json.loads(h.body())
        ok = oid in self.lfs and len(self.lfs[oid]) == payload.get("size")
        h.reply_json(200 if ok else 404, {} if ok else {"error": "object not found"})

    def commit(self, h: _Handler, query: dict, type: str, repo: str, rev: str) -> None:
        lines = [json.loads(line) for line in h.body().splitlines() if line.strip()]
        found = self._repo(h, type, repo)
        if not found or not self._auth(h, write=True):
            return
        if self.commit_failures:
            self.commit_failures -= 1
            h.reply_json(500, {"error": "Internal Error - We're working hard to fix this as soon as possible!"})
            return
        parent = found.resolve(rev)
        if parent is None:
            h.reply_json(404, {"error": f"Invalid rev id: {rev}"}, {"X-Error-Code": "RevisionNotFound"})
            return
        files = dict(parent.files)
        message = ""
        for line in lines:
            value = line["value"]
            if line["key"] == "header":
                message = value["summary"]
            elif line["key"] == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif line["key"] == "lfsFile":
                if value["oid"] not in self.lfs:
                    h.reply_json(422, {"error": f"LFS object {value['oid']} was never uploaded"})
                    return
                files[value["path"]] = self.lfs[value["oid"]]
            elif line["key"] == "deletedFile":
                files.pop(value["path"], None)
        new = found.commit(files, message, parent.oid)
        prefix = "" if found.repo_type == "model" else f"{found.repo_type}s/"
        data: dict[str, Any] = {"commitUrl": f"{self.url}/{prefix}{repo}/commit/{new.oid}", "commitOid": new.oid}
        if query.get("create_pr"):
            number = 1 + sum(ref.startswith("refs/pr/") for ref in found.refs)
            found.refs[f"refs/pr/{number}"] = new.oid
            data["pullRequestUrl"] = f"{self.url}/{prefix}{repo}/discussions/{number}"
        else:
            found.refs[rev] = new.oid
        h.reply_json(200, data)

    def resolve(self, h: _Handler, query: dict, type: str | None, repo: str, rev: str, path: str) -> None:
        _, commit = self._revision(h, type, repo, rev)
        if commit is None:
            return
        if path not in commit.files:
            h.reply_json(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"})
            return
        data = commit.files[path]
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{hashlib.sha256(data).hexdigest()}"'}
        m = re.match(r"bytes=(\d+)-", h.headers.get("Range", ""))
        if m and h.command == "GET":
            start = int(m.group(1))
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            h.reply(206, data[start:], headers)
            return
        h.reply(200, data, headers)
