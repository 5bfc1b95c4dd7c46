"""`make keys`: API keys for docker/compose.yaml, as the Docker secrets it mounts, where they are missing.

    python docker/keys.py [DIR]      (default docker/secrets; prints the files, never the keys)

Writes DIR/admin_api_keys (the admin key), DIR/metrics_key (Prometheus's key) and DIR/api_keys (the clients'
key, and the metrics key on a line of its own), each a fresh `secrets.token_urlsafe(32)`. A file already there is
left as it is: rotate by editing it (add the new key on a line, move the clients, drop the old line); the api
reads it again within a second. DIR is private to its owner; the files are readable by all, because the api
runs as another user (uid 10001) in its container, which sees only the file, not DIR.
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path


def write(path: Path, text: str) -> None:
    if path.exists():
        print(f"{path}: kept")
        return
    temporary = path.with_suffix(".tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.chmod(0o644)
    temporary.rename(path)
    print(f"{path}: written")


def main(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    write(directory / "admin_api_keys", f"# /admin/* (RNN_ADMIN_API_KEY_FILE)\n{secrets.token_urlsafe(32)}\n")
    write(directory / "metrics_key", secrets.token_urlsafe(32) + "\n")
    metrics = (directory / "metrics_key").read_text(encoding="utf-8").strip()
    client = secrets.token_urlsafe(32)
    write(directory / "api_keys", f"# Prometheus (metrics_key)\n{metrics}\n# clients\n{client}\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "secrets")
