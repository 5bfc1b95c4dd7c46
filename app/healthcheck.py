"""`python -m app.healthcheck`: exit 0 when this machine's service answers GET /ready with 200, else 1.

The container's HEALTHCHECK. It reads the same RNN_ settings as the server (port and host), uses only the
standard library (no curl in the image), and never follows the request anywhere but the service itself.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

from app.config import SettingsError, load_settings

WILDCARDS = {"", "0.0.0.0", "::"}


def ready_url(host: str, port: int) -> str:
    target = "127.0.0.1" if host in WILDCARDS else host
    if ":" in target:  # an IPv6 literal
        target = f"[{target}]"
    return f"http://{target}:{port}/ready"


def main(timeout: float = 3.0) -> int:
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    url = ready_url(settings.host, settings.port)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (a fixed http URL)
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except OSError as exc:
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"unhealthy: {url} answered {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
