"""API keys: the keys a setting accepts, checked in constant time, rotated without a restart.

Two rings: RNN_API_KEY (the model routes, /models, /metrics, /docs) and RNN_ADMIN_API_KEY (/admin/*). Each takes
its keys from the environment (several, comma-separated) or from a file (`RNN_API_KEY_FILE`, one key a line, `#`
comments and blank lines skipped: how Docker and Kubernetes mount secrets). A file is read again when it changes
(checked at most once a second), so a key rotates with no restart: add the new key, move the clients over, drop
the old one. Keys are kept only as SHA-256 digests, compared with `hmac.compare_digest` against every key (no
early exit, so the time does not say which key, or how much of one, matched), and never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import time
from pathlib import Path

from pydantic import SecretStr

log = logging.getLogger("app")
RECHECK_S = 1.0  # how often a key file's stat is looked at


class KeyConfigError(ValueError):
    """A key setting that cannot be used; the message names the variable, never a key."""


def parse_keys(text: str, variable: str, lines: bool) -> list[str]:
    """The keys in `text`: one a line (a file) or comma-separated (the environment). A key is printable ASCII
    without spaces, as an `Authorization: Bearer` header carries it."""
    entries = text.splitlines() if lines else text.split(",")
    keys = [e.strip() for e in entries if e.strip() and not (lines and e.strip().startswith("#"))]
    for number, key in enumerate(keys, 1):
        if not all(33 <= ord(c) <= 126 for c in key):
            raise KeyConfigError(f"{variable}: key {number} has a space or a character outside printable ASCII")
    return keys


def read_key_file(path: Path, variable: str) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyConfigError(f"{variable}: cannot read {path}: {exc.__class__.__name__}") from None
    keys = parse_keys(text, variable, lines=True)
    if not keys:
        raise KeyConfigError(f"{variable}: {path} holds no key (one key a line)")
    return keys


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class KeyRing:
    """The keys one setting accepts: from `keys` (comma-separated) or from `file` (one a line, re-read when it
    changes). With neither, the ring is not configured and `accepts` is never asked."""

    def __init__(self, variable: str, keys: SecretStr | None = None, file: Path | None = None) -> None:
        self.variable, self.file = variable, file
        self._digests: tuple[bytes, ...] = ()
        self._stamp: tuple[int, int, int] | None = None
        self._checked = 0.0
        if keys is not None:
            self._digests = tuple(map(_digest, parse_keys(keys.get_secret_value(), variable, lines=False)))
        if file is not None:
            self._stamp = self._stat()
            self._digests = tuple(map(_digest, read_key_file(file, f"{variable}_FILE")))
            self._checked = time.monotonic()

    @property
    def configured(self) -> bool:
        return bool(self._digests)

    def __len__(self) -> int:
        return len(self._digests)

    def accepts(self, token: str) -> bool:
        self._refresh()
        digest = _digest(token)
        matched = False
        for key in self._digests:
            matched |= hmac.compare_digest(digest, key)
        return matched

    def _stat(self) -> tuple[int, int, int] | None:
        assert self.file is not None
        try:
            st = os.stat(self.file)  # follows links: a Kubernetes secret is swapped in by relinking
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def _refresh(self) -> None:
        """Read the key file again if it changed. A file gone, unreadable or empty keeps the keys it held last
        (a key file half-written by hand must not open the API or lock every client out), with a warning."""
        if self.file is None or time.monotonic() - self._checked < RECHECK_S:
            return
        self._checked = time.monotonic()
        stamp = self._stat()
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            keys = read_key_file(self.file, f"{self.variable}_FILE")
        except KeyConfigError as exc:
            log.warning("%s; still accepting the %d keys read before", exc, len(self._digests))
            return
        self._digests = tuple(map(_digest, keys))
        log.info("%s_FILE changed: %d keys now", self.variable, len(keys))


def bearer_token(authorization: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None
