"""The checks docker/ci.sh runs against the api container on 127.0.0.1 (standard library only).

    python docker/ci_checks.py routes PORT KEYS_DIR                     every model route and protocol answers
    python docker/ci_checks.py answers PORT KEYS_DIR FILE [--compare]   the service's answers, saved or compared
    python docker/ci_checks.py load PORT KEYS_DIR SECONDS               steady requests; prints what they got
    python docker/ci_checks.py streams PORT KEYS_DIR                    streams in flight must finish (docker stop)
    python docker/ci_checks.py version PORT KEYS_DIR N                  sentiment version N serves within a minute

KEYS_DIR holds the Docker secrets the api reads (docker/keys.py): the client key is the last line of api_keys,
the admin key the last line of admin_api_keys.
"""

from __future__ import annotations

import http.client
import itertools
import json
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any


def keys(directory: str) -> tuple[str, str]:
    def last(name: str) -> str:
        return (Path(directory) / name).read_text(encoding="utf-8").split()[-1]

    return last("api_keys"), last("admin_api_keys")


def call(port: int, path: str, body: Any = None, key: str | None = None, timeout: float = 30) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def routes(port: int, directory: str) -> None:
    """/ready, the model routes, the TGI, OpenAI and Inference API protocols, and the model cards."""
    key, _ = keys(directory)

    def ok(path: str, body: Any = None) -> Any:
        status, answer = call(port, path, body, key)
        assert status == 200, (path, status, answer)
        return answer

    assert ok("/ready")["status"] == "ready"
    good = ok("/sentiment", {"text": "a moving, beautifully acted and wonderful film"})
    bad = ok("/sentiment", {"text": "a dull, tedious and painfully boring mess"})
    print("sentiment:", good["label"], round(good["score"], 3), "/", bad["label"], round(bad["score"], 3))
    assert {good["label"], bad["label"]} <= {"negative", "positive"}
    out = ok("/generate", {"prompt": "ROMEO:", "max_new_tokens": 40, "seed": 1})
    print("generate:", repr(out["generated_text"]))
    assert out["generated_tokens"] == 40 and out["seed"] == 1
    tagged = ok("/tag", {"text": "I saw the saw."})
    print("tag:", [(t["text"], t["tag"]) for t in tagged["tokens"]])
    assert [t["text"] for t in tagged["tokens"]] == ["I", "saw", "the", "saw", "."]
    assert tagged["tokens"][0]["tag"] == "PRON" and tagged["tokens"][2]["tag"] == "DET"
    translated = ok("/translate", {"text": "Ein Hund läuft über eine Wiese.", "alignment": True})
    print("translate:", repr(translated["translation"]))
    assert translated["translation"].strip() and translated["alignment"], translated
    tgi = ok("/", {"inputs": "ROMEO:", "parameters": {"max_new_tokens": 40, "do_sample": True, "seed": 1}})
    oai = ok("/v1/completions", {"model": "generator", "prompt": "ROMEO:", "max_tokens": 40, "seed": 1})
    assert tgi[0]["generated_text"] == oai["choices"][0]["text"] == out["generated_text"], (tgi, oai)
    assert ok("/models/sentiment", {"inputs": "a moving film"})[0][0]["label"] in {"negative", "positive"}
    print("protocols: TGI, OpenAI and the Inference API answer")
    cards = {card["name"]: card for card in ok("/models")}
    assert list(cards) == ["sentiment", "generator", "tagger", "translator"], list(cards)
    print("serving:", {name: card["serving"] for name, card in cards.items()})
    assert cards["sentiment"]["serving"]["runtime"] == "onnx"  # the image carries ONNX Runtime, and it loads


def answers(port: int, key: str) -> dict[str, Any]:
    """What must be the same after a restart: labels and scores, seeded text, tags."""
    out: dict[str, Any] = {}
    for text in ("a moving, beautifully acted and wonderful film", "a dull, tedious and painfully boring mess"):
        status, body = call(port, "/sentiment", {"text": text}, key)
        assert status == 200, (status, body)
        out[f"sentiment {text}"] = [body["label"], round(body["score"], 4)]
    status, body = call(port, "/generate", {"prompt": "ROMEO:", "max_new_tokens": 60, "seed": 7}, key)
    assert status == 200, (status, body)
    out["generate"] = body["generated_text"]
    status, body = call(port, "/tag", {"text": "I saw the saw."}, key)
    assert status == 200, (status, body)
    out["tag"] = [t["tag"] for t in body["tokens"]]
    status, body = call(port, "/translate", {"text": "Zwei Kinder spielen im Sand."}, key)
    assert status == 200, (status, body)
    out["translate"] = body["translation"]
    return out


