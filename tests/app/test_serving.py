"""The engines under load: micro-batching keeps each answer its own, continuous batching keeps each seed's text,
cancelled streams are dropped, and full engines or slow requests answer 503 at once."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from app.middleware import LimitsMiddleware
from app.serving.generator import GeneratorEngine, collect
from app.serving.metrics import Metrics
from app.serving.sentiment import ClassifierEngine
from model.generator.predictor import load_generator
from model.generator.sampling import SamplingParams, generate
from model.sentiment.predictor import load_sentiment
from tests.app.conftest import REPO, Artifacts, ClientFactory, metric, serving

SettingsFor = Callable[..., Settings]
WORDS = "good bad great awful the movie film plot was lovely dull boring superb".split()


def texts(n: int) -> list[str]:
    """`n` different texts of different lengths (so a batch is padded and length-sorted)."""
    return [" ".join(WORDS[(i + k) % len(WORDS)] for k in range(1 + i % 9)) + f" {i}" for i in range(n)]


def wait_until(condition: Callable[[], bool], timeout: float = 1.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return condition()


def assert_same(got: dict[str, Any], expected: dict[str, Any], tol: float = 1e-6) -> None:
    assert got["label"] == expected["label"]
    for label, p in expected["probabilities"].items():
        assert got["probabilities"][label] == pytest.approx(p, abs=tol)


def active_streams(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value("rnn_generation_active_streams", {"model": "generator"})


# ---------------------------------------------------------------------------------------------- classifier
def test_concurrent_requests_share_batches_and_keep_their_answers(
    settings_for: SettingsFor, artifacts: Artifacts
) -> None:
    reference = load_sentiment(artifacts.sentiment)
    batch = texts(32)

    async def main() -> tuple[list[dict[str, Any]], str]:
        async with serving(create_app(settings_for(batch_max_wait_ms=20))) as c:
            responses = await asyncio.gather(*(c.post("/sentiment", json={"text": t}) for t in batch))
            assert all(r.status_code == 200 for r in responses)
            return [r.json() for r in responses], (await c.get("/metrics")).text

    answers, metrics = asyncio.run(main())
    for text, answer in zip(batch, answers, strict=True):
        assert_same(answer, reference.predict([text])[0])
    forwards = metric(metrics, "rnn_batch_size_count", model="sentiment")
    assert metric(metrics, "rnn_batch_size_sum", model="sentiment") == 32
    assert forwards is not None and forwards < 32  # texts were batched together …
    singles = metric(metrics, "rnn_batch_size_bucket", model="sentiment", le="1.0")
    assert singles is not None and singles < forwards  # … some forward held more than one
    assert metric(metrics, "rnn_queue_depth", model="sentiment") == 0


def test_batches_never_exceed_the_max_size(artifacts: Artifacts) -> None:
    reference = load_sentiment(artifacts.sentiment)
    batch = texts(20)

    async def main() -> tuple[list[dict[str, Any]], Metrics]:
        metrics = Metrics()
        engine = ClassifierEngine(load_sentiment(artifacts.sentiment), max_batch=8, max_wait_ms=20, metrics=metrics)
        await engine.start()
        try:
            answers = await asyncio.gather(*(engine.classify([t]) for t in batch))
            return [a for [a] in answers], metrics
        finally:
            await engine.stop()

    answers, metrics = asyncio.run(main())
    for text, answer in zip(batch, answers, strict=True):
        assert_same(answer, reference.predict([text])[0])
    registry = metrics.registry
    count = registry.get_sample_value("rnn_batch_size_count", {"model": "sentiment"})
    assert registry.get_sample_value("rnn_batch_size_sum", {"model": "sentiment"}) == 20
    assert count is not None and 3 <= count < 20
    bucket = registry.get_sample_value("rnn_batch_size_bucket", {"model": "sentiment", "le": "8.0"})
    assert bucket == count  # none over 8


def test_batch_requests_waiting_together_are_sorted_together_into_forwards_of_the_max_size(
    artifacts: Artifacts,
) -> None:
    from model.sentiment.onnx_runtime import GRAPH, OnnxClassifier

    reference = load_sentiment(artifacts.sentiment)
    requests = [texts(24)[i::3] for i in range(3)]  # three requests of 8 texts of mixed lengths
    calls: list[list[int]] = []

    async def main() -> tuple[list[list[dict[str, Any]]], Metrics]:
        metrics = Metrics()
        model = load_sentiment(artifacts.sentiment)
        model.runner = OnnxClassifier(model.network, threads=2, graph=model.artifact.file(GRAPH))
        engine = ClassifierEngine(model, max_batch=8, max_wait_ms=20, metrics=metrics)
        infer = model.infer

        def counted(chunks: Any, *args: Any) -> Any:
            calls.append([len(idx) for idx, _, _ in chunks])
            return infer(chunks, *args)

        model.infer = counted  # type: ignore[method-assign]
        await engine.start()
        try:
            return list(await asyncio.gather(*(engine.classify(r) for r in requests))), metrics
        finally:
            await engine.stop()

    answers, metrics = asyncio.run(main())
    for request, got in zip(requests, answers, strict=True):
        for text, answer in zip(request, got, strict=True):
            assert_same(answer, reference.predict([text])[0], tol=1e-5)
    assert len(calls) == 1 and sum(calls[0]) == 24  # the three requests in one collection, sorted together
    assert len(calls[0]) >= 3 and max(calls[0]) <= 8  # ... in forwards of at most max_batch texts
    registry = metrics.registry
    assert registry.get_sample_value("rnn_batch_size_count", {"model": "sentiment"}) == len(calls[0])  # forwards
    assert registry.get_sample_value("rnn_batch_size_sum", {"model": "sentiment"}) == 24


def test_single_text_requests_run_on_one_onnx_thread_and_batch_requests_on_all(artifacts: Artifacts) -> None:
    """With more ONNX Runtime threads than one, a batch of single-text requests runs on the one-thread session
    (the event loop keeps the other core) and a batch request on the full one; the answers are the same."""
    pytest.importorskip("onnxruntime", reason="the optional onnx extra")
    from model.sentiment.onnx_runtime import OnnxClassifier

    reference = load_sentiment(artifacts.sentiment)
    model = load_sentiment(artifacts.sentiment)
    runner = OnnxClassifier(model.network, threads=2)
    model.runner = runner
    used: list[str] = []

    def spy(name: str, infer: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any) -> Any:
            used.append(name)
            return infer(*args)

        return run

    runner.infer = spy("all threads", runner.infer)  # type: ignore[method-assign]
    runner.one_thread.infer = spy("one thread", runner.one_thread.infer)  # type: ignore[method-assign]
    batch = texts(12)

    async def main() -> tuple[list[dict[str, Any]], list[str], list[dict[str, Any]], list[str]]:
        engine = ClassifierEngine(model, max_batch=64, max_wait_ms=20, metrics=Metrics())
        await engine.start()
        try:
            singles = [a for [a] in await asyncio.gather(*(engine.classify([t]) for t in batch))]
            by_singles = list(used)
            used.clear()
            together = await engine.classify(batch)
            return singles, by_singles, together, list(used)
        finally:
            await engine.stop()

    singles, by_singles, together, by_batch = asyncio.run(main())
    assert by_singles and set(by_singles) == {"one thread"}
    assert by_batch == ["all threads"]
    for text, one, other in zip(batch, singles, together, strict=True):
        assert_same(one, reference.predict([text])[0], tol=1e-5)
        assert_same(other, reference.predict([text])[0], tol=1e-5)


def test_a_timed_out_request_is_503_and_leaves_nothing_queued(settings_for: SettingsFor) -> None:
    async def main() -> None:
        app = create_app(settings_for(batch_max_wait_ms=300, request_timeout_s=0.05))
        async with serving(app) as c:
            r = await c.post("/sentiment", json={"text": "good"})
            assert r.status_code == 503
            assert r.headers["retry-after"] == "1"
            assert "RNN_REQUEST_TIMEOUT_S" in r.json()["detail"]
            await asyncio.sleep(0.4)  # the batcher wakes up, finds the request gone and runs no forward
            metrics = (await c.get("/metrics")).text
            assert metric(metrics, "rnn_batch_size_count", model="sentiment") == 0
            assert app.state.engines["sentiment"].queue.empty()

    asyncio.run(main())


# ---------------------------------------------------------------------------------------------- generator
def test_a_seed_gives_the_same_text_alone_and_among_concurrent_streams(
    settings_for: SettingsFor, artifacts: Artifacts
) -> None:
    seeds = [42] + list(range(100, 115))
    prompt = "First Citizen:\n"
    payload: dict[str, Any] = {"prompt": prompt, "max_new_tokens": 80, "temperature": 0.9}

    async def main() -> tuple[dict[int, str], dict[int, str], int]:
        app = create_app(settings_for())
        async with serving(app) as c:
            alone = {}
            for seed in seeds:
                alone[seed] = (await c.post("/generate", json={**payload, "seed": seed})).json()["generated_text"]
            steps = app.state.engines["generator"].steps
            responses = await asyncio.gather(*(c.post("/generate", json={**payload, "seed": s}) for s in seeds))
            together = {r.json()["seed"]: r.json()["generated_text"] for r in responses}
            return alone, together, app.state.engines["generator"].steps - steps

    alone, together, steps = asyncio.run(main())
    assert together == alone
    assert len(set(alone.values())) > 1
    assert steps < 16 * 79 / 2  # the 16 streams were stepped together, not one after another
    model = load_generator(artifacts.generator)
    expected = generate(model.network, model.tokenizer, prompt, SamplingParams(80, 0.9, seed=42))
    assert alone[42] == expected.text


def test_a_failing_stream_does_not_fail_the_others(artifacts: Artifacts) -> None:
    model = load_generator(artifacts.generator)

    async def main() -> str:
        engine = GeneratorEngine(model, max_streams=4, metrics=Metrics())
        await engine.start()
        try:  # the engine task cannot admit them before this coroutine awaits: the bad sampler is in place first
            good = engine.submit("All:", SamplingParams(max_new_tokens=150, seed=3))
            bad = engine.submit("All:", SamplingParams(max_new_tokens=150, seed=3))
            bad.decoder.sampler.temperature = "hot"  # type: ignore[assignment]  # breaks sampling, validation bypassed
            with pytest.raises(RuntimeError, match="sampling failed"):
                await collect(bad, 10)
            return (await collect(good, 10)).text
        finally:
            await engine.stop()

    text = asyncio.run(main())
    assert text == generate(model.network, model.tokenizer, "All:", SamplingParams(max_new_tokens=150, seed=3)).text


def test_a_new_streams_first_token_goes_out_after_its_first_step(artifacts: Artifacts) -> None:
    """The engine yields to the event loop right after a step that admitted streams, not at the end of its slice:
    a busy engine does not hold a newcomer's first token back."""

    async def main() -> int:
        engine = GeneratorEngine(load_generator(artifacts.generator), max_streams=2, metrics=Metrics())
        await engine.start()
        try:
            busy = engine.submit("All:", SamplingParams(max_new_tokens=100_000, seed=1))
            await asyncio.wait_for(busy.events.get(), 5)  # stepping now, slice after slice
            newcomer = engine.submit("Ro", SamplingParams(max_new_tokens=50, seed=2))
            before = engine.steps
            async with asyncio.timeout(5):  # as the route waits (app/routes/generator.py)
                assert (await newcomer.events.get()).kind == "tokens"
            return engine.steps - before
        finally:
            await engine.stop()

    assert asyncio.run(main()) <= 2  # the admitting step (and at most one already under way)


