"""The demo page in a real browser: headless Chromium (Debian's) driven by Playwright against the real server.

Skipped only where no Chromium is installed and this is not CI; CI installs it (.ci/run) and must run this.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from model.versions import RESERVED
from tests.app.conftest import PARALLEL, Artifacts, running_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists() and not os.environ.get("CI"), reason="no Chromium here (CI installs it)"
    ),
]


@pytest.fixture(scope="module")
def server(artifacts: Artifacts, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_server(artifacts, tmp_path_factory.mktemp("browser"), log_level="warning") as running:
        yield running.url


@pytest.fixture(scope="module")
def page(server: str) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = browser.new_page()
        page.goto(server + "/")
        yield page
        browser.close()


def test_sentiment_shows_label_probabilities_and_word_weights(page, server: str) -> None:  # noqa: ANN001
    text = "a superb and lovely film"
    page.fill("#sentiment-input", text)
    page.click("#sentiment-submit")
    result = page.locator("#sentiment-result")
    result.locator(".label").wait_for(timeout=15_000)
    expected = httpx.post(f"{server}/sentiment", json={"text": text}).json()
    assert result.locator(".label").inner_text().startswith(expected["label"])
    for label in expected["probabilities"]:
        assert label in result.inner_text()
    words = result.locator(".words span")
    assert words.count() == len(text.split())
    assert [words.nth(i).inner_text() for i in range(words.count())] == text.split()


def test_generation_streams_into_the_page(page, server: str) -> None:  # noqa: ANN001
    page.fill("#generate-input", "All:")
    page.fill("#generate-length", "40")
    page.click("#generate-submit")
    details = page.locator("#generate-details")
    page.wait_for_function("document.getElementById('generate-details').textContent.includes('characters')",
                           timeout=15_000)  # fmt: skip
    assert "40 characters" in details.inner_text()
    assert len(page.locator("#generate-output").inner_text()) > 0


def test_tagging_shows_each_word_with_its_tag(page, server: str) -> None:  # noqa: ANN001
    text = "I saw the saw."
    page.fill("#tag-input", text)
    page.click("#tag-submit")
    words = page.locator("#tag-output .tagged")
    words.first.wait_for(timeout=15_000)
    expected = httpx.post(f"{server}/tag", json={"text": text}).json()["tokens"]
    assert words.count() == len(expected) == 5
    shown = [(words.nth(i).locator(".word").inner_text(), words.nth(i).locator(".tag").inner_text())
             for i in range(words.count())]  # fmt: skip
    assert shown == [(t["text"], t["tag"]) for t in expected]
    assert [tag for _, tag in shown] == ["PRON", "VERB", "DET", "NOUN", "PUNCT"]
    page.fill("#tag-input", "   ")
    page.click("#tag-submit")
    page.locator("#tag-output .muted").wait_for(timeout=10_000)
    assert "no words" in page.locator("#tag-output").inner_text()


def test_errors_are_shown_not_swallowed(page) -> None:  # noqa: ANN001
    page.fill("#sentiment-input", "   ")
    page.click("#sentiment-submit")
    page.locator("#sentiment-result .error").wait_for(timeout=10_000)
    assert "non-whitespace" in page.locator("#sentiment-result").inner_text()
    page.fill("#tag-input", "a" * 2001)
    page.click("#tag-submit")
    page.locator("#tag-output .error").wait_for(timeout=10_000)
    assert "RNN_MAX_INPUT_CHARS" in page.locator("#tag-output").inner_text()


def test_translation_shows_the_text_and_its_alignment_heatmap(page, server: str) -> None:  # noqa: ANN001
    source, target = PARALLEL[3]
    page.fill("#translate-input", source)
    page.click("#translate-submit")
    page.locator("#translate-output .translation").wait_for(timeout=15_000)
    assert page.locator("#translate-output .translation").inner_text() == target
    answer = httpx.post(f"{server}/translate", json={"text": source, "alignment": True}).json()
    rows = page.locator("#translate-output table.alignment tr")
    assert rows.count() == len(answer["alignment"]) + 1  # a header of source words, then one row per subword
    assert page.locator("#translate-output th.source").count() == max(a["source_word"] for a in answer["alignment"]) + 1
    page.fill("#translate-input", "a" * 2001)
    page.click("#translate-submit")
    page.locator("#translate-output .error").wait_for(timeout=10_000)
    assert "RNN_MAX_INPUT_CHARS" in page.locator("#translate-output").inner_text()


def test_the_page_says_which_version_serves_and_what_is_training(page, artifacts: Artifacts, tmp_path: Path) -> None:  # noqa: ANN001, E501
    shelf = tmp_path / "sentiment"
    shutil.copytree(artifacts.sentiment, shelf / "1")
    (shelf / f"{RESERVED}2").touch()  # a trainer is writing version 2
    with running_server(artifacts, tmp_path, log_level="warning", env={"RNN_SENTIMENT_ARTIFACT": str(shelf)}) as s:
        other = page.context.browser.new_page()  # the module's browser, on this server
        other.goto(s.url + "/")
        other.wait_for_function("document.getElementById('models-status').textContent.includes('translator')")
        expected = "sentiment: version 1, version 2 training · generator: loaded · tagger: loaded · translator: loaded"
        assert other.locator("#models-status").inner_text() == expected
        other.close()
