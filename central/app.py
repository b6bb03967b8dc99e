"""The care-station web application: built by :func:`create_app` from one :class:`CentralContext`.

Nothing is built at import time. The app keeps the context as ``app.state.ctx`` (routes read it through
``central.deps.Ctx``), runs the live feed, the watchdog and the calls hub while it serves, and turns every
domain error into its HTTP answer in one place (:mod:`central.errors`). In front of everything sits
:class:`central.hardening.HardeningMiddleware` (security headers, the Origin check, the /metrics gate),
configured by the :class:`~central.hardening.WebSecurity` handed to :func:`create_app`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from . import clients_api, devices_api, manage_api, rejections_api, reports, routes, windows_api
from .calls import routes as calls_routes
from .calls.ring import RingPublisher
from .calls.signalling import CallHub, CallRefused
from .context import CentralContext
from .errors import DOMAIN_STATUS, CentralError, detail_of, status_of
from .hardening import HardeningMiddleware, WebSecurity

__all__ = ["CentralContext", "WebSecurity", "create_app"]

_STATIC = Path(__file__).parent / "static"


@contextlib.asynccontextmanager
async def _calls(ctx: CentralContext) -> AsyncIterator[None]:
    """The calls hub, and the one broker connection rings and device commands go out on (when needed)."""
    config = ctx.calls
    if config.clock_ms is None:
        config = dataclasses.replace(config, clock_ms=ctx.clock_ms)
    publisher = None
    if config.mqtt is not None and (config.ring is None or ctx.command_sender is None):
        publisher = RingPublisher(config.mqtt)
        publisher.start()
    own_sender = publisher is not None and ctx.command_sender is None
    if publisher is not None:
        if config.ring is None:
            config = dataclasses.replace(config, ring=publisher.send)
        if own_sender:
            ctx.command_sender = publisher.send
    hub = CallHub(ctx.sessions, config)
    ctx.calls_hub = hub
    stop = asyncio.Event()
    task = asyncio.create_task(hub.run(stop), name="calls-ticker")
    try:
        yield
    finally:
        stop.set()
        await hub.shutdown()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        ctx.calls_hub = None
        if own_sender:
            ctx.command_sender = None
        if publisher is not None:
            publisher.stop()


def create_app(ctx: CentralContext, *, security: WebSecurity | None = None) -> FastAPI:
    """Build the FastAPI app; its lifespan runs the live feed, the watchdog and the calls.

    ``security``: production, the /metrics token and the allowed origins (default: development).
    """

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        tasks = [asyncio.create_task(ctx.broadcaster.run(stop), name="central-feed")]
        if ctx.watchdog is not None:
            tasks.append(asyncio.create_task(ctx.watchdog.run(stop), name="central-watchdog"))
        if ctx.insider is not None:
            tasks.append(asyncio.create_task(ctx.insider.run(stop), name="central-insider"))
        try:
            async with _calls(ctx):
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
    app.add_middleware(HardeningMiddleware, security=security or WebSecurity())
    for errors in (CentralError, CallRefused, *DOMAIN_STATUS):
        app.add_exception_handler(errors, _answer)
    for module in (
        routes,
        calls_routes,
        clients_api,
        reports,
        manage_api,
        devices_api,
        rejections_api,
        windows_api,
    ):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=_STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def console() -> FileResponse:
        return FileResponse(_STATIC / "index.html", headers={"Cache-Control": "no-store"})

    return app


async def _answer(_request: Request, exc: Exception) -> JSONResponse:
    """A central or domain error as HTTP: its status from the one table, its message as the detail."""
    return JSONResponse({"detail": detail_of(exc)}, status_code=status_of(exc))
