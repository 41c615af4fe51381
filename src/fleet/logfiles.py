"""``--log-dir`` files that rotate by size (``--log-max-size``, ``--log-keep``), like Python's
``RotatingFileHandler`` and logrotate's ``size``/``rotate``: ``w1.log`` is renamed ``w1.log.1``
(older ones shift up to ``.<keep>``, the oldest is dropped) once the next line would make it
larger than the limit. With ``keep`` 0 the file is simply truncated.

A line is never split across two files; a single line longer than the limit goes into a file
of its own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Rotation:
    max_size: int  # bytes; 0 = never rotate
    keep: int  # rotated files kept next to the live one


def rotated_name(path: str, number: int) -> str:
    return f"{path}.{number}"


class RotatingFile:
    """An append-only log file that rotates by size. Not thread-safe (one event loop writes)."""

    def __init__(self, path: str, rotation: Rotation | None) -> None:
        self.path = path
        self.rotation = rotation
        self._file = open(path, "ab", buffering=0)  # noqa: SIM115 - closed by close()
        self._size = self._file.tell()

    def write(self, data: bytes) -> None:
        rotation = self.rotation
        if rotation is not None and rotation.max_size and self._size and \
                self._size + len(data) > rotation.max_size:
            self._rotate(rotation.keep)
        self._file.write(data)
        self._size += len(data)

    def _rotate(self, keep: int) -> None:
        self._file.close()
        if keep <= 0:
            self._file = open(self.path, "wb", buffering=0)  # noqa: SIM115
        else:
            for number in range(keep - 1, 0, -1):
                older = rotated_name(self.path, number)
                if os.path.exists(older):
                    os.replace(older, rotated_name(self.path, number + 1))
            os.replace(self.path, rotated_name(self.path, 1))
            self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115
        self._size = 0

    def close(self) -> None:
        self._file.close()


__all__ = ["Rotation", "RotatingFile", "rotated_name"]
