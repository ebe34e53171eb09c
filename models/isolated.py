"""Run risky native work in a child process: a crash or a hang costs one call, not the worker.

Consumes a picklable top-level function and its arguments.
Produces the function's return value (`call`), or the items it yields, each as soon as the child
has it (`stream`), or raises `Crashed` (the child died: a segfault or abort in a decoder, or the
OOM killer), `TimedOut` (no answer within `timeout_s`; the child is killed), or `RemoteError` (the
function raised; its type name and message travel back).

One long-lived child serves every call, so the price is a pickle of the arguments and the result
through a pipe, not a process start; a new child starts only after a crash or a timeout. Children
are fresh interpreters (`python -c`, the parent's sys.path, see `child_path`) -- never forked
from a parent that runs torch, ONNX Runtime and CTranslate2 thread pools, where a fork can inherit
a held lock and hang, and never re-running the parent's __main__ as multiprocessing's "spawn" does.

No Beam in here.
"""

from __future__ import annotations

import inspect
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any, Callable, Iterator

from models.memory import release_freed_memory

logger = logging.getLogger(__name__)


class Crashed(Exception):
    """The child process died while working (its exit code is in the message)."""


class TimedOut(Exception):
    """The call did not finish within its time limit; the child was killed."""


class RemoteError(Exception):
    """The function raised in the child. `type_name` is the original exception's class name."""

    def __init__(self, type_name: str, message: str, details: Any = None):
        super().__init__(message)
        self.type_name = type_name
        self.details = details  # attributes worth keeping (e.g. a DecodeError's error_type)


def _child_main(fd: int, preload: tuple[str, ...] = ()) -> None:
    """Entry point of the child interpreter: import `preload`, then serve requests on the socket."""
    import importlib

    # The parent owns Ctrl-C; a child must not die of the terminal's SIGINT mid-call.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for module in preload:
        importlib.import_module(module)
    _serve(Connection(fd))


def child_path(path: list) -> list[str]:
    """The parent's import path for a child, minus directories inside a package.

    A library may put its own package directory on sys.path for the length of an import (OpenCV's
    loader does: `.../site-packages/cv2`, which holds a `typing` package). A child started by
    another thread at that moment would find `cv2/typing` before the standard library's (its
    PYTHONPATH comes first) and die on its first import. No legitimate top-level path entry is a
    package or lies inside one."""
    out = []
    for entry in path:
        if not isinstance(entry, str) or not entry or entry in out:
            continue
        inside = os.path.isfile(os.path.join(entry, "__init__.py")) or os.path.isfile(
            os.path.join(os.path.dirname(os.path.abspath(entry)), "__init__.py"))
        if not inside:
            out.append(entry)
    return out


def _serve(conn) -> None:
    """The child's loop: receive (fn, args, kwargs, stream), send ("ok", result) or ("error", ...);
    for a stream, first ("item", x) for each x the function yields (one item if it returns)."""
    conn.send(("ready", os.getpid()))
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        fn, args, kwargs, stream = request
        try:
            result = fn(*args, **kwargs)
            if stream:
                for item in result if inspect.isgenerator(result) else (result,):
                    conn.send(("item", item))
                    del item
                result = None
        except BaseException as e:  # noqa: BLE001 -- everything goes back to the parent
            details = {k: v for k, v in vars(e).items() if isinstance(v, (str, int, float, bool))}
            conn.send(("error", (type(e).__name__, str(e), details, traceback.format_exc(limit=5))))
            continue
        conn.send(("ok", result))
        # The result (a video's frames) and its pickle are garbage now: give their pages back so an
        # idle child does not keep the largest video's footprint.
        del request, fn, args, kwargs, result
        release_freed_memory()


