"""One careful way to touch the file system: every file the project writes, appends, locks, or reads from a
run folder goes through here (docs/guide/reliability.md), so that the same rules hold everywhere.

- **Replaced atomically**: a file is written to a new temporary file beside it (created exclusively, so that
  nothing of that name is followed), flushed to disk and renamed over the old one. A failure (a full disk, a
  read-only folder) leaves the old file whole and says so in one line. Renaming over a symbolic link replaces
  the link, never its target.
- **Written in place only if it is a regular file of its folder**: what is appended (train.log,
  metrics.csv) is opened without following a symbolic link, and refused if it is anything but a regular file.
- **Read without blocking**: a FIFO, a device or a folder where a file should be is refused at once, not
  waited on; what is read has a size limit.
- **Locks that die with their holder and are never inherited**: a lock's descriptor is closed in every child a
  process forks (DataLoader workers), so a killed run's orphaned workers never keep its folder held.
  Locks for the whole machine (GPU claims, downloads) are abstract Unix sockets, not files in the shared
  temporary folder: there is nothing there for another user to replace by a symbolic link or a FIFO or to
  leave unreadable, every TMPDIR sees the same lock, the kernel releases it with its process, and a waiting
  job can ask who holds it (user and pid).
- **Processes read from Linux's /proc**: a process's children, and which folders a process has open, without
  taking a lock to look (what a stopping sweep of worker processes waits on: sweep_stop.py).
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import pwd
import re
import socket
import stat
import struct
import tempfile
import time
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Callable, Iterable, Iterator

from .errors import FileProblem

log = logging.getLogger(__name__)

READ_LIMIT = 64 * 2**20  # bytes: far above any summary, config or metrics file this project writes

# -- descriptors a forked child must not keep ------------------------------------------------------------
_held_in_this_process: set[int] = set()


def _close_held_locks_in_child() -> None:
    for fd in _held_in_this_process:
        try:
            os.close(fd)
        except OSError:
            pass
    _held_in_this_process.clear()


os.register_at_fork(after_in_child=_close_held_locks_in_child)


# -- opening ------------------------------------------------------------------------------------------------
def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path: Path, flags: int, *, follow: bool = False) -> int:
    """A descriptor of the regular file `path`, opened with `flags` (os.O_*), never blocking in the open.

    Without `follow`, a symbolic link at `path` is refused (it would send the write elsewhere).
    """
    extra = os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags | extra, 0o666)
    except OSError as e:
        if e.errno == errno.ELOOP and not follow:
            raise FileProblem(f"{path} is a symbolic link; this file must be a regular file of its folder (a "
                              "link could send what is written elsewhere): remove the link and run again") from None
        if e.errno == errno.ENXIO:  # a FIFO without a reader, opened for writing
            raise FileProblem(f"{path} is a FIFO, not a regular file: remove it and run again") from None
        if e.errno == errno.EISDIR:
            raise FileProblem(f"{path} is a folder, not a regular file: move it aside and run again") from None
        raise
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise FileProblem(f"{path} is {_kind(mode)}, not a regular file: remove it and run again")
    os.set_blocking(fd, True)
    return fd


def read_bytes(path: Path, limit: int = READ_LIMIT, *, follow: bool = True) -> bytes:
    """The whole regular file `path` (FileNotFoundError if there is none); refused if it is anything else or
    larger than `limit`."""
    fd = open_regular(path, os.O_RDONLY, follow=follow)
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > limit:
            raise FileProblem(f"{path} is {size} bytes, more than the {limit} such a file can be: not a file "
                              "this project wrote")
        return f.read(limit + 1)


def read_text(path: Path, limit: int = READ_LIMIT, *, follow: bool = True) -> str:
    try:
        return read_bytes(path, limit, follow=follow).decode()
    except UnicodeDecodeError as e:
        raise FileProblem(f"{path} is not text ({e.reason} at byte {e.start})") from None


@contextmanager
def opened_for_reading(path: Path, *, follow: bool = True) -> Iterator[IO[bytes]]:
    """A regular file opened for reading (torch.load, pickles): never a FIFO."""
    with os.fdopen(open_regular(path, os.O_RDONLY, follow=follow), "rb") as f:
        yield f


# -- folders ------------------------------------------------------------------------------------------------
NAME_MAX = 255  # bytes a file or folder name may have on Linux file systems


def unwritable_reason(folder: Path) -> str | None:
    """Why `folder` cannot be created and written (None if it can), looking at its nearest existing part: asked
    before a command writes anything (an output folder, a report's --out, a tracker's local store)."""
    existing = folder.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    long = next((part for part in folder.absolute().parts if len(os.fsencode(part)) > NAME_MAX), None)
    if long is not None:
        return f"the folder name {long[:40]}... is {len(os.fsencode(long))} bytes, more than the {NAME_MAX} a name can be"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable (permissions or a read-only file system)"
    try:  # what the permissions do not tell: /proc, a full or read-only file system for root
        os.rmdir(tempfile.mkdtemp(prefix=".resnet_cifar-check-", dir=existing))
    except OSError as e:
        return f"nothing can be made in {existing} ({e.strerror})"
    return None


# -- names ----------------------------------------------------------------------------------------------------
SAFE_NAME_BYTES = 120  # a file name made from recorded text, before its suffix: far below the 255-byte limit
_UNSAFE_IN_NAMES = re.compile(r"[^A-Za-z0-9=,._+-]+")


def safe_name(text: str, limit: int = SAFE_NAME_BYTES, taken: set[str] | None = None) -> str:
    """A file name made from text a run recorded (a config key, a run's path): only letters, digits and
    `=,._+-` (no separator, so it cannot leave its folder), no leading dot (no `..`, nothing hidden), at most
    `limit` bytes (a long one keeps its start and ends with a hash of the whole), and not one of `taken` (a
    name already given out, which it is added to): two different texts never share a file."""
    text = str(text)
    name = _UNSAFE_IN_NAMES.sub("_", text).lstrip(".") or "_"
    digest = hashlib.sha1(text.encode(errors="surrogatepass")).hexdigest()[:10]
    if len(name) > limit:
        name = f"{name[:limit - len(digest) - 1]}_{digest}"
    if taken is not None:
        base, number = (name if len(name) <= limit - len(digest) - 1 else name[:limit - len(digest) - 1]), 1
        if name in taken:
            name = f"{base}_{digest}"
        while name in taken:  # another text gave that very name (chosen to): a counter makes it unique
            number += 1
            name = f"{base}_{digest}_{number}"
        taken.add(name)
    return name


# -- writing ------------------------------------------------------------------------------------------------
def _reason(error: BaseException) -> str:
    return getattr(error, "strerror", None) or str(error)


def _temporary_name(path: Path, single_writer: bool) -> Path:
    """NAME.tmp beside `path` for a file only one process writes (a run folder's: its holder's), so that a write
    a crash cut short is cleared by the next; NAME.PID.RANDOM.tmp where processes may write the same file at
    once (a report's), so that none takes another's half-written file. Kept under the 255-byte name limit."""
    stem = os.fsencode(path.name)[:200].decode(errors="ignore")
    return path.with_name(f"{stem}.tmp" if single_writer else f".{stem}.{os.getpid()}.{os.urandom(4).hex()}.tmp")


def replace_atomically(path: Path, write: Callable[[IO[bytes]], None], *, single_writer: bool = False) -> None:
    """Call write(file) on a new file beside `path`, then rename it over `path`: readers see the old or the new
    file, never half of one. A failed write (full disk, unwritable folder) leaves `path` as it was
    (FileProblem, one line). The new file keeps the old one's permissions."""
    path = Path(path)
    tmp = _temporary_name(path, single_writer)
    made = False
    try:
        try:
            mode = stat.S_IMODE(os.lstat(path).st_mode) if os.path.isfile(path) and not path.is_symlink() else None
            if single_writer:
                tmp.unlink(missing_ok=True)  # a leftover, or a link of that name: removed, never followed
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
            made = True
            if mode is not None:
                os.fchmod(fd, mode)
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            made = False
        except (OSError, RuntimeError) as e:  # torch.save reports a failed write as a RuntimeError
            raise FileProblem(f"could not write {path} ({_reason(e)}); it is as it was before: free space or fix "
                              "the folder, then run again") from e
    finally:
        if made:
            with suppress(OSError):  # a read-only file system refuses this too: the error above says it all
                tmp.unlink()
    with suppress(OSError):  # durable once the folder is synced; a file system that cannot sync a folder is fine
        _fsync_dir(path.parent)


def write_text(path: Path, text: str, *, single_writer: bool = False) -> None:
    replace_atomically(path, lambda f: f.write(text.encode()), single_writer=single_writer)


def write_frame(frame, path: Path, **to_csv_args) -> None:
    """A pandas frame as CSV, replaced atomically."""
    replace_atomically(path, lambda f: frame.to_csv(f, **to_csv_args))


def write_figure(figure, path: Path, **savefig_args) -> None:
    """A matplotlib figure (or seaborn grid), replaced atomically, in the format its suffix names."""
    replace_atomically(path, lambda f: figure.savefig(f, format=Path(path).suffix.lstrip("."), **savefig_args))


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def append_text(path: Path, text: str) -> None:
    """Append to a regular file of its folder (made if missing), flushed to disk at once."""
    try:
        _append(path, text)
    except OSError as e:
        raise FileProblem(f"could not append to {path} ({_reason(e)}); what it held is intact: free space or fix "
                          "the folder, then run again") from e


def _append(path: Path, text: str) -> None:
    with os.fdopen(open_regular(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT), "a", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


class AppendingLogHandler(logging.StreamHandler):
    """A logging handler that appends to a regular file of its folder (logging.FileHandler follows links)."""

    def __init__(self, path: Path) -> None:
        try:
            fd = open_regular(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        except OSError as e:
            raise FileProblem(f"could not open {path} ({_reason(e)}): fix the folder, then run again") from e
        super().__init__(os.fdopen(fd, "a", encoding="utf-8"))

    def close(self) -> None:
        try:
            self.flush()
            self.stream.close()
        finally:
            super().close()


# -- locks --------------------------------------------------------------------------------------------------
@contextmanager
def folder_held(folder: Path, busy: Callable[[], Exception]) -> Iterator[str | None]:
    """Hold `folder` (flock on the folder itself, which a user cannot delete from under it) while the block
    runs; yields None, or why the file system could not lock it. Raises busy() if another process holds it.
    The descriptor is closed in forked children, so only this process holds the lock."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    _held_in_this_process.add(fd)
    try:
        cannot_lock = None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise busy() from None
        except OSError as e:  # NFS without its lock service, Lustre without flock: the caller says so
            cannot_lock = _reason(e)
        yield cannot_lock
    finally:
        if fd in _held_in_this_process:  # not in a forked child, which closed it at once
            _held_in_this_process.discard(fd)
            os.close(fd)  # releases the lock


def sees_processes() -> bool:
    """Whether this system shows processes and their open files as child_pids and folders_open_in read them."""
    return os.path.isdir(f"/proc/{os.getpid()}/fd")


def child_pids() -> list[int]:
    """The processes this one started and that still run (Linux's /proc; elsewhere none are known)."""
    me, children = os.getpid(), []
    with suppress(OSError):
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            with suppress(OSError, ValueError, IndexError), open(f"/proc/{entry}/stat", "rb") as f:
                # pid (command) state ppid ...: the command may hold spaces and parentheses, so read after its last ")"
                if int(f.read(4096).rsplit(b")", 1)[1].split()[1]) == me:
                    children.append(int(entry))
    return children


def folders_open_in(pids: Iterable[int], under: Path) -> dict[int, list[Path]]:
    """The folders at or below `under` that each of `pids` has open now, read from Linux's /proc (elsewhere:
    none). A job keeps its run folder open while it holds it (folder_held), also where the file system cannot
    lock; looking takes no lock, so it never makes a job starting at that moment find its folder in use."""
    root, held = Path(os.path.realpath(under)), {}
    for pid in pids:
        with suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with suppress(OSError):
                    target = Path(os.readlink(f"/proc/{pid}/fd/{fd}"))
                    if (target == root or root in target.parents) and stat.S_ISDIR(os.stat(f"/proc/{pid}/fd/{fd}").st_mode):
                        held.setdefault(pid, []).append(target)
    return held


MACHINE_LOCK_PREFIX = b"\0resnet_cifar/"  # abstract socket names begin with a NUL byte


class MachineLock:
    """A lock for the whole machine (all users, every TMPDIR), named by `name`: an abstract Unix socket.

    Nothing is created in the file system. The kernel releases it when the holding process ends, however it
    ends; forked children do not keep it. `holder()` says which user and process hold it. Abstract sockets
    belong to a network namespace: processes in separate containers (each with its own network) do not see
    each other's locks, as they do not see each other's GPU claims of other kinds either.
    """

    def __init__(self, name: str) -> None:
        self.address = MACHINE_LOCK_PREFIX + name.encode()[:90]
        self.socket: socket.socket | None = None

    def try_acquire(self) -> bool:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(self.address)
        except OSError as e:
            sock.close()
            if e.errno == errno.EADDRINUSE:
                return False
            raise
        sock.listen(socket.SOMAXCONN)  # so that holder() can ask; nothing is ever accepted
        self.socket = sock
        _held_in_this_process.add(sock.fileno())
        return True

    def release(self) -> None:
        if self.socket is not None:
            if self.socket.fileno() in _held_in_this_process:
                _held_in_this_process.discard(self.socket.fileno())
                self.socket.close()
            else:  # a forked child: its copy was closed at the fork; the number may be another file's now
                self.socket.detach()
            self.socket = None

    def held_elsewhere(self) -> bool:
        """Whether a process holds the lock now (it listens: a connection is accepted by the kernel)."""
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.setblocking(False)
        try:
            probe.connect(self.address)
            return True
        except BlockingIOError:  # its queue of connections is full: nothing accepts them, but it listens
            return True
        except OSError:  # ECONNREFUSED: no one holds the name
            return False
        finally:
            probe.close()

    @property
    def name(self) -> str:
        """The lock's name as `ss -xlp` shows it (@resnet_cifar/gpu-0)."""
        return "@" + self.address[1:].decode(errors="replace")

    def holder(self) -> str:
        """'user NAME, pid N' of the process holding the lock, as the kernel tells it (SO_PEERCRED) to a
        connection; a process that holds the name without listening (not one of this project's runs) accepts
        none: then what is known is said, and how to find it."""
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.setblocking(False)
        try:
            probe.connect(self.address)
            pid, uid, _ = struct.unpack("3i", probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                                struct.calcsize("3i")))
        except OSError:
            return (f"another process, owner unknown (it holds {self.name} without accepting connections: "
                    f"find it with `ss -xlp | grep '{self.name}'`)")
        finally:
            probe.close()
        try:
            user = pwd.getpwuid(uid).pw_name
        except KeyError:
            user = f"uid {uid}"
        return f"user {user}, pid {pid}"

    @contextmanager
    def held(self, waiting: Callable[[str], None], poll_s: float = 0.5) -> Iterator[None]:
        """Hold the lock while the block runs, waiting for it if another process holds it; `waiting(holder)`
        is called once when this process starts to wait."""
        told = False
        while not self.try_acquire():
            if not told:
                waiting(self.holder())
                told = True
            time.sleep(poll_s)
        try:
            yield
        finally:
            self.release()
