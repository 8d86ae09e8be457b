"""Run by test_base_install.py with the python of a venv that has only `pip install ackflow`.

Checks that no server package came with the base install, then uses ackflow.client against a
loopback HTTP server of the standard library that answers like the gateway. Prints `ok` at the end.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

API_KEY = "ak_0123abcd_secret"
REQUEST_ID = "01a21ba1-6843-7a38-bf65-a396dade5abb"
SERVER_MODULES = ("litestar", "asyncpg", "temporalio", "redis", "uvicorn", "standardwebhooks")


class FakeGateway(BaseHTTPRequestHandler):
    """Canned answers of POST /v1/requests and GET /v1/requests/{id}, for one API key."""

    received: list[dict[str, object]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.received.append(body)
        links = {"self": f"/v1/requests/{REQUEST_ID}", "events": f"/v1/requests/{REQUEST_ID}/events"}
        self._answer(202, {"id": REQUEST_ID, "kind": body["kind"], "status": "INIT", "version": 1, "links": links})

    def do_GET(self) -> None:
        if self.path != f"/v1/requests/{REQUEST_ID}":
            problem = {"type": "urn:ackflow:problem:not-found", "title": "Not Found", "status": 404}
            self._answer(404, problem, "application/problem+json")
            return
        done = {
            "id": REQUEST_ID,
            "kind": "echo",
            "status": "DONE",
            "version": 3,
            "result": self.received[-1]["payload"],
        }
        self._answer(200, done)

    def _answer(self, status: int, body: dict[str, object], media_type: str = "application/json") -> None:
        if self.headers.get("Authorization") != f"Bearer {API_KEY}":
            status, body, media_type = 401, {"title": "Unauthorized", "status": 401}, "application/problem+json"
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", media_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: the test reads this script's output


async def use_the_client(base_url: str) -> None:
    from ackflow.client import AckflowClient, ApiError

    async with AckflowClient(base_url, api_key=API_KEY, timeout=10) as client:
        accepted = await client.submit("echo", {"hello": "world"})
        assert (accepted.id, accepted.status) == (REQUEST_ID, "INIT"), accepted
        final = await client.get(accepted.id)
        assert (final.status, final.result, final.terminal) == ("DONE", {"hello": "world"}, True), final
        try:
            await client.get("01a21ba1-0000-7000-8000-000000000000")
        except ApiError as error:
            assert error.status == 404, error
        else:
            raise AssertionError("a 404 did not raise ApiError")
    assert FakeGateway.received == [{"kind": "echo", "payload": {"hello": "world"}}], FakeGateway.received


def main() -> None:
    present = [name for name in SERVER_MODULES if importlib.util.find_spec(name) is not None]
    assert present == [], f"the base install brought server packages: {present}"
    import ackflow  # the handler API, too, loads nothing of the server

    assert ackflow.handler is not None
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeGateway)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        asyncio.run(use_the_client(f"http://127.0.0.1:{server.server_address[1]}"))
    finally:
        server.shutdown()
    print("ok")


if __name__ == "__main__":
    main()