def check_answers(port: int, directory: str, file: str, compare: bool) -> None:
    key, admin = keys(directory)
    got = answers(port, key)
    if compare:
        want = json.loads(Path(file).read_text(encoding="utf-8"))
        assert got == want, f"answers changed:\n{got}\n{want}"
        print("the same answers as before:", json.dumps(got)[:160])
        return
    Path(file).write_text(json.dumps(got), encoding="utf-8")
    # the keys: none or a wrong one is refused, an inference key cannot reload, the admin key can
    assert call(port, "/sentiment", {"text": "fine"})[0] == 401
    assert call(port, "/sentiment", {"text": "fine"}, "wrong")[0] == 401
    assert call(port, "/admin/reload", {}, key)[0] == 401
    status, body = call(port, "/admin/reload", {}, admin, timeout=120)
    assert status == 200 and body["reloaded"], (status, body)
    assert answers(port, key) == got
    print("keys from the secrets: 401 without one or with a wrong one, the admin key reloads:", json.dumps(got)[:120])


def run_clients(count: int, client: Callable[[int, Callable[[str], None]], None]) -> Counter[str]:
    """`client(n, tally)` for n in range(count), all at once on threads; what they tallied. A client's exception
    is raised here."""
    tallied: Counter[str] = Counter()
    lock = threading.Lock()

    def tally(outcome: str) -> None:
        with lock:
            tallied[outcome] += 1

    with ThreadPoolExecutor(count) as pool:
        list(pool.map(lambda n: client(n, tally), range(count)))
    return tallied


def load(port: int, directory: str, seconds: float) -> None:
    """Four clients sending /sentiment and short /generate requests for `seconds`; prints the outcomes."""
    key, _ = keys(directory)
    deadline = time.monotonic() + seconds

    def client(n: int, tally: Callable[[str], None]) -> None:
        while time.monotonic() < deadline:
            path, body = (("/sentiment", {"text": "fine"}) if n % 2 else
                          ("/generate", {"prompt": "a", "max_new_tokens": 50, "seed": n}))  # fmt: skip
            try:
                tally(str(call(port, path, body, key, timeout=10)[0]))
            except (OSError, http.client.HTTPException) as exc:
                tally(type(exc).__name__)
                time.sleep(0.2)

    print("load:", json.dumps(run_clients(4, client)))


def streams(port: int, directory: str) -> None:
    """8 clients keep /generate/stream requests going until the server stops taking them. Every stream whose
    response began must end with its final event; a connection refused (the server has stopped listening) ends
    that client. Exits 1 if a started stream was cut."""
    key, _ = keys(directory)

    def client(n: int, tally: Callable[[str], None]) -> None:
        for seed in itertools.count(n, 8):
            body = json.dumps({"prompt": "ROMEO:", "max_new_tokens": 1000, "seed": seed}).encode()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            try:
                connection.request("POST", "/generate/stream", body,
                                   {"content-type": "application/json", "authorization": f"Bearer {key}"})  # fmt: skip
                response: http.client.HTTPResponse | None = connection.getresponse()
            except OSError:
                response = None
            if response is None or response.status != 200:  # 503 while shutting down: refused, not cut
                tally("refused")
                return
            try:
                raw = response.read()
                complete = b'"finish_reason"' in raw.rstrip().rsplit(b"\n\n", 1)[-1]
            except (OSError, http.client.HTTPException):
                complete = False
            tally("finished" if complete else "cut")
            connection.close()

    results = run_clients(8, client)
    results.update({k: 0 for k in ("finished", "cut", "refused") if k not in results})
    print("streams through docker stop:", json.dumps(results))
    sys.exit(1 if results["cut"] or not results["finished"] else 0)


def version(port: int, directory: str, number: int) -> None:
    """Version `number` of the sentiment model is swapped in by the api's poller, with no restart: its card says
    so, and an answer names it in its X-Model-Version header."""
    key, _ = keys(directory)
    deadline = time.monotonic() + 60
    while True:
        status, card = call(port, "/models/sentiment", key=key)
        assert status == 200, (status, card)
        if card["version"] == number:
            break
        assert time.monotonic() < deadline, f"still serving version {card['version']}, not {number}"
        time.sleep(0.5)
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/sentiment", data=json.dumps({"text": "a fine film"}).encode(),
        headers={"content-type": "application/json", "authorization": f"Bearer {key}"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.headers["x-model-version"] == str(number), dict(response.headers)
    print(f"sentiment: version {number} serving ({card['preset']} preset; on disk: {card['versions']})")


if __name__ == "__main__":
    command, port, directory, *rest = sys.argv[1:]
    if command == "routes":
        routes(int(port), directory)
    elif command == "answers":
        check_answers(int(port), directory, rest[0], "--compare" in rest)
    elif command == "load":
        load(int(port), directory, float(rest[0]))
    elif command == "streams":
        streams(int(port), directory)
    elif command == "version":
        version(int(port), directory, int(rest[0]))
    else:
        raise SystemExit(f"unknown command {command!r}")
