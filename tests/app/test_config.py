"""Settings: RNN_* variables are parsed and validated, and a bad one names itself (in Python and at the CLI)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.config import ARTIFACT_SUFFIX, Settings, SettingsError, artifact_paths, default_names, kinds_off, load_settings
from model.tasks import TASKS
from tests.app.conftest import REPO


def test_defaults_without_environment() -> None:
    settings = load_settings(_env_file=None)
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.api_key is None
    assert settings.cors_origins == []


def test_environment_values_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RNN_PORT", "9001")
    monkeypatch.setenv("RNN_MAX_INPUT_CHARS", "77")
    monkeypatch.setenv("RNN_LOG_LEVEL", "WARNING")
    monkeypatch.setenv("RNN_API_KEY", "s3cret")
    settings = load_settings(_env_file=None)
    assert (settings.port, settings.max_input_chars, settings.log_level) == (9001, 77, "warning")
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)


def test_an_empty_api_key_means_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RNN_API_KEY", "")
    assert load_settings(_env_file=None).api_key is None


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("RNN_PORT", "abc"),
        ("RNN_PORT", "70000"),
        ("RNN_BATCH_MAX_SIZE", "0"),
        ("RNN_LOG_LEVEL", "loud"),
        ("RNN_MAX_BODY_BYTES", "10"),
        ("RNN_REQUEST_TIMEOUT_S", "-1"),
        ("RNN_CORS_ORIGINS", "[not json"),
        ("RNN_MODELS", "sentiment=artifacts/other"),
        ("RNN_MODELS", "Mine=artifacts/mine"),
        ("RNN_MODELS", "mine"),
        ("RNN_MODELS", "a=x,a=y"),
        ("RNN_MODELS", '{"mine": '),
    ],
)
def test_invalid_value_names_the_variable(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as info:
        load_settings(_env_file=None)
    message = str(info.value)
    assert variable in message
    assert repr(value) in message  # the offending input is shown


def test_every_invalid_variable_is_named_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RNN_PORT", "abc")
    monkeypatch.setenv("RNN_MAX_STREAMS", "0")
    with pytest.raises(SettingsError, match="RNN_PORT") as info:
        load_settings(_env_file=None)
    assert "RNN_MAX_STREAMS" in str(info.value)


@pytest.mark.parametrize(
    "value",
    [
        "https://a.example,https://b.example",
        " https://a.example , https://b.example ,",
        '["https://a.example", "https://b.example"]',
    ],
)
def test_cors_origins_comma_list_or_json_list(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("RNN_CORS_ORIGINS", value)
    assert load_settings(_env_file=None).cors_origins == ["https://a.example", "https://b.example"]


@pytest.mark.parametrize(
    "value", ["mine=/srv/mine, pos.v2=artifacts/pos ,", '{"mine": "/srv/mine", "pos.v2": "artifacts/pos"}']
)
def test_models_as_name_path_pairs_or_a_json_object(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("RNN_MODELS", value)
    settings = load_settings(_env_file=None)
    assert settings.models == {"mine": Path("/srv/mine"), "pos.v2": Path("artifacts/pos")}
    assert list(artifact_paths(settings)) == [*TASKS, "mine", "pos.v2"]
    assert artifact_paths(settings)["tagger"] == Path("artifacts/tagger")


def test_no_extra_models_by_default() -> None:
    assert load_settings(_env_file=None).models == {}


def test_settings_from_a_dotenv_file(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("RNN_MAX_NEW_TOKENS=12\nRNN_CORS_ORIGINS=https://a.example\n", encoding="utf-8")
    settings = load_settings(_env_file=env_file)
    assert settings.max_new_tokens == 12
    assert settings.cors_origins == ["https://a.example"]


def test_python_m_app_with_a_bad_setting_exits_2_naming_it(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RNN_")}
    env.update(PYTHONPATH=str(REPO), RNN_PORT="abc")
    proc = subprocess.run(
        [sys.executable, "-m", "app"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    assert "RNN_PORT" in lines[0] and "'abc'" in lines[0]
    assert proc.stdout == ""


def default_names_with_suffix() -> list[str]:
    return [name + ARTIFACT_SUFFIX for name in default_names()]


SET_BY_THE_IMAGE = (
    "host",
    "port",
    "artifacts_dir",  # and compose
    "api_key",
    "api_key_file",
    "admin_api_key",
    "admin_api_key_file",
)  # keys: Docker secrets


def test_every_setting_is_documented_in_the_readme_and_the_env_example() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    example = (REPO / "docker" / ".env.example").read_text(encoding="utf-8")
    for name in Settings.model_fields:
        variable = f"RNN_{name.upper()}"
        if name in default_names_with_suffix():  # one row for every kind: adding a kind changes no document
            assert "`RNN_<KIND>_ARTIFACT`" in readme
            continue
        assert f"`{variable}`" in readme, f"{variable} is missing from the README's configuration table"
        if name not in SET_BY_THE_IMAGE:
            assert f"\n{variable}=" in example, f"{variable} is missing from docker/.env.example"


def test_a_kind_may_be_left_out_and_every_kind_defaults_under_the_artifacts_dir(tmp_path: Path) -> None:
    settings = load_settings(_env_file=None, artifacts_dir=tmp_path, tagger_artifact="None")
    assert artifact_paths(settings) == {
        "sentiment": tmp_path / "sentiment", "generator": tmp_path / "generator", "translator": tmp_path / "translator"
    }  # fmt: skip
    assert kinds_off(settings) == ["tagger"]
    mine = load_settings(_env_file=None, sentiment_artifact=tmp_path / "mine")
    assert artifact_paths(mine)["sentiment"] == tmp_path / "mine"
    assert artifact_paths(mine)["tagger"] == Path("artifacts") / "tagger"
    with pytest.raises(SettingsError, match="no model to serve: RNN_SENTIMENT_ARTIFACT, .* are all none"):
        load_settings(_env_file=None, **dict.fromkeys(default_names_with_suffix(), "none"))


def test_no_deployment_file_names_a_kind() -> None:
    """Adding a kind changes no deployment file: they loop over `python -m model kinds` and set
    RNN_ARTIFACTS_DIR, and a deployment that does not want a kind sets RNN_<KIND>_ARTIFACT=none."""
    for path in ("Dockerfile", "docker/compose.yaml", "docker/k8s.yaml", "docker/.env.example"):
        text = (REPO / path).read_text(encoding="utf-8")
        for kind in default_names():
            assert f"RNN_{kind.upper()}_ARTIFACT" not in text and f"/artifacts/{kind}" not in text, (path, kind)
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    assert "KINDS = $(shell $(PY) -m model kinds)" in makefile