def test_a_cancelled_stream_is_dropped(artifacts: Artifacts) -> None:
    async def main() -> None:
        metrics = Metrics()
        engine = GeneratorEngine(load_generator(artifacts.generator), max_streams=2, metrics=metrics)
        await engine.start()
        try:
            stream = engine.submit("All:", SamplingParams(max_new_tokens=100_000, seed=1))
            for _ in range(5):
                assert (await asyncio.wait_for(stream.events.get(), 5)).kind == "tokens"
            assert engine.load == 1
            assert active_streams(metrics) == 1
            stream.cancel()
            deadline = time.monotonic() + 1.0
            while (engine.load or active_streams(metrics)) and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            assert engine.load == 0
            assert active_streams(metrics) == 0
            steps = engine.steps
            await asyncio.sleep(0.05)
            assert engine.steps == steps  # the engine is idle, not stepping a dead stream
        finally:
            await engine.stop()

    asyncio.run(main())


def test_a_client_leaving_a_stream_frees_its_slot(make_client: ClientFactory) -> None:
    c = make_client(max_streams=1, max_new_tokens=100_000)
    engine = c.app.state.engines["generator"]  # type: ignore[attr-defined]
    with c.stream("POST", "/generate/stream", json={"max_new_tokens": 100_000, "seed": 1}) as held:
        lines = held.iter_lines()  # keep it: a dropped iterator closes the response
        assert next(lines).startswith("data: ")
        assert engine.load == 1
        # every slot is taken: 503 at once, with Retry-After
        for route in ("/generate", "/generate/stream"):
            r = c.post(route, json={"max_new_tokens": 5})
            assert r.status_code == 503
            assert r.headers["retry-after"] == "1"
            assert "all 1 generation slots are busy" in r.json()["detail"]
        assert c.post("/sentiment", json={"text": "good"}).status_code == 200  # the classifier is not affected
        assert engine.load == 1
    # the client left: the engine drops the stream within a second
    assert wait_until(lambda: engine.load == 0)
    assert wait_until(lambda: metric(c.get("/metrics").text, "rnn_generation_active_streams") == 0)
    assert c.post("/generate", json={"max_new_tokens": 5, "seed": 0}).json()["generated_tokens"] == 5


