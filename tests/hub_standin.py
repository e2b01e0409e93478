"""A stand-in for the Hugging Face Hub's upload API on 127.0.0.1, so pushes are tested offline end to end.

It speaks the endpoints ``HfApi.create_repo``, ``HfApi.list_repo_files`` and ``HfApi.create_commit`` use in
huggingface_hub 2.x: create repo, list the repo's tree, validate README metadata, preupload, the ndjson commit (added
and deleted files) and, for files it marks as LFS (``lfs_suffixes``), the LFS
batch API with single-part PUT uploads. It does not speak Xet: by default it asks for every file inline ("regular"),
which keeps the client's default pipelined upload (hf_xet installed) on plain HTTP; with ``lfs_suffixes`` set, run the
client with Xet disabled (``constants.HF_HUB_DISABLE_XET``) to take the LFS route. It keeps every file it received
per repo and every request's headers (names in lower case), and can be told to refuse a repo (403) to test failures.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class HubStandIn:
    """State of the fake Hub: repos (files by path), created repos' settings, requests, refused repo ids."""

    repos: dict[str, dict[str, bytes]] = field(default_factory=dict)
    created: list[dict[str, Any]] = field(default_factory=list)
    commits: list[dict[str, Any]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)
    lfs_suffixes: tuple[str, ...] = ()
    lfs: dict[str, bytes] = field(default_factory=dict)
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> ThreadingHTTPServer:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    def files(self, repo_id: str) -> dict[str, bytes]:
        return self.repos.get(repo_id, {})


REPO = r"(?P<repo>[\w.-]+/[\w.-]+|[\w.-]+)"
ROUTES = [
    ("POST", re.compile(r"^/api/repos/create$"), "create"),
    ("POST", re.compile(r"^/api/validate-yaml$"), "validate_yaml"),
    ("POST", re.compile(rf"^/api/models/{REPO}/preupload/(?P<rev>[^/]+)$"), "preupload"),
    ("POST", re.compile(rf"^/{REPO}\.git/info/lfs/objects/batch$"), "lfs_batch"),
    ("PUT", re.compile(r"^/lfs-upload/(?P<oid>[0-9a-f]{64})$"), "lfs_put"),
    ("POST", re.compile(rf"^/api/models/{REPO}/commit/(?P<rev>[^/]+)$"), "commit"),
    ("GET", re.compile(rf"^/api/models/{REPO}/tree/(?P<rev>[^/]+)$"), "tree"),
]


def _handler(hub: HubStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # keep test output clean
            pass

        def do_POST(self) -> None:
            self._dispatch("POST")

        def do_PUT(self) -> None:
            self._dispatch("PUT")

        def do_GET(self) -> None:
            self._dispatch("GET")

        def _dispatch(self, method: str) -> None:
            path = self.path.split("?", 1)[0]
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with hub.lock:
                hub.requests.append(
                    {
                        "method": method,
                        "path": path,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                    }
                )
            for route_method, pattern, name in ROUTES:
                match = pattern.match(path)
                if match and route_method == method:
                    status, payload = getattr(self, name)(body, **match.groupdict())
                    return self._reply(status, payload)
            self._reply(404, {"error": f"stand-in: no route for {method} {path}"})

        def _reply(self, status: int, payload: Any) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorized(self) -> bool:
            return self.headers.get("Authorization", "").startswith("Bearer ")

        # --- endpoints ---------------------------------------------------------------------------------------
        def create(self, body: bytes) -> tuple[int, Any]:
            request = json.loads(body)
            repo_id = "/".join(part for part in (request.get("organization"), request["name"]) if part)
            if not self._authorized():
                return 401, {"error": "Invalid username or password."}
            if repo_id in hub.refuse:
                return 403, {
                    "error": f"You don't have the rights to create a model under the namespace {repo_id}"
                }
            with hub.lock:
                hub.created.append({"repo_id": repo_id, **request})
                hub.repos.setdefault(repo_id, {})
            return 200, {"url": f"{hub.url}/{repo_id}", "name": repo_id}

        def validate_yaml(self, body: bytes) -> tuple[int, Any]:
            from huggingface_hub import ModelCard

            try:
                ModelCard(json.loads(body)["content"])
            except Exception as error:  # report like the Hub does
                return 400, {"errors": [{"message": str(error)}], "warnings": []}
            return 200, {"errors": [], "warnings": []}

        def preupload(self, body: bytes, repo: str, rev: str) -> tuple[int, Any]:
            if repo not in hub.repos:
                return 404, {"error": "Repository not found"}
            files = json.loads(body)["files"]
            return 200, {
                "files": [
                    {
                        "path": f["path"],
                        "uploadMode": "lfs" if f["path"].endswith(hub.lfs_suffixes) else "regular",
                        "shouldIgnore": False,
                    }
                    for f in files
                ]
            }

        def lfs_batch(self, body: bytes, repo: str) -> tuple[int, Any]:
            objects = json.loads(body)["objects"]
            return 200, {
                "transfer": "basic",
                "objects": [
                    {
                        "oid": o["oid"],
                        "size": o["size"],
                        "actions": {"upload": {"href": f"{hub.url}/lfs-upload/{o['oid']}"}},
                    }
                    for o in objects
                ],
            }

        def lfs_put(self, body: bytes, oid: str) -> tuple[int, Any]:
            if hashlib.sha256(body).hexdigest() != oid:
                return 400, {"error": "sha256 mismatch"}
            with hub.lock:
                hub.lfs[oid] = body
            return 200, {}

        def tree(self, body: bytes, repo: str, rev: str) -> tuple[int, Any]:
            if repo not in hub.repos:
                return 404, {"error": "Repository not found"}
            return 200, [
                {"type": "file", "path": path, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                for path, data in sorted(hub.repos[repo].items())
            ]

        def commit(self, body: bytes, repo: str, rev: str) -> tuple[int, Any]:
            if repo in hub.refuse or repo not in hub.repos:
                return 403, {"error": "forbidden"}
            lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
            received: dict[str, bytes] = {}
            deleted: list[str] = []
            for line in lines[1:]:
                value = line["value"]
                if line["key"] == "deletedFile":
                    deleted.append(value["path"])
                elif line["key"] == "file":
                    received[value["path"]] = base64.b64decode(value["content"])
                elif line["key"] == "lfsFile":
                    if value["oid"] not in hub.lfs:
                        return 422, {"error": f"LFS object of {value['path']} was never uploaded"}
                    received[value["path"]] = hub.lfs[value["oid"]]
            oid = hashlib.sha1(body).hexdigest()
            with hub.lock:
                for path in deleted:
                    hub.repos[repo].pop(path, None)
                hub.repos[repo].update(received)
                hub.commits.append(
                    {
                        "repo_id": repo,
                        "summary": lines[0]["value"]["summary"],
                        "files": received,
                        "deleted": deleted,
                    }
                )
            return 200, {"commitUrl": f"{hub.url}/{repo}/commit/{oid}", "commitOid": oid}

    return Handler
