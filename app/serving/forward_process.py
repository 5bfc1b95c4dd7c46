"""A graph's forwards in a process of their own: the ONNX classifier's batches of single-text requests.

    collector (event loop) --[the graph's inputs, per forward]--> python -m app.serving.forward_process FD
                           <--[its first output, per forward]---        (ONNX Runtime, one thread)

Why a process: a forward in the service's model thread ends by taking the GIL back from the event loop, which holds
it while it parses and answers requests, for up to CPython's 5 ms switch interval (`python bench/forward_wait.py`
measures the wait under load, docs/results.md). A child process has an interpreter of its own, so its forwards wait
for no GIL, and the loop hears of each answer on the socket it already polls.

The child imports only ONNX Runtime, NumPy and model/onnx_session.py, not torch. A message is one of
multiprocessing's length-prefixed frames over a private socket pair: a JSON header (the arrays' dtypes and shapes,
or an error), then the arrays' raw bytes; no pickle.

Each child is forked from a zygote: a process started once per service that has imported this module and NumPy
and waits. A new interpreter and its imports cost about 0.15 s of CPU, which a live swap's new version paid beside
the requests it served, and the p99 during a swap rose with it (bench/swaps.py); a fork leaves the child ONNX
Runtime's import and its session to make. ONNX Runtime is not imported before the fork: its import starts a thread,
and a fork keeps only the thread that forks. Without a zygote (it failed to start, or died), a child is started
the slow way.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import math
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import traceback
from collections import deque
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

Forward = tuple[np.ndarray, ...]  # one forward's inputs, in the graph's input order
READY = "ready"
READY_BYTE = b"R"  # the zygote's, once it has its imports


class ForwardProcessExited(RuntimeError):
    """The forward process is gone (or never opened its graph): its waiting forwards fail with this."""


def send(conn: Connection, header: dict[str, Any], arrays: list[np.ndarray]) -> None:
    """One frame: the header's length (4 bytes), the header (JSON, with each array's dtype and shape), then each
    array's bytes."""
    arrays = [np.ascontiguousarray(a) for a in arrays]
    head = json.dumps({**header, "arrays": [[a.dtype.str, list(a.shape)] for a in arrays]}).encode()
    conn.send_bytes(b"".join([len(head).to_bytes(4, "little"), head, *(a.tobytes() for a in arrays)]))


def receive(conn: Connection) -> tuple[dict[str, Any], list[np.ndarray]]:
    frame = bytearray(conn.recv_bytes())  # writable, as torch.from_numpy wants the arrays viewing it
    size = int.from_bytes(frame[:4], "little")
    header = json.loads(frame[4 : 4 + size])
    arrays, offset = [], 4 + size
    for dtype, shape in header.pop("arrays"):
        count = math.prod(shape)
        arrays.append(np.frombuffer(frame, dtype, count, offset).reshape(shape))
        offset += count * np.dtype(dtype).itemsize
    return header, arrays


def send_forwards(conn: Connection, forwards: list[Forward]) -> None:
    """Forwards as one message: the arrays of all, with how many each forward has."""
    send(conn, {"sizes": [len(f) for f in forwards]}, [a for f in forwards for a in f])


def receive_forwards(conn: Connection) -> list[Forward]:
    header, arrays = receive(conn)
    forwards, start = [], 0
    for size in header["sizes"]:
        forwards.append(tuple(arrays[start : start + size]))
        start += size
    return forwards


def outputs(header: dict[str, Any], arrays: list[np.ndarray]) -> list[np.ndarray]:
    """A reply's outputs, one per forward, or the child's error raised."""
    if "error" in header:
        raise RuntimeError(f"the forward process failed: {header['error']}")
    return arrays