def test_a_generation_over_the_time_limit_is_503_and_dropped(make_client: ClientFactory) -> None:
    c = make_client(max_new_tokens=100_000, request_timeout_s=0.1)
    engine = c.app.state.engines["generator"]  # type: ignore[attr-defined]
    r = c.post("/generate", json={"max_new_tokens": 100_000})
    assert r.status_code == 503
    assert "RNN_REQUEST_TIMEOUT_S" in r.json()["detail"] and r.headers["retry-after"] == "1"
    assert wait_until(lambda: engine.load == 0)


def test_stopping_the_engine_ends_waiting_streams(artifacts: Artifacts) -> None:
    async def main() -> None:
        engine = GeneratorEngine(load_generator(artifacts.generator), max_streams=2, metrics=Metrics())
        await engine.start()
        stream = engine.submit("All:", SamplingParams(max_new_tokens=100_000, seed=1))
        await asyncio.wait_for(stream.events.get(), 5)
        await asyncio.wait_for(engine.stop(), 5)
        assert engine.task is not None and engine.task.done()
        with pytest.raises(RuntimeError, match="shutting down"):
            await collect(stream, 5)

    asyncio.run(main())


# ---------------------------------------------------------------------------------------------- in flight
def test_requests_beyond_the_concurrency_limit_get_503(make_client: ClientFactory) -> None:
    c: TestClient = make_client(max_concurrent_requests=1)
    with c.stream("POST", "/generate/stream", json={"max_new_tokens": 500, "seed": 1}) as held:
        lines = held.iter_lines()
        assert next(lines).startswith("data: ")  # in flight until the client has read it all
        for route, body in (("/sentiment", {"text": "good"}), ("/generate", {"max_new_tokens": 5}),
                            ("/tag", {"text": "I saw it"})):  # fmt: skip
            r = c.post(route, json=body)
            assert r.status_code == 503
            assert r.headers["retry-after"] == "1"
            assert "RNN_MAX_CONCURRENT_REQUESTS" in r.json()["detail"]
        assert c.get("/health").status_code == 200  # operations are not limited
        assert c.get("/ready").status_code == 200
        events = [line for line in lines if line.startswith("data: ")]
    assert '"finish_reason": "length"' in events[-1]
    assert c.post("/sentiment", json={"text": "good"}).status_code == 200
    metrics = c.get("/metrics").text
    assert metric(metrics, "rnn_requests_rejected_total") == 3
    assert metric(metrics, "rnn_requests_total", route="unmatched", status="503") == 3  # counted, as before
    assert metric(metrics, "rnn_requests_in_flight") == 0


