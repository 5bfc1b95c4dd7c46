"""`python -m app`: serve with uvicorn on RNN_HOST:RNN_PORT (default 127.0.0.1:8000)."""

from __future__ import annotations

import math
import signal
import sys
from types import FrameType
from typing import Any

import uvicorn

from app.config import SettingsError, load_settings


def _stop(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main() -> int:
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again against the handler it found there;
    # Python's default handler would kill the process (status -15, or 143 in a container) after a clean shutdown.
    # A stop asked for by SIGTERM is a normal exit.
    signal.signal(signal.SIGTERM, _stop)
    from app.http import protocol
    from app.main import create_app

    # several workers need the app as an import string: each process builds its own from the same environment
    app: Any = create_app(settings) if settings.workers == 1 else "app.main:create_app"
    uvicorn.run(
        app,
        factory=settings.workers > 1,
        workers=settings.workers,
        host=settings.host,
        port=settings.port,
        loop=settings.loop,
        http=protocol(settings.http),  # uvicorn's, with one send per answer (app/http.py)
        log_level=settings.log_level,
        timeout_graceful_shutdown=math.ceil(settings.request_timeout_s),  # int(0.5) would be 0: no wait at all
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
