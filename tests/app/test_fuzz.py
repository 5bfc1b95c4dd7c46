"""Property-based fuzzing with schemathesis against the app's own OpenAPI document, served by a real server on
127.0.0.1: at least 1,000 generated requests across every operation, no server error, every response matching
the schema (status codes, content types, bodies)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from tests.app.conftest import Artifacts, running_server

CALLS = {"n": 0}
# the server's, and so its document's: quick requests; and as many generation slots as /v1/completions can ask for
# (n <= 128 completions of each of up to 8 prompts), a product of two limits that JSON Schema cannot state
LIMITS = {"max_new_tokens": 64, "max_input_chars": 400, "max_batch_texts": 8, "max_streams": 1024}
MIN_CASES = 1000


@pytest.fixture(scope="module")
def server_url(artifacts: Artifacts, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir: Path = tmp_path_factory.mktemp("fuzz")
    env = {f"RNN_{k.upper()}": str(v) for k, v in LIMITS.items()}
    with running_server(artifacts, workdir, log_level="warning", env=env) as server:
        yield server.url


def _document() -> dict[str, object]:
    """The OpenAPI document the server publishes at /openapi.json (it does not depend on settings or models)."""
    from app.config import Settings
    from app.main import create_app

    return create_app(Settings(_env_file=None, **LIMITS)).openapi()  # type: ignore[call-arg, arg-type]


# a schema-violating request must be refused with a 4xx: 413 (a limit) is as right an answer as 422. POST
# /models/{name} takes the body of its model's task (TGI's, or a classification's), which a schema cannot tie to the
# path: a body valid for another kind of model is rightly refused there, so that check is off for that operation
CONFIG = schemathesis.Config.from_dict(
    {
        "checks": {"negative_data_rejection": {"expected-statuses": ["400", "401", "403", "404", "405", "413", "422"]}},
        "operations": [{"include-path": "/models/{name}", "include-method": "POST",
                        "checks": {"positive_data_acceptance": {"enabled": False}}}],
    }
)  # fmt: skip
schema = schemathesis.openapi.from_dict(_document(), config=CONFIG)


@schema.parametrize()
@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_server_error_and_every_response_matches_the_schema(case: schemathesis.Case, server_url: str) -> None:
    case.call_and_validate(base_url=server_url, timeout=30)
    CALLS["n"] += 1


def test_at_least_a_thousand_cases_ran() -> None:
    print(f"schemathesis: {CALLS['n']} generated requests")
    assert CALLS["n"] >= MIN_CASES, CALLS
