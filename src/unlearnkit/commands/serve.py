"""`unlearnkit serve PLAN`: the removal-request service (docs/service.md).

Needs `- submitted: true` as the plan's last request source. Listens on 127.0.0.1 unless told
otherwise; logs JSON lines on stderr; SIGTERM (or Ctrl-C) stops it gracefully.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated

import typer

from unlearnkit.errors import UnlearnkitError


def serve_command(
    plan: Annotated[Path, typer.Argument(help="the plan file (YAML), with `- submitted: true` as its last request source")],
    host: Annotated[str, typer.Option("--host", help="address to listen on (loopback by default)")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port", min=1, max=65535)] = 8000,
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning or error")] = "info",
) -> None:
    """Serve a plan's run: take removal requests over an authenticated HTTP API, block them at once,
    apply them to the weights in the background, and answer chat completions from the result."""
    import logging
    import logging.config

    import uvicorn

    from unlearnkit.plan import load_plan
    from unlearnkit.service.app import create_app
    from unlearnkit.service.logs import log_config, route_console_to_log
    from unlearnkit.service.runtime import Service

    if log_level not in ("debug", "info", "warning", "error"):
        raise UnlearnkitError(f"--log-level '{log_level}': use debug, info, warning or error")
    loaded = load_plan(plan)
    if not loaded.takes_submitted:
        raise UnlearnkitError(f"{plan}: requests: add `- submitted: true` as the last entry, so the run takes the requests submitted to the service")
    config = log_config(log_level)
    logging.config.dictConfig(config)
    logging.captureWarnings(True)  # Python warnings become JSON lines too
    route_console_to_log()
    log = logging.getLogger("unlearnkit.service")
    if not _loopback(host):
        log.warning("listening beyond this machine: put TLS in front of it", extra={"fields": {"host": host}})
    service = Service.open(loaded)
    try:
        uvicorn.run(create_app(service), host=host, port=port, log_config=config, access_log=False, timeout_graceful_shutdown=None)
    finally:
        service.close()


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
