"""Service settings, read from `RNN_*` environment variables (or a `.env` file) and validated at start-up.

Architecture values never live here: they come from the artifacts.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.auth import KeyRing

PREFIX = "RNN_"
ARTIFACT_SUFFIX = "_artifact"  # `<kind>_artifact`: the default model of each kind, served under the kind's name
MODEL_NAME = r"^[a-z0-9][a-z0-9_.-]{0,63}$"  # a model's name: in request bodies, and later in URLs
_MODEL_NAME = re.compile(MODEL_NAME)


class SettingsError(Exception):
    """An invalid setting; the message names the environment variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=PREFIX, env_file=".env", extra="ignore", frozen=True)

    # where each kind's default model is, as <dir>/<kind>, unless its own setting names another path
    artifacts_dir: Path = Path("artifacts")
    # the default model of each kind (unset: <artifacts_dir>/<kind>); `none` leaves the kind out of this
    # deployment (its routes answer 404)
    sentiment_artifact: Path | Literal["none"] | None = None
    generator_artifact: Path | Literal["none"] | None = None
    tagger_artifact: Path | Literal["none"] | None = None
    translator_artifact: Path | Literal["none"] | None = None
    # more models beside the defaults, by name: `name=path,name2=path2` or a JSON object; each one's kind comes
    # from its artifact, and requests choose it with `"model": "name"`
    models: Annotated[dict[str, Path], NoDecode] = {}
    # how often a model whose path is a directory of versions is checked for a newer one (app/versions.py); 0: never
    model_poll_seconds: float = Field(5.0, ge=0, le=86400)
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    # limits
    max_input_chars: int = Field(2000, ge=1, le=1_000_000)
    max_batch_texts: int = Field(64, ge=1, le=10_000)
    max_new_tokens: int = Field(1000, ge=1, le=100_000)
    max_body_bytes: int = Field(1_000_000, ge=1024)
    max_concurrent_requests: int = Field(256, ge=1)
    request_timeout_s: float = Field(30.0, gt=0)
    # batching
    batch_max_size: int = Field(64, ge=1, le=4096)
    batch_max_wait_ms: float = Field(0.0, ge=0, le=1000)  # measured: bench/batching.py
    max_streams: int = Field(64, ge=1, le=4096)
    # runtime
    torch_threads: int = Field(1, ge=0, le=256)  # measured: bench/serve.py --sections knobs
    ensemble_threads: int = Field(2, ge=1, le=64)  # the classifier's members run side by side on this many
    quantize: Literal["none", "int8"] = "none"  # the classifier's weights; int8: faster, measured in docs/results.md
    # the classifier's runtime: auto = ONNX Runtime when the `onnx` extra is installed, else torch eager
    runtime: Literal["auto", "onnx", "torch"] = "auto"
    # ONNX Runtime's intra-op threads (they sleep when idle); a batch of single-text requests runs on one
    onnx_threads: int = Field(2, ge=1, le=256)
    # ... and a batch of several single-text requests on ONNX Runtime runs in a process of its own, whose forwards
    # never wait for the event loop's GIL (app/serving/forward_process.py); off: in the model thread
    forward_process: bool = True
    # the HTTP server (uvicorn): asyncio's loop, which takes in every waiting connection each turn (uvloop, which
    # takes about one a turn, left a burst of 300 waiting behind the generator for over a second:
    # bench/overload.py); auto = uvloop when installed. http auto = httptools when installed (a dependency), else
    # h11; workers > 1 runs that many processes, each with its own models
    loop: Literal["auto", "asyncio", "uvloop"] = "asyncio"
    http: Literal["auto", "h11", "httptools"] = "auto"
    workers: int = Field(1, ge=1, le=64)
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    # FastAPI's own OpenTelemetry instrumentation: a span, metrics and logs per request, sent to the providers set
    # up in the process (or from OTEL_* variables with FASTAPI_OTEL_AUTO_CONFIGURE=true). Off, FastAPI no longer
    # looks for those providers on every request: 3 % of the event loop's time per /sentiment request under load
    # (py-spy, docs/results.md); the Prometheus metrics at /metrics are the service's own either way
    opentelemetry: bool = False
    # API keys (app/auth.py): several comma-separated, or a file of one key a line (re-read when it changes)
    api_key: SecretStr | None = None
    api_key_file: Path | None = None
    admin_api_key: SecretStr | None = None  # /admin/*: a key of its own; with none, the admin routes are off
    admin_api_key_file: Path | None = None
    cors_origins: Annotated[list[str], NoDecode] = []

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        """A comma-separated list (`https://a.example,https://b.example`) or a JSON list."""
        if isinstance(value, str):
            value = value.strip()
            if value.startswith("["):
                return json.loads(value)
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("*", mode="before")
    @classmethod
    def _kind_off(cls, value: object, info: ValidationInfo) -> object:
        """`<kind>_artifact=none`: the deployment does not serve that kind."""
        off = isinstance(value, str) and value.strip().lower() == "none"
        return "none" if off and info.field_name and info.field_name.endswith(ARTIFACT_SUFFIX) else value

    @field_validator("models", mode="before")
    @classmethod
    def _parse_models(cls, value: object) -> object:
        """`name=path,name2=path2` or a JSON object {"name": "path"}."""
        if not isinstance(value, str):
            return value
        value = value.strip()
        if value.startswith("{"):
            return json.loads(value)
        models: dict[str, str] = {}
        for entry in filter(None, (v.strip() for v in value.split(","))):
            name, sep, path = entry.partition("=")
            if not sep or not name.strip() or not path.strip():
                raise ValueError(f"{entry!r} is not name=path")
            if name.strip() in models:
                raise ValueError(f"{name.strip()!r} is named twice")
            models[name.strip()] = path.strip()
        return models

    @field_validator("models", mode="after")
    @classmethod
    def _check_names(cls, value: dict[str, Path]) -> dict[str, Path]:
        for name in value:
            if not _MODEL_NAME.match(name):
                raise ValueError(f"model name {name!r} does not match {MODEL_NAME}")
            if name in default_names():
                raise ValueError(f"{name!r} is a default model's name; the defaults are {list(default_names())}")
        return value

    @field_validator("api_key", "admin_api_key", mode="after")
    @classmethod
    def _no_empty_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().replace(",", "").strip():
            return None
        return value

    @field_validator("api_key_file", "admin_api_key_file", mode="before")
    @classmethod
    def _no_empty_file(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _something_to_serve(self) -> Settings:
        if not artifact_paths(self):
            variables = ", ".join(PREFIX + (name + ARTIFACT_SUFFIX).upper() for name in default_names())
            raise ValueError(f"no model to serve: {variables} are all none and RNN_MODELS is empty")
        return self

    @model_validator(mode="after")
    def _usable_keys(self) -> Settings:
        """Each key setting from the environment or from a file, not both; the keys well-formed and the file
        readable, holding at least one key."""
        for name in ("api_key", "admin_api_key"):
            variable = PREFIX + name.upper()
            keys, file = getattr(self, name), getattr(self, name + "_file")
            if keys is not None and file is not None:
                raise ValueError(f"{variable} and {variable}_FILE are both set: choose one")
            KeyRing(variable, keys, file)  # raises KeyConfigError (a ValueError) naming the variable, never a key
        return self

    @property
    def keyed(self) -> bool:
        """Whether the model routes need an API key."""
        return self.api_key is not None or self.api_key_file is not None


def default_names() -> tuple[str, ...]:
    """The default models' names, in serving order: one per `<kind>_artifact` setting."""
    return tuple(f.removesuffix(ARTIFACT_SUFFIX) for f in Settings.model_fields if f.endswith(ARTIFACT_SUFFIX))


def artifact_paths(settings: Settings) -> dict[str, Path]:
    """Every model to serve, by name: the defaults (named after their kind; not a kind set to none), then
    RNN_MODELS in its order."""
    defaults: dict[str, Path] = {}
    for name in default_names():
        path = getattr(settings, name + ARTIFACT_SUFFIX)
        if path != "none":
            defaults[name] = settings.artifacts_dir / name if path is None else path
    return {**defaults, **settings.models}


def kinds_off(settings: Settings) -> list[str]:
    """The kinds whose default model this deployment leaves out (`RNN_<KIND>_ARTIFACT=none`)."""
    return [name for name in default_names() if getattr(settings, name + ARTIFACT_SUFFIX) == "none"]


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment; a bad value raises SettingsError naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            if not err["loc"]:  # a check across settings: its message names them
                problems.append(err["msg"].removeprefix("Value error, "))
                continue
            field = str(err["loc"][0])
            got = "(hidden)" if field.endswith("api_key") else repr(err.get("input"))  # a key is never echoed
            problems.append(f"{PREFIX}{field.upper()}: {err['msg']} (got {got})")
        raise SettingsError("invalid setting " + "; ".join(problems)) from None