def test_the_limit_refuses_before_any_other_layer(make_client: ClientFactory) -> None:
    """The in-flight limit wraps the whole stack (Starlette's error layer, metrics, routing): a refusal
    is the cheapest answer. Its body is in the request's protocol's shape all the same."""
    c: TestClient = make_client(max_concurrent_requests=1)
    assert isinstance(c.app.middleware_stack, LimitsMiddleware)  # type: ignore[attr-defined]
    with c.stream("POST", "/generate/stream", json={"max_new_tokens": 500, "seed": 1}) as held:
        lines = held.iter_lines()  # kept: a dropped iterator closes the response
        assert next(lines).startswith("data: ")
        plain = c.post("/generate", json={"max_new_tokens": 5})
        oai = c.post("/v1/completions", json={"model": "generator", "prompt": "a", "max_tokens": 5})
    assert plain.status_code == oai.status_code == 503
    assert "RNN_MAX_CONCURRENT_REQUESTS" in plain.json()["detail"]
    assert oai.json()["error"]["type"] and "RNN_MAX_CONCURRENT_REQUESTS" in oai.json()["error"]["message"]
    big = c.post("/sentiment", content=b"x" * 2_000_000, headers={"content-type": "application/json"})
    assert big.status_code == 413  # refused from its content-length, before any other layer, and still counted
    assert metric(c.get("/metrics").text, "rnn_requests_total", route="unmatched", status="413") == 1