def _interpreter(fd: int, *argv: str) -> subprocess.Popen[bytes]:
    """`python -m app.serving.forward_process [argv] FD`, handed the socket `fd`: a forward process, or the zygote.
    It finds `app` and `model` where this process does, however it was started; it does no BLAS work, so NumPy's
    OpenBLAS starts no threads there (they take CPU from the service as they start)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "OPENBLAS_NUM_THREADS": "1",
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # fmt: skip
    return subprocess.Popen([sys.executable, "-m", __name__, *argv, str(fd)], pass_fds=(fd,), stdin=subprocess.DEVNULL,
                            env=env)  # fmt: skip


class Forked:
    """A child the zygote forked: not this process's own, so its end is heard on a pipe whose other end only the
    child holds. It writes its exit status there as it exits, or the pipe just closes when it is killed. What
    ForwardProcess uses of subprocess.Popen: pid, returncode, poll, wait, kill."""

    def __init__(self, pid: int, status: int) -> None:
        self.pid, self.status = pid, status
        self.returncode: int | None = None

    def _ended(self) -> int:
        data = os.read(self.status, 4)
        os.close(self.status)
        # nothing written: a signal ended it (which one, only the zygote saw; reported as a kill's)
        self.returncode = int.from_bytes(data, "little", signed=True) if len(data) == 4 else -signal.SIGKILL
        return self.returncode

    def poll(self) -> int | None:
        if self.returncode is None and select.select([self.status], [], [], 0)[0]:
            self._ended()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is not None:
            return self.returncode
        if not select.select([self.status], [], [], timeout)[0]:
            raise subprocess.TimeoutExpired(f"forward process {self.pid}", timeout or 0.0)
        return self._ended()

    def kill(self) -> None:
        if self.poll() is None:  # alive, so the pid is still its own
            os.kill(self.pid, signal.SIGKILL)


class Zygote:
    """`python -m app.serving.forward_process --zygote FD`: forks a forward process for each socket it is sent."""

    def __init__(self, start_timeout_s: float = 60.0) -> None:
        ours, theirs = socket.socketpair()
        with theirs:
            self.proc = _interpreter(theirs.fileno(), "--zygote")
        self.sock = ours
        self.lock = threading.Lock()  # engines warm up in threads of their own
        self.sock.settimeout(start_timeout_s)
        try:
            if self.sock.recv(1) != READY_BYTE:
                raise OSError("the zygote exited while starting")
        except BaseException:
            self.close()
            raise
        self.sock.settimeout(None)

    def fork(self, fd: int) -> Forked:
        """A forward process serving the socket `fd` (the zygote gets a duplicate of it)."""
        with self.lock:
            socket.send_fds(self.sock, [b"F"], [fd])
            data, fds, _, _ = socket.recv_fds(self.sock, 4, 1)
        if len(data) != 4 or len(fds) != 1:
            for f in fds:
                os.close(f)
            raise OSError("the zygote did not fork")
        return Forked(int.from_bytes(data, "little"), fds[0])

    def close(self) -> None:
        self.sock.close()  # it exits when its socket closes
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


_zygote: Zygote | None = None
_zygote_lock = threading.Lock()


def zygote() -> Zygote | None:
    """This process's zygote, started on first use and again if it has died; None when it cannot start (logged)."""
    global _zygote
    with _zygote_lock:
        if _zygote is not None and _zygote.proc.poll() is not None:
            _zygote.close()
            _zygote = None
        if _zygote is None:
            try:
                _zygote = Zygote()
            except OSError as exc:
                log.warning("no zygote for the forward processes, each starts an interpreter: %s", exc)
        return _zygote


@atexit.register
def _end_zygote() -> None:
    with _zygote_lock:
        if _zygote is not None:
            _zygote.close()


