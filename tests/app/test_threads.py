"""The generator's BLAS thread choice (app/serving/threads.py): the chooser keeps the faster option as measured,
probes again less often while nothing changes, and the choice never changes a stream's text."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Iterator
from typing import Any, TypeVar

import numpy as np
import pytest
import torch

from app.main import create_app
from app.serving import threads
from app.serving.threads import BlasThreads, FasterOf
from model.generator.config import CharLMConfig
from model.generator.network import CharRNN
from model.generator.predictor import load_generator
from model.generator.sampling import SamplingParams, generate
from model.generator.stepper import Stepper
from tests.app.conftest import Artifacts, serving
from tests.app.test_serving import SettingsFor

T = TypeVar("T")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def probe(chooser: FasterOf[T], seconds: dict[T, float]) -> list[T]:
    """Run until the probe under way ends; each option's run takes seconds[option]. The options it tried."""
    tried = []
    while True:
        option = chooser.pick()
        tried.append(option)
        chooser.record(seconds[option])
        if chooser.times is None:
            return tried


def test_a_probe_interleaves_the_options_and_keeps_the_faster() -> None:
    clock = Clock()
    chooser = FasterOf(["two", "one"], probe_runs=3, hold_s=1.0, clock=clock)
    assert probe(chooser, {"two": 0.004, "one": 0.001}) == ["two", "one"] * 3
    assert chooser.choice == "one"
    assert chooser.means == pytest.approx({"two": 0.004, "one": 0.001})  # what /models reports, in µs
    assert [chooser.pick() for _ in range(5)] == ["one"] * 5  # held: no probe before hold_s
    for _ in range(5):
        chooser.record(1.0)  # runs outside a probe are not counted
    assert chooser.choice == "one"


def test_a_confirmed_choice_is_probed_less_often_and_a_change_resets_the_hold() -> None:
    clock = Clock()
    chooser = FasterOf([2, 1], probe_runs=2, hold_s=1.0, max_hold_s=8.0, clock=clock)
    probe(chooser, {2: 0.001, 1: 0.002})
    holds = [chooser.hold]
    for _ in range(4):
        clock.now = chooser.until
        probe(chooser, {2: 0.001, 1: 0.002})
        holds.append(chooser.hold)
    assert holds == [2.0, 4.0, 8.0, 8.0, 8.0]
    clock.now = chooser.until
    probe(chooser, {2: 0.030, 1: 0.002})  # another process took a core: two threads now wait
    assert (chooser.choice, chooser.hold) == (1, 1.0)
    clock.now = chooser.until - 0.01
    assert chooser.pick() == 1 and chooser.times is None


def test_the_mean_decides_so_a_rare_long_wait_counts() -> None:
    chooser = FasterOf(["a", "b"], probe_runs=4, clock=Clock())
    runs = {"a": iter([0.001, 0.001, 0.001, 0.050]), "b": iter([0.002] * 4)}
    while True:
        option = chooser.pick()
        chooser.record(next(runs[option]))
        if chooser.times is None:
            break
    assert chooser.choice == "b"  # a's median is lower, its mean is not


def test_one_option_is_never_probed() -> None:
    chooser = FasterOf([1], clock=Clock())
    for _ in range(10):
        assert chooser.pick() == 1
        chooser.record(0.5)
    assert chooser.times is None


@pytest.fixture
def blas_library() -> Iterator[tuple[Any, int]]:
    """(OpenBLAS's threadpoolctl controller, the core count), for a test that sets the thread count; the count it
    found is restored afterwards. Skips without such a BLAS or with one core."""
    library, most = BlasThreads().library, os.cpu_count() or 1
    if library is None or most < 2:
        pytest.skip("no BLAS whose thread count threadpoolctl can set, or one core")
    # threadpoolctl lets one thread at a time set OpenBLAS's count: other tests' event loops ran in their own
    library.clear_controlling_thread()
    before = library.num_threads
    try:
        yield library, most
    finally:
        library.set_num_threads(before)
        library.clear_controlling_thread()


def test_one_or_two_blas_threads_step_the_same_bits(blas_library: tuple[Any, int]) -> None:
    library, most = blas_library
    torch.manual_seed(0)
    stepper = Stepper(CharRNN(CharLMConfig(vocab_size=67, hidden_size=512)).eval())  # big enough to split
    rng = np.random.default_rng(0)
    for rows in (1, 2, 3, 4, 5, 6, 7, 32, 64):
        h = rng.standard_normal((1, rows, 512)).astype(np.float32)
        tokens = rng.integers(0, 67, rows)
        outs = []
        for n in (1, most):
            library.set_num_threads(n)
            assert library.num_threads == n
            state = h.copy()
            outs.append((stepper.step(tokens, state).copy(), state))
        assert np.array_equal(outs[0][0], outs[1][0]) and np.array_equal(outs[0][1], outs[1][1]), rows


def test_a_stream_switching_thread_counts_at_every_step_gives_its_seeds_text(
    settings_for: SettingsFor, artifacts: Artifacts, monkeypatch: pytest.MonkeyPatch
) -> None:
    blas = threads.blas_threads()
    counts = itertools.cycle(sorted({1, max(blas.choosers["more"].options)}))
    for chooser in blas.choosers.values():  # one count sequence over both: a stream's steps alone and beside others
        monkeypatch.setattr(chooser, "pick", lambda: next(counts))
    prompt, params = "ROMEO:", SamplingParams(60, 0.9, seed=7)

    async def main() -> dict[str, Any]:
        app = create_app(settings_for())
        async with serving(app) as c:
            body = {"prompt": prompt, "max_new_tokens": 60, "temperature": 0.9, "seed": 7}
            answer: dict[str, Any] = (await c.post("/generate", json=body)).json()
            return answer

    answer = asyncio.run(main())
    model = load_generator(artifacts.generator)
    assert answer["generated_text"] == generate(model.network, model.tokenizer, prompt, params).text
    assert blas.threads in blas.choosers["more"].options


def test_a_step_of_one_stream_and_of_more_choose_their_thread_counts_apart(blas_library: tuple[Any, int]) -> None:
    library, most = blas_library
    library.set_num_threads(most)  # what the service starts with; other tests may have left one
    blas = BlasThreads()
    for chooser in blas.choosers.values():
        chooser.clock, chooser.until = itertools.count().__next__, 0  # a clock that probes again soon

    def step(slow_on_one: bool) -> None:  # the thread count is the one `run` has just set
        time.sleep(0.002 if (blas.threads == 1) == slow_on_one else 0.0)

    # one stream steps faster on all threads, 32 streams on one: what each path measures is its own
    for _ in range(40):
        blas.run(False, step, False)  # 32 streams
        blas.run(True, step, True)  # one
    described = blas.describe()
    assert described["blas_threads"] == most and described["blas_threads_more"] == 1, described
    assert set(described["step_us_by_threads"]) == {"few", "more"}  # type: ignore[arg-type]
