"""Sampling controls on a fixed-seed network and on hand-made logits: determinism, greedy, top-k, top-p,
repetition penalty, stop sequences, unknown characters."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.generator.config import CharLMConfig
from model.generator.network import CharRNN
from model.generator.sampling import (
    Sampler,
    SamplingParams,
    StopMatcher,
    apply_repetition_penalty,
    generate,
    stream,
    top_k_filter,
    top_p_filter,
)
from model.tokenization import UNK_ID, build_char_tokenizer

CORPUS = "to be or not to be, that is the question.\nwhether 'tis nobler in the mind to suffer\n"


@pytest.fixture(scope="module")
def lm() -> tuple[CharRNN, object]:
    tok = build_char_tokenizer(CORPUS)
    torch.manual_seed(0)
    net = CharRNN(CharLMConfig(vocab_size=tok.get_vocab_size(), hidden_size=16, embedding_dim=8)).eval()
    return net, tok


def test_same_seed_same_text(lm) -> None:
    net, tok = lm
    params = SamplingParams(max_new_tokens=40, temperature=1.0, seed=123)
    a, b = generate(net, tok, "to be", params), generate(net, tok, "to be", params)
    assert a.text == b.text and a.seed == 123 and a.tokens == 40
    other = generate(net, tok, "to be", SamplingParams(max_new_tokens=40, temperature=1.0, seed=124))
    assert other.text != a.text


def test_seed_is_drawn_and_reported_when_not_given(lm) -> None:
    net, tok = lm
    first = generate(net, tok, "to", SamplingParams(max_new_tokens=30))
    replay = generate(net, tok, "to", SamplingParams(max_new_tokens=30, seed=first.seed))
    assert replay.text == first.text


def test_temperature_zero_is_greedy_and_equals_top_k_one(lm) -> None:
    net, tok = lm
    greedy = [generate(net, tok, "the", SamplingParams(max_new_tokens=30, temperature=0, seed=s)).text for s in (1, 2)]
    assert greedy[0] == greedy[1]
    top1 = generate(net, tok, "the", SamplingParams(max_new_tokens=30, temperature=1.3, top_k=1, seed=9)).text
    assert top1 == greedy[0]


def test_top_k_keeps_only_k_tokens() -> None:
    logits = torch.tensor([0.1, 3.0, 2.0, -1.0, 1.0])
    kept = torch.isfinite(top_k_filter(logits, 2))
    assert kept.tolist() == [False, True, True, False, False]


def test_top_p_keeps_the_smallest_set_reaching_p() -> None:
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log()
    assert torch.isfinite(top_p_filter(logits, 0.5)).tolist() == [True, False, False, False]
    assert torch.isfinite(top_p_filter(logits, 0.79)).tolist() == [True, True, False, False]
    assert torch.isfinite(top_p_filter(logits, 0.81)).tolist() == [True, True, True, False]
    assert torch.isfinite(top_p_filter(logits, 1.0)).all()


def test_top_p_samples_only_from_the_nucleus() -> None:
    logits = torch.tensor([0.5, 0.3, 0.15, 0.05]).log()
    sampler = Sampler(SamplingParams(top_p=0.6, seed=0))
    assert {sampler.next_token(logits) for _ in range(200)} == {0, 1}


def test_repetition_penalty_lowers_recent_tokens() -> None:
    logits = torch.tensor([2.0, -1.0, 1.0])
    out = apply_repetition_penalty(logits, [0, 1], 2.0)
    assert out.tolist() == [1.0, -2.0, 1.0]
    assert apply_repetition_penalty(logits, [0], 1.0).tolist() == logits.tolist()


def test_repetition_penalty_changes_greedy_choice() -> None:
    logits = torch.tensor([2.0, 1.5, 0.0])
    sampler = Sampler(SamplingParams(temperature=0, repetition_penalty=2.0, seed=0))
    assert sampler.next_token(logits) == 0
    assert sampler.next_token(logits) == 1  # token 0 was just used: 2.0 / 2 < 1.5


def test_stop_sequence_ends_generation_and_is_excluded(lm) -> None:
    net, tok = lm
    free = generate(net, tok, "to", SamplingParams(max_new_tokens=60, temperature=0, seed=0)).text
    stop = free[10:13]
    cut = generate(net, tok, "to", SamplingParams(max_new_tokens=60, temperature=0, seed=0, stop=(stop,)))
    assert cut.finish_reason == "stop_sequence"
    assert cut.text == free[: free.index(stop)]
    assert stop not in cut.text


def test_length_finish_reason(lm) -> None:
    net, tok = lm
    result = generate(net, tok, "to", SamplingParams(max_new_tokens=5, seed=0))
    assert result.finish_reason == "length" and result.tokens == 5 and len(result.text) <= 5


def test_streamed_pieces_concatenate_to_the_text(lm) -> None:
    net, tok = lm
    params = SamplingParams(max_new_tokens=50, temperature=0.9, seed=5, stop=("xyz", "e t"))
    pieces, final = [], None
    for piece, done in stream(net, tok, "whether", params):
        pieces.append(piece)
        final = done or final
    assert final is not None and "".join(pieces) == final.text


def test_stop_matcher_holds_back_partial_matches() -> None:
    m = StopMatcher(["END"])
    assert m.feed("abcE") == "abc"
    assert m.feed("N") == ""
    assert m.feed("x") == "ENx"
    assert m.feed("yEND tail") == "y" and m.stopped
    assert m.feed("more") == ""


def test_unknown_prompt_characters_map_to_unk(lm) -> None:
    net, tok = lm
    assert tok.encode("漢").ids == [UNK_ID]
    result = generate(net, tok, "emoji 🙂 and 漢字", SamplingParams(max_new_tokens=10, seed=0))
    assert result.tokens == 10


def test_empty_prompt_generates(lm) -> None:
    net, tok = lm
    assert generate(net, tok, "", SamplingParams(max_new_tokens=8, seed=0)).tokens == 8


@pytest.mark.parametrize(
    "bad",
    [
        {"temperature": -0.1},
        {"temperature": float("nan")},
        {"temperature": float("inf")},
        {"top_k": 0},
        {"top_p": 0.0},
        {"top_p": 1.5},
        {"max_new_tokens": -1},
        {"repetition_penalty": 0.0},
        {"stop": ("",)},
        {"seed": -1},
    ],
)
def test_invalid_parameters_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError):
        SamplingParams(**bad)


def test_drawn_seeds_are_exact_in_javascript() -> None:
    assert all(0 <= Sampler(SamplingParams()).seed < 2**53 for _ in range(200))


@pytest.mark.parametrize("extra", [{}, {"top_k": 5}, {"top_p": 0.9, "repetition_penalty": 1.3}])
def test_a_stream_samples_the_same_alone_or_in_a_batch(extra: dict) -> None:
    """The Stepper + sample_batch path the service batches with: row results never depend on the other rows."""
    from model.generator.sampling import sample_batch
    from model.generator.stepper import Stepper

    torch.manual_seed(0)
    net = CharRNN(CharLMConfig(vocab_size=40, hidden_size=64, embedding_dim=8)).eval()
    step = Stepper(net)

    def run(seeds: list[int]) -> list[list[int]]:
        samplers = [Sampler(SamplingParams(temperature=0.7, seed=s, **extra)) for s in seeds]
        tokens, out = np.full(len(seeds), 2, dtype=np.int64), [[] for _ in seeds]
        h = np.zeros((1, len(seeds), 64), np.float32)  # stepped in place, as the service does
        for _ in range(100):
            tokens[:] = sample_batch(step.step(tokens, h), samplers)
            for row, t in zip(out, tokens.tolist(), strict=True):
                row.append(t)
        return out

    together = run(list(range(8)))
    assert [run([s])[0] for s in range(8)] == together
    assert len({tuple(r) for r in together}) == 8  # different seeds, different texts


@pytest.mark.parametrize("rows", [1, 2, "more"])
def test_stepper_equals_the_network(rows: int | str) -> None:
    """Per row matrix-vector products up to GEMV_ROWS rows, one matrix product above: the same arithmetic."""
    from model.generator.stepper import GEMV_ROWS, Stepper

    batch = GEMV_ROWS + 3 if rows == "more" else int(rows)
    for cell in ("gru", "lstm", "rnn"):
        torch.manual_seed(1)
        net = CharRNN(CharLMConfig(vocab_size=30, cell=cell, hidden_size=24, embedding_dim=8, num_layers=2)).eval()
        tokens = torch.randint(0, 30, (batch, 12))
        with torch.inference_mode():
            full, _ = net(tokens)
        step = Stepper(net)
        h = np.zeros((2, batch, 24), np.float32)
        c = h.copy() if cell == "lstm" else None
        for t in range(tokens.shape[1]):
            logits = torch.from_numpy(step.step(tokens[:, t].numpy(), h, c).copy())
            torch.testing.assert_close(logits, full[:, t], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cell", ["gru", "lstm", "rnn"])
def test_prefill_equals_the_network(cell: str) -> None:
    from model.generator.stepper import Stepper

    torch.manual_seed(2)
    net = CharRNN(CharLMConfig(vocab_size=30, cell=cell, hidden_size=24, embedding_dim=8, num_layers=2)).eval()
    prompts = [[3, 4, 5, 6, 7], [8], [9, 10, 11], [12, 13, 14, 15, 16]]
    logits, h, c = Stepper(net).prefill(prompts)
    assert logits.shape == (4, 30) and h.shape == (2, 4, 24) and (c is None) == (cell != "lstm")
    for row, prompt in enumerate(prompts):
        with torch.inference_mode():
            full, hidden = net(torch.tensor([prompt]))
        torch.testing.assert_close(torch.from_numpy(logits[row]), full[0, -1], atol=1e-5, rtol=1e-5)
        state = hidden[0] if isinstance(hidden, tuple) else hidden
        torch.testing.assert_close(torch.from_numpy(h[:, row]), state[:, 0], atol=1e-5, rtol=1e-5)
        if c is not None:
            torch.testing.assert_close(torch.from_numpy(c[:, row]), hidden[1][:, 0], atol=1e-5, rtol=1e-5)


def test_a_prompt_prefills_the_same_alone_or_beside_others() -> None:
    """The service prefills the prompts it admits together; the CLI prefills one at a time. A seeded stream must
    sample the same text either way, whatever the other prompts' lengths (the states agree to float32 rounding:
    one-row products take another BLAS path than batched ones, as in the steps)."""
    from model.generator.sampling import sample_batch
    from model.generator.stepper import Stepper

    torch.manual_seed(3)
    net = CharRNN(CharLMConfig(vocab_size=30, hidden_size=64, embedding_dim=8)).eval()
    step = Stepper(net)
    prompts = [[5] * 7, [6, 7], [8, 9, 10, 11, 12, 13, 14, 15, 16], [17, 18], [19]]

    def run(batch: list[list[int]], seeds: list[int]) -> tuple[list[list[int]], np.ndarray]:
        logits, h, c = step.prefill(batch)
        first = h.copy()
        samplers = [Sampler(SamplingParams(temperature=0.8, seed=s)) for s in seeds]
        out: list[list[int]] = [[] for _ in batch]
        for _ in range(60):
            tokens = sample_batch(logits, samplers)
            for row, t in zip(out, tokens, strict=True):
                row.append(t)
            logits = step.step(np.array(tokens, dtype=np.int64), h, c)
        return out, first

    together, state = run(prompts, list(range(5)))
    for row, prompt in enumerate(prompts):
        alone, alone_state = run([prompt], [row])
        assert alone[0] == together[row]
        np.testing.assert_allclose(alone_state[:, 0], state[:, row], atol=1e-6)
    assert len({tuple(r) for r in together}) == 5
    with pytest.raises(ValueError, match="at least one token"):
        step.prefill([[1], []])


def test_the_decoder_emits_safe_text_stops_and_says_why() -> None:
    """One stream's decoding as the CLI and the service both drive it: text held back while it could begin a stop
    sequence, the stop left out, the count and the finish reason; scored tokens keep every token."""
    from model.generator.sampling import Decoder

    table = {0: "", 1: "\ufffd", 2: "a", 3: "b", 4: "\n"}
    logits = np.zeros(5, np.float32)
    dec = Decoder([2, 3], SamplingParams(max_new_tokens=10, stop=("\n\n",), seed=1), table, logprobs=1)
    assert list(dec.sampler.recent) == [2, 3]  # the prompt counts for the repetition penalty
    assert [dec.feed(t, logits) for t in (2, 4, 3, 4)] == ["a", "", "\nb", ""]
    assert not dec.done
    assert dec.feed(4, logits) == "" and dec.done  # "\n\n": stopped, and the stop is not emitted
    tail, result = dec.finish()
    assert tail == "" and (result.text, result.finish_reason, result.tokens, result.seed) == ("a\nb", "stop_sequence",
                                                                                              5, 1)  # fmt: skip
    assert [t.text for t in dec.scored] == ["a", "\n", "b", "\n", "\n"]  # the scored tokens include the stop
    assert all(t.logprob == pytest.approx(-np.log(5)) and len(t.top) == 1 for t in dec.scored)

    short = Decoder([2], SamplingParams(max_new_tokens=2, stop=("ab",)), table)
    assert short.feed(2, logits) == "" and not short.done  # "a" may begin "ab": held back
    assert short.feed(2, logits) == "a" and short.done  # "aa": the first "a" is safe; the limit is reached
    tail, result = short.finish()
    assert tail == "a" and (result.text, result.finish_reason) == ("aa", "length") and short.scored == []


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_stepper_equals_the_network_for_a_batch_stepped_in_blocks(cell: str) -> None:
    """Past SERIAL_ELEMENTS a gate array is squashed in row blocks (to stay off torch's thread pool): the same
    numbers as the network's forward."""
    from model.generator.stepper import SERIAL_ELEMENTS, Stepper

    torch.manual_seed(3)
    net = CharRNN(CharLMConfig(vocab_size=30, cell=cell, hidden_size=24, embedding_dim=8)).eval()
    rows = SERIAL_ELEMENTS // 48 + 7  # gates of 72 or 96 columns: several blocks, the last one short
    tokens = torch.randint(0, 30, (rows, 4))
    with torch.inference_mode():
        full, _ = net(tokens)
    step = Stepper(net)
    h = np.zeros((1, rows, 24), np.float32)
    c = h.copy() if cell == "lstm" else None
    for t in range(tokens.shape[1]):
        logits = torch.from_numpy(step.step(tokens[:, t].numpy(), h, c).copy())
        torch.testing.assert_close(logits, full[:, t], atol=1e-5, rtol=1e-5)
