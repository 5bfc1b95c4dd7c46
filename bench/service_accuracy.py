"""SST-2 test accuracy measured through the running service's POST /sentiment/batch, beside the artifact's own
evaluation (`python -m model evaluate`'s code path) in the same run: the two must be equal.

    python bench/service_accuracy.py [--artifact artifacts/sentiment] [--generator artifacts/generator]

Starts `python -m app` on a free 127.0.0.1 port, sends the test split in batches of 64, and stops it.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.readme import save_json, update_section  # noqa: E402
from model.sentiment.data import load_sst2  # noqa: E402
from model.sentiment.predictor import load_sentiment  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(
    sentiment: Path, generator: Path, port: int, extra_env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start `python -m app` on 127.0.0.1:`port` and wait until /ready answers 200."""
    env = dict(os.environ, RNN_HOST="127.0.0.1", RNN_PORT=str(port), RNN_LOG_LEVEL="warning",
               RNN_SENTIMENT_ARTIFACT=str(sentiment), RNN_GENERATOR_ARTIFACT=str(generator))  # fmt: skip
    env.update(extra_env or {})
    proc = subprocess.Popen([sys.executable, "-m", "app"], cwd=ROOT, env=env)
    return wait_ready(proc, port, timeout=120)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a server started by serve() or bench/serve.py's start(): SIGTERM, then SIGKILL after 30 s."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def wait_ready(
    proc: subprocess.Popen[bytes], port: int, timeout: float, log: Path | None = None
) -> subprocess.Popen[bytes]:
    """Wait until the server `proc` answers GET /ready with 200 on 127.0.0.1:`port`; SystemExit (with the tail
    of its `log`, when it has one) if it exits or is not ready within `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = f":\n{log.read_text()[-2000:]}" if log is not None else ""
            raise SystemExit(f"{proc.args!r} exited during start-up (status {proc.returncode}){tail}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.terminate()
    raise SystemExit(f"{proc.args!r} was not ready within {timeout:g} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifact", type=Path, default=ROOT / "artifacts/sentiment")
    parser.add_argument("--generator", type=Path, default=ROOT / "artifacts/generator")
    parser.add_argument("--data-dir", help="SST-2 mirror (default: $RNN_DATA_DIR)")
    parser.add_argument("--update-readme", action="store_true")
    args = parser.parse_args()
    test = load_sst2(args.data_dir).test
    assert test is not None
    import torch

    model = load_sentiment(args.artifact)
    targets = torch.tensor([model.labels.index(x) for x in test.labels])
    offline_pred = model.predict_proba(test.texts).argmax(dim=1)
    offline_correct = int((offline_pred == targets).sum())

    port = free_port()
    proc = serve(args.artifact, args.generator, port)
    try:
        predicted: list[str] = []
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            for start in range(0, len(test.texts), 64):
                r = client.post("/sentiment/batch", json={"texts": test.texts[start : start + 64]})
                r.raise_for_status()
                predicted.extend(x["label"] for x in r.json()["results"])
    finally:
        stop(proc)
    served_correct = sum(p == t for p, t in zip(predicted, test.labels, strict=True))
    offline_labels = [model.labels[i] for i in offline_pred.tolist()]
    n = len(test.labels)
    report = {
        "n": n,
        "artifact_evaluation_accuracy": offline_correct / n,
        "service_accuracy": served_correct / n,
        "same_predictions": sum(a == b for a, b in zip(offline_labels, predicted, strict=True)),
        "equal": served_correct == offline_correct and offline_labels == predicted,
    }
    save_json("service_accuracy", report)
    if args.update_readme:
        update_section(
            "service_accuracy",
            f"Last run: {report['same_predictions']} of {n} predictions identical; accuracy "
            f"{report['service_accuracy']:.4f} through the service, {report['artifact_evaluation_accuracy']:.4f} "
            "from the artifact.",
        )
    print(json.dumps(report, indent=2))
    if not report["equal"]:
        raise SystemExit("the service's accuracy differs from the artifact's evaluation")


if __name__ == "__main__":
    main()
