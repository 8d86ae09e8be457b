"""Headless Chromium runs a page's JavaScript, which fetches JSON from the page's own server."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from playwright.async_api import Page, expect

PAGE = b"""<!doctype html>
<html>
  <head><meta charset="utf-8"><title>smoke</title></head>
  <body>
    <p id="value">pending</p>
    <script>
      fetch("/value.json")
        .then((response) => response.json())
        .then((body) => { document.getElementById("value").textContent = body.value; })
        .catch((error) => { document.getElementById("value").textContent = "error: " + error; });
    </script>
  </body>
</html>
"""


@dataclass
class SmokeServer:
    url: str
    value: str
    paths: list[str] = field(default_factory=list)


@pytest.fixture
def smoke_server() -> Iterator[SmokeServer]:
    """A page and its JSON endpoint on 127.0.0.1, on a port the OS picks, served from a thread."""
    value = uuid.uuid4().hex
    paths: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            paths.append(self.path)
            if self.path == "/":
                self._send(200, "text/html; charset=utf-8", PAGE)
            elif self.path == "/value.json":
                self._send(200, "application/json", json.dumps({"value": value}).encode())
            else:
                self._send(404, "text/plain", b"not found")

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield SmokeServer(f"http://127.0.0.1:{server.server_address[1]}/", value, paths)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


async def test_page_script_fetches_json_from_its_server_and_shows_the_value(
    browser_page: Page, smoke_server: SmokeServer
) -> None:
    page_errors: list[str] = []
    browser_page.on("pageerror", lambda error: page_errors.append(str(error)))

    await browser_page.goto(smoke_server.url)

    await expect(browser_page.locator("#value")).to_have_text(smoke_server.value, timeout=10_000)
    assert smoke_server.paths.count("/value.json") == 1
    assert page_errors == []
