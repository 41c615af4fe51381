"""The ACME state directory: owned by the user, mode 0700, files 0600, written whole.

Checked before anything is read from it or written to it: a directory (or a file in it) that
another user owns, or that group or others may read, is refused with the fix to apply, since
it holds private keys. Several fleets may share one directory: ``Lock`` (``flock``) serialises
the account creation and each order, and a fleet that got the lock after another fleet's order
finds the new certificate and uses it without asking the CA again.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import tempfile
import threading
import time
from typing import Iterator

from fleet.acme.policy import Lifetime

DIR_MODE = 0o700
FILE_MODE = 0o600
LOCK_POLL = 0.2


class StateError(RuntimeError):
    """The state directory cannot be used safely; the message says why and how to fix it."""


def check_private(path: str, *, directory: bool) -> None:
    """Refuse ``path`` unless this user owns it and nobody else may read or write it."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    kind = "directory" if directory else "file"
    if stat.S_ISLNK(info.st_mode):
        raise StateError(f"ACME state {kind} {path} is a symbolic link: refused (point --acme-state at the real one)")
    if directory != stat.S_ISDIR(info.st_mode):
        raise StateError(f"ACME state {path} is not a {kind}")
    if info.st_uid != os.geteuid():
        raise StateError(f"ACME state {kind} {path} belongs to uid {info.st_uid}, not to this user "
                         f"(uid {os.geteuid()}): refused, it holds private keys")
    if info.st_mode & 0o077:
        wanted = "0700" if directory else "0600"
        raise StateError(f"ACME state {kind} {path} has mode {stat.S_IMODE(info.st_mode):04o}: group or others "
                         f"may read it, and it holds private keys; refused (chmod {wanted} {path})")


def ensure_dir(path: str) -> None:
    """Make ``path`` and each missing parent with mode 0700 exactly (``makedirs`` would give the
    parents the umask's mode); check it either way."""
    check_private(path, directory=True)
    missing = []
    where = path
    while where and not os.path.isdir(where):
        missing.append(where)
        parent = os.path.dirname(where)
        if parent == where:
            break
        where = parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, DIR_MODE)
        except FileExistsError:
            pass
        os.chmod(directory, DIR_MODE)  # the umask may have taken bits away, never added: set exactly
    check_private(path, directory=True)


def check_tree(root: str) -> None:
    """The whole state directory: every directory 0700, every file 0600, all ours."""
    check_private(root, directory=True)
    for where, dirs, files in os.walk(root):
        for name in dirs:
            check_private(os.path.join(where, name), directory=True)
        for name in files:
            check_private(os.path.join(where, name), directory=False)


def write_private(path: str, data: bytes) -> None:
    """Write ``path`` whole (a temporary file, fsync, one rename): a reader sees the old file or
    the new one, never a part."""
    where = os.path.dirname(path)
    ensure_dir(where)
    fd, temporary = tempfile.mkstemp(dir=where, prefix=".tmp-")  # mkstemp: mode 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def read_private(path: str, limit: int = 1 << 20) -> bytes | None:
    """The file's bytes (None when missing), after checking its owner and mode."""
    check_private(path, directory=False)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as handle:
        return handle.read(limit)


def remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


@contextlib.contextmanager
def locked(path: str, stop: threading.Event, timeout: float) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (made 0600 if missing) for the block. Another
    fleet holding it is waited for, up to ``timeout`` seconds or until ``stop`` is set."""
    ensure_dir(os.path.dirname(path))
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, FILE_MODE)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                    raise
            if stop.is_set() or time.monotonic() > deadline:
                raise TimeoutError(f"another fleet holds {path} (ordering for the same names)")
            stop.wait(LOCK_POLL)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def certificate_lifetime(pem: bytes) -> Lifetime | None:
    """The first certificate's validity in a PEM file (None if it has none or is unreadable)."""
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        return None
    return Lifetime(cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp())


def certificate_names(pem: bytes) -> frozenset[str]:
    """The DNS names of the first certificate in a PEM file."""
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(pem)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return frozenset()
    return frozenset(name.lower() for name in san.get_values_for_type(x509.DNSName))


__all__ = ["DIR_MODE", "FILE_MODE", "StateError", "certificate_lifetime", "certificate_names", "check_private",
           "check_tree", "ensure_dir", "locked", "read_private", "remove", "write_private"]
