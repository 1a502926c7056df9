"""A package index's JSON API, served on loopback by the tests that need one."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Index:
    """A package index's JSON API on loopback: {name: (version, sdist bytes or None, sha)}."""

    def __init__(self) -> None:
        self.packages: dict[str, tuple[str, bytes | None, str | None]] = {}
        self.downloads = 0
        index = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                parts = self.path.strip("/").split("/")
                if parts[0] == "files" and parts[1] in index.packages:
                    index.downloads += 1
                    return self._send(index.packages[parts[1]][1] or b"")
                if parts[0] == "pypi" and parts[1] in index.packages and parts[-1] == "json":
                    version, data, sha = index.packages[parts[1]]
                    # absolute links, as pypi.org gives; relative ones, as some mirrors do
                    base = (
                        "../../.."
                        if parts[1].startswith("rel")
                        else (f"http://127.0.0.1:{self.server.server_port}")
                    )
                    urls = (
                        []
                        if data is None
                        else [
                            {
                                "packagetype": "sdist",
                                "url": f"{base}/files/{parts[1]}/{parts[1]}-{version}.tar.gz",
                                "digests": {"sha256": sha or hashlib.sha256(data).hexdigest()},
                            }
                        ]
                    )
                    body = {"info": {"version": version}, "urls": urls, "releases": {version: urls}}
                    return self._send(json.dumps(body).encode())
                self.send_response(404)
                self.end_headers()

            def _send(self, body: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/pypi"
