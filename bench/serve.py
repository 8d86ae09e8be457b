"""Serving a benchmark's own ASGI app (the bare endpoint, the webhook receiver) as a standalone process."""

from __future__ import annotations

import os
from typing import Any

import uvicorn


def serve_on_bench_port(app: Any, **options: Any) -> None:
    """Serve `app` on 127.0.0.1:$BENCH_PORT, quietly, until SIGINT/SIGTERM; `options` go to uvicorn."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=int(os.environ["BENCH_PORT"]), log_level="warning", access_log=False, **options
    )
    uvicorn.Server(config).run()