class Isolated:
    """Calls functions in one long-lived child process. Thread-safe (calls are serialised)."""

    def __init__(self, timeout_s: float | None = None, preload: tuple[str, ...] = (), start_timeout_s: float = 120.0):
        """`preload`: modules the child imports before it is ready, so that a call's time limit is
        spent on the call, not on importing what its function needs."""
        if timeout_s is not None and timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.timeout_s = timeout_s
        self._preload = tuple(preload)
        self._start_timeout_s = start_timeout_s
        self._process = None
        self._conn = None
        self._lock = threading.Lock()
        self.restarts = 0

    def start(self) -> "Isolated":
        """Starts the child now (a call would otherwise start it, inside its own time limit)."""
        with self._lock:
            self._ensure_started()
        return self

    def _ensure_started(self) -> None:
        if self._process is not None and self._process.poll() is None:
            return
        self._stop()
        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(child_path(sys.path))
        code = f"from models.isolated import _child_main; _child_main({theirs.fileno()}, {self._preload!r})"
        process = subprocess.Popen([sys.executable, "-c", code], pass_fds=(theirs.fileno(),), env=env,
                                   stdin=subprocess.DEVNULL)
        theirs.close()
        parent = Connection(ours.detach())
        if not parent.poll(self._start_timeout_s):
            process.kill()
            raise Crashed(f"worker child did not start within {self._start_timeout_s:.0f} s")
        try:
            parent.recv()
        except EOFError as e:
            raise Crashed(f"worker child died while starting (exit code {process.poll()})") from e
        self._process, self._conn = process, parent

    def call(self, fn: Callable, *args, **kwargs):
        """`fn(*args, **kwargs)` in the child; at most `timeout_s` of waiting for it."""
        with self._lock:
            self._send(fn, args, kwargs, stream=False)
            status, payload = self._receive(self.timeout_s, time.monotonic())
        if status == "error":
            raise _remote_error(payload)
        return payload

    def stream(self, fn: Callable, *args, **kwargs) -> Iterator:
        """Yields what `fn(*args, **kwargs)` yields in the child (a generator function; a plain
        function's result is one item), each item as soon as the child has sent it, so the caller
        works on it while the child goes on. `timeout_s` bounds the time spent waiting for the child
        over the whole stream; time the caller spends between items does not count.

        Calls are serialised: the child is this stream's until it ends. A stream the caller leaves
        before its end (an exception, or `close()`) restarts the child, which may still be working."""
        with self._lock:
            self._send(fn, args, kwargs, stream=True)
            waited, finished = 0.0, False
            try:
                while True:
                    started = time.monotonic()
                    left = None if self.timeout_s is None else max(0.0, self.timeout_s - waited)
                    status, payload = self._receive(left, started - waited)
                    waited += time.monotonic() - started
                    if status != "item":
                        finished = True
                        break
                    yield payload
                    del payload
            finally:
                if not finished and self._process is not None:
                    self._restart()
        if status == "error":
            raise _remote_error(payload)

    def _send(self, fn: Callable, args: tuple, kwargs: dict, stream: bool) -> None:
        self._ensure_started()
        try:
            self._conn.send((fn, args, kwargs, stream))
        except (BrokenPipeError, OSError) as e:
            self._restart()
            raise Crashed(f"worker child is gone: {e}") from e

    def _receive(self, timeout_s: float | None, started: float) -> tuple[str, Any]:
        """The child's next message; `started`: when the wait for this call began (for the message)."""
        try:
            ready = self._conn.poll(timeout_s)
        except (EOFError, OSError):
            ready = True  # the recv below reports it
        if not ready:
            self._restart()
            raise TimedOut(f"no result after {time.monotonic() - started:.1f} s (limit {self.timeout_s:g} s)")
        try:
            return self._conn.recv()
        except (EOFError, OSError) as e:
            code = self._exit_code()
            self._restart()
            raise Crashed(f"worker child died (exit code {code}{_signal_name(code)})") from e

    def _exit_code(self) -> int | None:
        if self._process is None:
            return None
        try:
            return self._process.wait(5)
        except subprocess.TimeoutExpired:
            return None

    def _restart(self) -> None:
        self.restarts += 1
        self._stop()

    def _stop(self) -> None:
        process, conn = self._process, self._conn
        self._process = self._conn = None
        if conn is not None:
            try:
                conn.send(None)
            except (BrokenPipeError, OSError):
                pass
            conn.close()
        if process is not None:
            try:
                process.wait(3.0)  # it exits when told to; killed only if it does not
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)

    def close(self) -> None:
        with self._lock:
            self._stop()

    def __enter__(self) -> "Isolated":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def _remote_error(payload) -> RemoteError:
    type_name, message, details, _trace = payload
    return RemoteError(type_name, message, details)


def _signal_name(code: int | None) -> str:
    if code is None or code >= 0:
        return ""
    try:
        return f", {signal.Signals(-code).name}"
    except ValueError:
        return ""
