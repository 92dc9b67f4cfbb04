"""A loopback HTTP server that answers like the Hugging Face Hub for downloads.

Only what huggingface_hub's model_info + hf_hub_download use: the revision metadata
JSON, HEAD on resolve/ (commit, ETag, size) and GET on resolve/ with Range support.
`cut_once` names files whose first GET stops half-way, to test resuming.  Hostile hubs:
`redirect_to` answers resolve/ with a 302 to another server's /blob/NAME (as the hub does to
its CDN), and `declared` lies about a file's size (listing and HEAD), sending all of it.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

SHA = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class Repo:
    files: dict[str, bytes]
    token: str | None = None  # when set, requests must carry it


@dataclass
class FakeHub:
    repos: dict[str, Repo]
    cut_once: set[str] = field(default_factory=set)
    log: list[tuple[str, str, str | None, str | None]] = field(default_factory=list)  # method, path, range, auth
    host: str = "127.0.0.1"
    redirect_to: str | None = None  # another FakeHub's URL that serves /blob/NAME
    declared: dict[str, int] = field(default_factory=dict)  # file name -> the size the hub claims

    def start(self) -> str:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                self.answer(head=False)

            def do_HEAD(self):
                self.answer(head=True)

            def answer(self, head: bool):
                path = unquote(urlsplit(self.path).path)
                hub.log.append((self.command, path, self.headers.get("Range"), self.headers.get("Authorization")))
                if path.startswith("/api/models/"):
                    repo_id, _, revision = path[len("/api/models/"):].partition("/revision/")
                    repo = self.repo(repo_id)
                    if repo is None:
                        return
                    body = json.dumps({
                        "id": repo_id, "modelId": repo_id, "sha": SHA, "private": False,
                        "siblings": [{"rfilename": n, "size": hub.declared.get(n, len(d))}
                                     for n, d in repo.files.items()],
                    }).encode()
                    return self.send(200, body, {"Content-Type": "application/json"}, head)
                parts = path.lstrip("/").split("/")
                if parts[0] == "blob":  # a CDN: any file of any repository, by name
                    name = "/".join(parts[1:])
                    data = next((r.files[name] for r in hub.repos.values() if name in r.files), None)
                    if data is None:
                        return self.send(404, b"not found", {}, head)
                    return self.send(200, data, {"Content-Type": "application/octet-stream"}, head)
                if len(parts) < 5 or parts[2] != "resolve":
                    return self.send(404, b"not found", {}, head)
                repo = self.repo("/".join(parts[:2]))
                if repo is None:
                    return
                name = "/".join(parts[4:])
                if name not in repo.files:
                    return self.send(404, b"entry not found", {"X-Error-Code": "EntryNotFound"}, head)
                data = repo.files[name]
                headers = {"X-Repo-Commit": SHA, "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
                           "Content-Type": "application/octet-stream"}
                if hub.redirect_to:
                    return self.send(302, b"", {**headers, "Location": f"{hub.redirect_to}/blob/{name}",
                                                "X-Linked-Etag": headers["ETag"],
                                                "X-Linked-Size": str(hub.declared.get(name, len(data)))}, head)
                if head and name in hub.declared:
                    return self.send(200, b"", {**headers, "X-Linked-Size": str(hub.declared[name])}, head)
                start = 0
                ranged = self.headers.get("Range")
                if ranged and not head:
                    start = int(ranged.removeprefix("bytes=").split("-")[0])
                    headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                if not head and name in hub.cut_once:
                    hub.cut_once.discard(name)
                    # Promise the whole file, send half, drop the connection.
                    self.send_response(200)
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.send(206 if start else 200, data[start:], headers, head)

            def repo(self, repo_id: str) -> Repo | None:
                repo = hub.repos.get(repo_id)
                if repo is None:
                    self.send(404, b"repository not found", {"X-Error-Code": "RepoNotFound"}, self.command == "HEAD")
                    return None
                if repo.token and self.headers.get("Authorization") != f"Bearer {repo.token}":
                    self.send(401, b"unauthorized", {"X-Error-Code": "GatedRepo"}, self.command == "HEAD")
                    return None
                return repo

            def send(self, status: int, body: bytes, headers: dict[str, str], head: bool):
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)

        self.server = ThreadingHTTPServer((self.host, 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://{self.host}:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
