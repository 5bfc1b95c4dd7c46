"""Service settings, read from `RNN_*` environment variables (or a `.env` file) and validated at start-up.

Architecture values never live here: they come from the artifacts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PREFIX = "RNN_"


class SettingsError(Exception):
    """An invalid setting; the message names the environment variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=PREFIX, env_file=".env", extra="ignore", frozen=True)

    sentiment_artifact: Path = Path("artifacts/sentiment")
    generator_artifact: Path = Path("artifacts/generator")
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
    quantize: Literal["none", "int8"] = "none"  # the classifier's weights; int8: faster, measured in the README
    # the classifier's runtime: auto = ONNX Runtime when the `onnx` extra is installed, else torch eager
    runtime: Literal["auto", "onnx", "torch"] = "auto"
    # ONNX Runtime's intra-op threads (they sleep when idle); a batch of single-text requests runs on one
    onnx_threads: int = Field(2, ge=1, le=256)
    # the HTTP server (uvicorn): auto = uvloop and httptools when installed (they are dependencies), else asyncio
    # and h11; workers > 1 runs that many processes, each with its own models
    loop: Literal["auto", "asyncio", "uvloop"] = "auto"
    http: Literal["auto", "h11", "httptools"] = "auto"
    workers: int = Field(1, ge=1, le=64)
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    api_key: SecretStr | None = None
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
                import json

                return json.loads(value)
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("api_key", mode="after")
    @classmethod
    def _no_empty_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value():
            return None
        return value


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment; a bad value raises SettingsError naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else "?"
            problems.append(f"{PREFIX}{field.upper()}: {err['msg']} (got {err.get('input')!r})")
        raise SettingsError("invalid setting " + "; ".join(problems)) from None
