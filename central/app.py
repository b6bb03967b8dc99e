"""The care-station web application: built by :func:`create_app`, nothing at import time."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from storage.db import SessionFactory

from . import clients_api, manage_api, rejections_api, reports, windows_api
from .auth import FailureLimiter
from .calls.routes import router as calls_router
from .feed import Broadcaster
from .routes import router
from .watchdog import Watchdog

__all__ = ["CentralContext", "create_app"]

_STATIC = Path(__file__).parent / "static"


@dataclass
class CentralContext:
    """What the routes need, handed down through ``app.state.ctx``."""

    sessions: SessionFactory
    broadcaster: Broadcaster
    notify_alerts: Callable[[], None]
    session_hours: float = 14.0
    secure_cookies: bool = False
    limiter: FailureLimiter = field(default_factory=FailureLimiter)
    metrics_sources: list[Callable[[], str]] = field(default_factory=list)
    clock_ms: Callable[[], int] = field(default=lambda: int(time.time() * 1000))
    timezone: str = "Europe/Amsterdam"  # the clients' local time (CAREALARM_TIMEZONE): medication times
    watchdog: Watchdog | None = None  # the chain's health and the probe; None: only this process is judged


def create_app(ctx: CentralContext) -> FastAPI:
    """Build the FastAPI app; its lifespan runs the live feed."""

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        tasks = [asyncio.create_task(ctx.broadcaster.run(stop), name="central-feed")]
        if ctx.watchdog is not None:
            tasks.append(asyncio.create_task(ctx.watchdog.run(stop), name="central-watchdog"))
        try:
            yield
        finally:
            stop.set()
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    app = FastAPI(
        title="carealarm central",
        summary="Care-station API: alerts, acknowledgement and the live console feed.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    app.include_router(router)
    app.include_router(calls_router)
    app.include_router(clients_api.router)
    app.include_router(reports.router)
    app.include_router(manage_api.router)
    app.include_router(rejections_api.router)
    app.include_router(windows_api.router)
    app.mount("/static", StaticFiles(directory=_STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def console() -> FileResponse:
        return FileResponse(_STATIC / "index.html", headers={"Cache-Control": "no-store"})

    return app
