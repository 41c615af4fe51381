"""One worker process: spawn it so it cannot outlive fleet, relay its output, signal its group.

Each worker is the leader of its own session and process group (``start_new_session``), so
- a Ctrl-C in fleet's terminal reaches only the master, which then stops workers in order;
- ``killpg`` reaches the worker's own children too (a shell's server, an app's helper);
- the watchdog can kill the group after the master died.

``PR_SET_PDEATHSIG`` (Linux, via ctypes ``prctl``) makes the kernel SIGKILL the worker the
moment the master dies, whatever killed it.

Output (stdout and stderr merged, so their order is kept) is relayed line by line to fleet's
stdout as ``w1:5101 | line`` and, with ``--log-dir``, appended to ``DIR/w1.log`` (rotated by
``fleet.logfiles``).
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import sys
from typing import Callable, TextIO

from fleet.logfiles import Rotation, RotatingFile
from fleet.supervisor.command import worker_environment
from fleet.tasks import cancel_and_wait

PR_SET_PDEATHSIG = 1
MAX_LINE = 64 * 1024  # longer partial lines are relayed in pieces

_prctl: Callable[..., int] | None
try:
    # Loaded here, not in the child: after fork only async-signal-safe work is allowed.
    _prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
except (OSError, AttributeError):
    _prctl = None


def _child_setup(master_pid: int) -> Callable[[], None]:
    """Runs in the forked child before exec: die with the master (no allocation, no locks)."""

    def setup() -> None:
        if _prctl is not None:
            _prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        # The master may have died between fork and prctl: then the signal never comes.
        if os.getppid() != master_pid:
            os.kill(os.getpid(), signal.SIGKILL)

    return setup


async def relay_lines(stream: asyncio.StreamReader, line: Callable[[bytes], None],
                      max_line: int = MAX_LINE) -> None:
    """Split ``stream`` into lines (without the newline) until its end, calling ``line`` for
    each: the one splitter for worker and hook output.

    Chunks, not readline(): a process printing a 1 MB line must not raise LimitOverrunError.
    Output without newlines (a progress bar, binary junk) longer than ``max_line`` is passed on
    in pieces rather than buffered without bound."""
    pending = b""
    while True:
        chunk = await stream.read(65536)
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for raw in lines:
            line(raw)
        if len(pending) > max_line:
            line(pending)
            pending = b""
    if pending:
        line(pending)


class Output:
    """Where worker lines and fleet's own messages go (fleet's stdout by default).

    One writer on the event loop thread, so lines never interleave mid-line. A closed stdout
    (fleet piped into ``head``) must not take the supervisor down, so write errors are dropped.
    """

    log_rotation: Rotation | None = None  # how --log-dir files rotate (set by fleet.logs)

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stdout

    def write_line(self, text: str) -> None:
        try:
            self._stream.write(text + "\n")
            self._stream.flush()
        except (BrokenPipeError, ValueError, OSError):
            pass  # nobody reads fleet's output any more; keep supervising

    def fleet(self, message: str) -> None:
        self.write_line(f"fleet | {message}")


class LineRelay:
    """Relays one worker's output; can hold lines back (while fleet starts) and release them."""

    def __init__(self, label: str, output: Output, log_path: str | None, *, hold: bool = False) -> None:
        self.label = label
        self._output = output
        self._log = RotatingFile(log_path, output.log_rotation) if log_path else None
        self._held: list[str] | None = [] if hold else None

    def line(self, raw: bytes) -> None:
        if self._log is not None:
            try:
                self._log.write(raw + b"\n")
            except OSError as exc:
                self._output.fleet(f"{self.label}: cannot write log file: {exc.strerror}; log off")
                self._log.close()
                self._log = None
        text = f"{self.label} | {raw.decode('utf-8', 'replace').rstrip(chr(13))}"
        if self._held is not None:
            self._held.append(text)
        else:
            self._output.write_line(text)

    def release(self, *, discard: bool = False) -> None:
        """Stop holding: print what was held (or drop it) and pass lines through from now on."""
        held, self._held = self._held, None
        if held and not discard:
            for text in held:
                self._output.write_line(text)

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


class WorkerProcess:
    """A spawned worker: its pid (= process group id), exit, output relay."""

    def __init__(self, proc: asyncio.subprocess.Process | None, pid: int, relay: LineRelay, output_fd: int) -> None:
        self._proc = proc
        self.pid: int = pid
        self.pgid: int = pid  # session leader: its pid is its group id
        self.relay = relay
        # The read end of its output pipe, opened here (not by asyncio) so that its number is
        # known: ``fleet upgrade`` hands it to the next master.
        self.output_fd = output_fd
        self._pump = asyncio.ensure_future(self._relay_output())

    @classmethod
    async def spawn(cls, argv: tuple[str, ...], extra_env: dict[str, str], relay: LineRelay,
                    pass_fds: tuple[int, ...] = ()) -> "WorkerProcess":
        env = worker_environment(os.environ, extra_env)
        read_end, write_end = os.pipe()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=write_end,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=_child_setup(os.getpid()),
                pass_fds=pass_fds,  # the heartbeat file (fleet.worker.heartbeat)
            )
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        return cls(proc, proc.pid, relay, read_end)

    async def _relay_output(self) -> None:
        loop = asyncio.get_running_loop()
        stream = asyncio.StreamReader()
        pipe = open(self.output_fd, "rb", buffering=0)  # closed by its transport at end of file
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stream), pipe)
        await relay_lines(stream, self.relay.line)

    @property
    def returncode(self) -> int | None:
        assert self._proc is not None
        return self._proc.returncode

    async def wait(self) -> int:
        assert self._proc is not None
        return await self._proc.wait()

    def signal_group(self, sig: int) -> bool:
        """Signal the worker's whole process group; False if nothing of it is left."""
        try:
            os.killpg(self.pgid, sig)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            # A child that changed its uid: signal the leader at least.
            try:
                os.kill(self.pid, sig)
                return True
            except ProcessLookupError:
                return False

    async def finish_output(self, timeout: float = 2.0) -> None:
        """Wait for the last lines after the group is gone (the pipe closes with its last holder)."""
        try:
            # Still open after the timeout: a descendant escaped the group and holds the pipe.
            await asyncio.wait({self._pump}, timeout=timeout)
        finally:
            try:
                await cancel_and_wait([self._pump])
            finally:
                self.relay.close()
