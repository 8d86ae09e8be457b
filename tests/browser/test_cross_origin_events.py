"""A partner's page on its own origin follows a request with `new EventSource(links.events)`."""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
from collections.abc import Iterator

import httpx
from playwright.async_api import Page

from ackflow import devstack
from ackflow.settings import Settings

PAGE = """<!doctype html><meta charset="utf-8"><title>partner</title><script>
window.seen = []; window.failed = null;
const source = new EventSource(%s);
for (const topic of ["request.accepted", "request.processing", "request.done"]) {
  source.addEventListener(topic, () => { window.seen.push(topic); if (topic === "request.done") source.close(); });
}
source.onerror = () => { if (source.readyState === EventSource.CLOSED) window.failed = "the stream was refused"; };
</script>"""


@contextlib.contextmanager
def partner_site(html: str) -> Iterator[str]:
    """Serve `html` at / on another loopback port (another origin than the gateway's); its URL."""
    body = html.encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", devstack.free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


async def test_a_page_on_another_origin_follows_a_request_through_its_capability_url(
    client: httpx.AsyncClient, settings: Settings, browser_page: Page
) -> None:
    accepted = (await client.post("/v1/requests", json={"kind": "sleep", "payload": {"seconds": 0.5}})).json()
    events_url = f"http://127.0.0.1:{settings.http_port}{accepted['links']['events']}"
    with partner_site(PAGE % json.dumps(events_url)) as site:
        await browser_page.goto(site)
        await browser_page.wait_for_function("window.seen.includes('request.done') || window.failed", timeout=30_000)
        assert await browser_page.evaluate("window.failed") is None
        assert await browser_page.evaluate("window.seen") == ["request.accepted", "request.processing", "request.done"]