def test_a_browser_on_an_allowed_origin_reads_the_refusal(make_client: ClientFactory) -> None:
    """With RNN_CORS_ORIGINS, CORS wraps the limit layer: a refused request's answer carries the CORS headers (a
    browser would otherwise see an opaque network error), Retry-After readable by the page."""
    c: TestClient = make_client(max_concurrent_requests=1, cors_origins=["https://a.example"])
    origin = {"Origin": "https://a.example"}
    with c.stream("POST", "/generate/stream", json={"max_new_tokens": 500, "seed": 1}) as held:
        lines = held.iter_lines()
        assert next(lines).startswith("data: ")
        refused = c.post("/generate", json={"max_new_tokens": 5}, headers=origin)
        other = c.post("/generate", json={"max_new_tokens": 5}, headers={"Origin": "https://evil.example"})
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert refused.headers["access-control-allow-origin"] == "https://a.example"
    assert "retry-after" in refused.headers["access-control-expose-headers"].lower()
    assert other.status_code == 503 and "access-control-allow-origin" not in other.headers
    big = c.post("/sentiment", content=b"x" * 2_000_000, headers={"content-type": "application/json", **origin})
    assert big.status_code == 413 and big.headers["access-control-allow-origin"] == "https://a.example"


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_the_generator_gives_a_busy_loop_more_turns() -> None:
    """Between slices the engine lets the loop turn, and keeps letting it while its turns find work (a burst of
    connections takes a turn per stage of each request); an idle loop gets one turn and the engine goes on."""

    async def busy() -> tuple[bool, int]:
        loop = asyncio.get_running_loop()
        turns = 0

        def work(left: int) -> None:  # a stage of a request: 300 us of work, then the next stage a turn later
            nonlocal turns
            turns += 1
            _spin(300e-6)
            if left > 1:
                loop.call_soon(work, left - 1)

        loop.call_soon(work, 8)
        return await GeneratorEngine._yield(), turns

    async def idle() -> list[bool]:
        return [await GeneratorEngine._yield() for _ in range(20)]

    found, turns = asyncio.run(busy())
    assert found and turns >= 5  # one turn a slice would have let 1 or 2 of them run
    assert sum(asyncio.run(idle())) <= 10  # idle: mostly not busy (a turn this machine preempts may look busy)


def test_one_decoding_path_cli_generate_and_stream_give_the_same_bytes(
    settings_for: SettingsFor, artifacts: Artifacts, tmp_path: Path
) -> None:
    """`python -m model sample`, POST /generate and POST /generate/stream share one Decoder: the same prompt and
    seed give byte-identical text through each, alone or as one of 32 concurrent streams (with a stop sequence,
    top-k, top-p and a repetition penalty in play)."""
    prompt, seed = "First Citizen:\n", 42
    sampling = {"max_new_tokens": 120, "temperature": 0.9, "top_k": 20, "top_p": 0.95, "repetition_penalty": 1.1,
                "stop": ["\n\n"]}  # fmt: skip
    cli = subprocess.run(
        [sys.executable, "-m", "model", "sample", str(artifacts.generator), "--prompt", prompt, "--seed", str(seed),
         "--max-new-tokens", "120", "--temperature", "0.9", "--top-k", "20", "--top-p", "0.95",
         "--repetition-penalty", "1.1", "--stop", "\n\n"],
        capture_output=True, cwd=tmp_path, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr.decode()
    assert cli.stdout.startswith(prompt.encode()) and cli.stdout.endswith(b"\n")
    from_cli = cli.stdout[len(prompt.encode()) : -1]  # the CLI prints the prompt, the text, then a newline

    def streamed(body: bytes) -> bytes:
        events = [json.loads(line[6:]) for line in body.decode().splitlines() if line.startswith("data: ")]
        return "".join(e["token"]["text"] for e in events).encode()

    async def main() -> tuple[bytes, bytes, list[bytes], list[bytes]]:
        async with serving(create_app(settings_for())) as c:
            payload = {"prompt": prompt, "seed": seed, **sampling}
            alone = (await c.post("/generate", json=payload)).json()["generated_text"].encode()
            alone_stream = streamed((await c.post("/generate/stream", json=payload)).content)
            others = [{**payload, "seed": s} for s in range(100, 130)]
            answers = await asyncio.gather(
                c.post("/generate", json=payload), c.post("/generate/stream", json=payload),
                *(c.post("/generate" if i % 2 else "/generate/stream", json=o) for i, o in enumerate(others)),
            )  # fmt: skip
            together = [answers[0].json()["generated_text"].encode(), streamed(answers[1].content)]
            others_text = [a.json()["generated_text"].encode() if i % 2 else streamed(a.content)
                           for i, a in enumerate(answers[2:])]  # fmt: skip
            return alone, alone_stream, together, others_text

    alone, alone_stream, together, others = asyncio.run(main())
    assert from_cli == alone == alone_stream == together[0] == together[1]
    assert len(set(others)) > 1 and from_cli  # 32 streams in flight, each its own text
