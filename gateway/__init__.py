"""The HTTP gateway (Litestar): accepts requests, serves their status, never waits on Temporal."""

from gateway.app import create_app

__all__ = ["create_app"]
