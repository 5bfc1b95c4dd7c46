"""API keys (app/auth.py): several keys, keys from a file re-read when it changes, and bad key settings refused
at start-up without echoing a key."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from pydantic import SecretStr

from app import auth
from app.auth import KeyConfigError, KeyRing, bearer_token, parse_keys
from app.config import SettingsError, load_settings


def test_parse_keys_from_the_environment_and_from_a_file() -> None:
    assert parse_keys(" old-key , new-key,,", "RNN_API_KEY", lines=False) == ["old-key", "new-key"]
    text = "# rotated 2026-11\nold-key\n\n  new-key  \r\n"
    assert parse_keys(text, "RNN_API_KEY_FILE", lines=True) == ["old-key", "new-key"]


@pytest.mark.parametrize("text", ["good,has space", "good,tab\there", "good,naïve"])
def test_a_key_a_header_cannot_carry_is_refused_without_showing_it(text: str) -> None:
    with pytest.raises(KeyConfigError) as info:
        parse_keys(text, "RNN_API_KEY", lines=False)
    assert "RNN_API_KEY: key 2" in str(info.value)
    assert text.split(",")[1] not in str(info.value)


def test_a_ring_accepts_each_of_its_keys_and_nothing_else() -> None:
    ring = KeyRing("RNN_API_KEY", SecretStr("old-key,new-key"))
    assert ring.configured and len(ring) == 2
    assert ring.accepts("old-key") and ring.accepts("new-key")
    for wrong in ("", "old", "old-key ", "new-keyx", "OLD-KEY", "old-key,new-key"):
        assert not ring.accepts(wrong)
    assert not KeyRing("RNN_API_KEY").configured


def test_a_key_file_is_read_again_when_it_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(auth, "RECHECK_S", 0.0)
    file = tmp_path / "api_keys"
    file.write_text("old-key\n")
    ring = KeyRing("RNN_API_KEY", file=file)
    assert ring.accepts("old-key") and not ring.accepts("new-key")
    file.write_text("old-key\nnew-key\n")  # step 1 of a rotation: both keys work
    os.utime(file, ns=(1, 1))  # a distinct stamp even within the file system's time resolution
    assert ring.accepts("old-key") and ring.accepts("new-key")
    file.write_text("new-key\n")  # step 3: the old key is dropped
    assert ring.accepts("new-key") and not ring.accepts("old-key")
    with caplog.at_level(logging.WARNING, logger="app"):
        file.write_text("# nothing yet\n")  # half-written: the keys read before stay
        assert ring.accepts("new-key")
        file.unlink()
        assert ring.accepts("new-key")
    assert "holds no key" in caplog.text and "still accepting the 1 keys" in caplog.text
    assert "new-key" not in caplog.text


def test_a_key_file_is_checked_at_most_once_a_second(tmp_path: Path) -> None:
    file = tmp_path / "api_keys"
    file.write_text("old-key\n")
    ring = KeyRing("RNN_API_KEY", file=file)
    file.write_text("new-key\n")
    assert ring.accepts("old-key")  # within a second of the last look: the stat is not taken again


def test_bearer_token() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer  abc ") == "abc"
    assert bearer_token("Basic abc") is None
    assert bearer_token("") is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RNN_API_KEY": "a", "RNN_API_KEY_FILE": "{file}"}, "RNN_API_KEY and RNN_API_KEY_FILE are both set"),
        ({"RNN_API_KEY_FILE": "{missing}"}, "RNN_API_KEY_FILE: cannot read"),
        ({"RNN_ADMIN_API_KEY_FILE": "{empty}"}, "RNN_ADMIN_API_KEY_FILE: {empty} holds no key"),
        ({"RNN_ADMIN_API_KEY": "good,sec ret"}, "RNN_ADMIN_API_KEY: key 2 has a space"),
    ],
)
def test_bad_key_settings_name_the_variable_and_never_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    paths = {"file": tmp_path / "keys", "missing": tmp_path / "missing", "empty": tmp_path / "empty"}
    paths["file"].write_text("from-file\n")
    paths["empty"].write_text("\n# no key\n")
    for variable, value in env.items():
        monkeypatch.setenv(variable, value.format(**paths))
    with pytest.raises(SettingsError) as info:
        load_settings(_env_file=None)
    assert message.format(**paths) in str(info.value)
    assert "sec ret" not in str(info.value) and "from-file" not in str(info.value)
