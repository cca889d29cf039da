"""A warm Python for the CLI processes the tests start: each is still a process of its own (its argv,
environment, working folder, stdin/stdout/stderr, exit status and signals), but forked from a server that
has imported torch, torch._dynamo (which the first optimizer imports), Hydra and the project once, instead
of a fresh interpreter importing them again (about 4 of a tiny run's 6 s on a 2-core machine).

    python -E -S warm.py SOCKET MODULE ARG...   what a test starts instead of `python -m MODULE ARG...`
    python warm.py --serve SOCKET               the server (conftest starts one per pytest worker, without
                                                PYTHONPATH; not -E, which the job's spawned workers would inherit)

The client is a small Python (no site, no torch) that hands its stdin/stdout/stderr and environment to
the server and waits. The server forks a monitor per request, and the monitor forks the process that runs
MODULE as `python -m` does (sys.argv, sys.path[0] the working folder, PYTHONPATH, tests/hooks' injected
faults installed from the request's environment, as sitecustomize does at a fresh start). The monitor
relays the client's signals to it and its exit status back; if the client dies (kill -9), the process is
killed too. What a fresh interpreter alone shows (installation, start-up, import-time behaviour) is
tested with `sys.executable` directly (tests/test_install.py), and RESNET_CIFAR_TEST_FRESH_PYTHON=1 runs
every CLI process of the suite in a fresh interpreter.
"""
import json
import os
import runpy
import select
import signal
import socket
import sys

import injected  # this folder is the server's sys.path[0]: installed from each request's environment

HOOKS = os.path.dirname(os.path.realpath(__file__))

RELAYED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
WARM_MODULES = ("torch", "torch._dynamo", "torchvision", "hydra", "omegaconf", "resnet_cifar.train",
                "resnet_cifar.evaluate", "resnet_cifar.training_run", "resnet_cifar.loop", "resnet_cifar.job",
                "resnet_cifar.torchrun", "resnet_cifar.data.cifar", "resnet_cifar.data.fetch",
                "multirun_analysis.report")


def _read_line(conn: socket.socket, buffer: bytearray) -> bytes | None:
    """The next newline-terminated message from `conn` (None once it closes), what follows kept in `buffer`."""
    while b"\n" not in buffer:
        data = conn.recv(65536)
        if not data:
            return None
        buffer += data
    line, _, rest = bytes(buffer).partition(b"\n")
    buffer[:] = rest
    return line


def _reseed() -> None:
    """What differs between two fresh interpreters and not between two forks: fresh random states."""
    import multiprocessing
    import random
    import tempfile

    import numpy as np

    random.seed()
    np.random.seed()
    multiprocessing.current_process().authkey = os.urandom(32)
    tempfile.tempdir = None  # found again from this process's TMPDIR


def _run(request: dict, fds: list) -> None:
    """In the forked process: become `python -m MODULE ARGS` in the request's folder and environment."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    for signum in RELAYED + (signal.SIGCHLD,):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # as Python sets it at start-up
    code = 0
    try:
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        extra = [p for p in request["env"].get("PYTHONPATH", "").split(os.pathsep) if p]
        sys.path[:] = [os.getcwd(), *extra, *[p for p in BASE_PATH if p not in extra]]
        _reseed()
        if HOOKS in {os.path.realpath(p) for p in extra}:  # as sitecustomize.py would, found on PYTHONPATH
            injected.install()
        sys.modules.pop(request["module"], None)  # warmed as a dependency; runs afresh as __main__, as `-m` does
        sys.argv = [request["module"], *request["args"]]
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
    except SystemExit as stop:
        if stop.code is None:
            code = 0
        elif isinstance(stop.code, int):
            code = stop.code
        else:
            print(stop.code, file=sys.stderr)
            code = 1
    except KeyboardInterrupt:  # as the interpreter ends on an uncaught one: by SIGINT
        import traceback

        traceback.print_exc()
        code = -signal.SIGINT
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    try:  # what the interpreter does at exit: join threads, atexit (a pool's workers stop), flush
        import atexit
        import threading

        threading._shutdown()
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        if code < 0:
            signal.signal(-code, signal.SIG_DFL)
            os.kill(os.getpid(), -code)
        os._exit(code & 0xFF)


def _monitor(conn: socket.socket) -> None:
    """In a fork of the server, one per request: start the process, relay signals, report its status.
    Whatever happens here, the process does not outlive its monitor."""
    for signum in (signal.SIGINT, signal.SIGTERM):  # a Ctrl-C to pytest's process group is the process's
        signal.signal(signum, signal.SIG_IGN)
    message, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
    buffer = bytearray(message)
    request_line = _read_line(conn, buffer)
    if request_line is None:  # the client died before it finished asking
        return
    request = json.loads(request_line)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    pid = os.fork()
    if pid == 0:
        conn.close()
        _run(request, fds)
    reaped = False
    try:
        for fd in fds:
            os.close(fd)
        conn.sendall(f"{pid}\n".encode())
        process = os.pidfd_open(pid)
        while True:
            ready, _, _ = select.select([conn, process], [], [])
            if process in ready:
                _, status = os.waitpid(pid, 0)
                reaped = True
                conn.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
                return
            line = _read_line(conn, buffer)
            if line is None:  # the client died: so does its process
                return
            os.kill(pid, int(line))
            while b"\n" in buffer:  # every signal that came in the same read
                os.kill(pid, int(_read_line(conn, buffer)))
    finally:
        if not reaped:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def serve(path: str) -> None:
    import ctypes
    import importlib

    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: the server ends with its pytest worker
    BASE_PATH[:] = sys.path[1:]  # started without PYTHONPATH: the interpreter's own path, without this folder

    for name in WARM_MODULES:
        importlib.import_module(name)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # monitors are reaped as they end
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(64)
    print("ready", flush=True)
    while True:
        conn, _ = server.accept()
        if os.fork() == 0:
            server.close()
            try:
                _monitor(conn)
            finally:
                os._exit(0)
        conn.close()


def client(path: str, module: str, args: list) -> None:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(path)
    request = {"module": module, "args": args, "cwd": os.getcwd(), "env": dict(os.environ)}
    socket.send_fds(conn, [json.dumps(request).encode() + b"\n"], [0, 1, 2])
    buffer = bytearray()
    replies = iter(lambda: _read_line(conn, buffer), None)
    next(replies)  # the process has started: from now on a signal to this client goes to it
    def relay(signum, frame):
        try:
            conn.sendall(f"{signum}\n".encode())
        except OSError:  # the process has ended and its status is on the way
            pass

    for signum in RELAYED:
        signal.signal(signum, relay)
    code = int(next(replies))
    if code < 0:  # killed by a signal: so is this client, for the test that waits on it
        if -code not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    sys.exit(code)


BASE_PATH: list = []

if __name__ == "__main__":
    if sys.argv[1] == "--serve":
        serve(sys.argv[2])
    else:
        client(sys.argv[1], sys.argv[2], sys.argv[3:])