class ForwardProcess:
    """A child process running a graph (`graph`: its file, its weights beside it, or the serialized graph) on one
    ONNX Runtime thread. `run_now` is for a caller that may block (the warm-up, before `attach`); on the event
    loop, `attach` it, then `await run(forwards)`: the engine sends one message at a time, and answers come back
    in order. When the process dies, the waiting forwards fail with ForwardProcessExited and `alive` turns False."""

    def __init__(self, graph: bytes | Path, start_timeout_s: float = 120.0, fork: bool = True) -> None:
        ours, theirs = socket.socketpair()
        with theirs:
            self.proc: subprocess.Popen[bytes] | Forked = self._start(theirs.fileno(), fork)
        self.conn = Connection(ours.detach())
        self.pending: deque[asyncio.Future[list[np.ndarray]]] = deque()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.alive = True
        try:
            if isinstance(graph, Path):
                send(self.conn, {"file": str(graph)}, [])
            else:
                send(self.conn, {}, [np.frombuffer(graph, np.uint8)])
            if not self.conn.poll(start_timeout_s):
                raise ForwardProcessExited(f"the forward process opened no session within {start_timeout_s:g} s")
            header, _ = receive(self.conn)
        except (EOFError, OSError) as exc:
            self.close()
            raise ForwardProcessExited(f"the forward process exited while starting: {exc}") from exc
        except BaseException:
            self.close()
            raise
        if header.get("status") != READY:
            self.close()
            raise ForwardProcessExited(f"the forward process could not open the graph: {header.get('error', header)}")

    @staticmethod
    def _start(fd: int, fork: bool) -> subprocess.Popen[bytes] | Forked:
        """A child serving the socket `fd`: forked by the zygote (`fork`, and one is running), else a new
        interpreter."""
        parent = zygote() if fork else None
        if parent is not None:
            try:
                return parent.fork(fd)
            except OSError as exc:  # it died since: the next start tries a new one
                log.warning("the zygote did not fork a forward process: %s", exc)
        return _interpreter(fd)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def run_now(self, forwards: list[Forward]) -> list[np.ndarray]:
        """The graph's first output per forward, waiting here for them: only before `attach`."""
        if self.loop is not None:
            raise RuntimeError("run_now is for a process not yet attached to an event loop")
        send_forwards(self.conn, forwards)
        return outputs(*receive(self.conn))

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Hear the answers on `loop`, which must be the running loop of every later `run`."""
        self.loop = loop
        loop.add_reader(self.conn.fileno(), self._readable)

    async def run(self, forwards: list[Forward]) -> list[np.ndarray]:
        """The graph's first output per forward (the classifier's log-probabilities (B, C))."""
        if not self.alive or self.loop is None:
            raise ForwardProcessExited("the forward process is not running")
        future = self.loop.create_future()
        self.pending.append(future)
        # a forward's ids are a few KB; the child reads as soon as it is idle, which it is (one message at a time)
        try:
            send_forwards(self.conn, forwards)
        except OSError:  # it has gone, and the loop has not heard yet
            self._exited()
            raise ForwardProcessExited("the forward process is not running") from None
        results: list[np.ndarray] = await future
        return results

    def _readable(self) -> None:
        try:
            header, arrays = receive(self.conn)
        except (EOFError, OSError):
            self._exited()
            return
        future = self.pending.popleft()
        if future.done():  # its requests have gone (the collector was cancelled)
            return
        try:
            future.set_result(outputs(header, arrays))
        except RuntimeError as exc:
            future.set_exception(exc)

    def _exited(self) -> None:
        if not self.alive:
            return
        self.alive = False
        if self.loop is not None:
            self.loop.remove_reader(self.conn.fileno())
        code = self.proc.poll()
        log.error("the forward process exited (status %s); its forwards run in the model thread now", code)
        while self.pending:
            future = self.pending.popleft()
            if not future.done():
                future.set_exception(ForwardProcessExited(f"the forward process exited (status {code})"))

    def close(self, timeout_s: float = 5.0) -> None:
        """End the child (it exits when its socket closes) and wait for it, `timeout_s` at most before a kill."""
        self.alive = False
        if not self.conn.closed:
            if self.loop is not None:
                self.loop.remove_reader(self.conn.fileno())
            self.conn.close()
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def serve(fd: int) -> int:
    """The child: open the graph it is sent, answer READY (or why not), then run each message's forwards."""
    # a terminal's Ctrl-C, or a stop sent to the whole process group, is the service's to handle: it ends this
    # process by closing the socket (and when the service is killed outright, the socket closes too)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from model.onnx_session import open_session

    conn = Connection(fd)
    try:
        header, arrays = receive(conn)
    except EOFError:
        return 0
    try:
        session = open_session(Path(header["file"]) if "file" in header else arrays[0].tobytes(), threads=1)
    except Exception as exc:  # ONNX Runtime's own classes
        send(conn, {"error": f"{type(exc).__name__}: {exc}"}, [])
        return 1
    names = [i.name for i in session.get_inputs()]
    send(conn, {"status": READY}, [])
    while True:
        try:
            forwards = receive_forwards(conn)
        except EOFError:  # the service closed its end, or is gone
            return 0
        try:
            results = [session.run(None, dict(zip(names, f, strict=True)))[0] for f in forwards]
        except Exception as exc:
            send(conn, {"error": f"{type(exc).__name__}: {exc}"}, [])
            continue
        send(conn, {}, results)


def serve_zygote(fd: int) -> int:
    """The zygote: for each socket it is sent, fork a child that serves it, and answer with the child's pid and
    the read end of the pipe the child writes its exit status to; exit when the service closes the socket."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the service's to handle, as in `serve`
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the children are reaped as they exit
    control = socket.socket(fileno=fd)
    control.sendall(READY_BYTE)
    while True:
        try:
            data, fds, _, _ = socket.recv_fds(control, 1, 1)
        except OSError:
            return 0
        if not data:  # the service closed its end, or is gone
            return 0
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: it serves its socket, and says how that ended on its pipe
            control.close()
            os.close(read)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            code = 1
            try:
                code = serve(fds[0])
            except BaseException:
                traceback.print_exc()
            finally:
                os.write(write, code.to_bytes(4, "little", signed=True))
                os._exit(code)  # nothing of the zygote's to clean up
        os.close(write)
        for f in fds:
            os.close(f)
        socket.send_fds(control, [pid.to_bytes(4, "little")], [read])
        os.close(read)


if __name__ == "__main__":
    if sys.argv[1] == "--zygote":
        sys.exit(serve_zygote(int(sys.argv[2])))
    sys.exit(serve(int(sys.argv[1])))
