"""Epochs chained forever, with a data position a checkpoint can record and a resumed run can seek.

Resuming seeks the data instead of replaying it: ``cycle`` returns a ``Cycle`` that knows its position
(epoch, batches into it), the checkpoint records it per rank, and a resumed run opens that epoch at that
offset — exactly, when the source can seek (``make_iter(epoch, skip=k)``: in-memory lists, a worker's
cached shard); a Ray Data stream cannot seek, and its source decides (the worker starts a fresh pass:
no read is wasted, the interrupted epoch's order is not reproduced — Ray Data never guaranteed it).
"""

from __future__ import annotations

import inspect
import itertools
import logging
from collections.abc import Callable, Iterable, Iterator

log = logging.getLogger(__name__)

__all__ = ["Cycle", "cycle"]


def _accepts_skip(make_iter: Callable) -> bool:
    try:
        return "skip" in inspect.signature(make_iter).parameters
    except (TypeError, ValueError):
        return False


class Cycle:
    """Epochs chained forever; ``position()`` is (epoch, batches consumed in it) and ``seek`` reopens there.

    ``make_iter(epoch)`` gives one epoch's batches; if it also takes ``skip``, ``make_iter(epoch, skip=k)``
    must start after the first k batches of that epoch without reading them. Otherwise a seek re-reads
    (and drops) at most one epoch's first batches — never the whole run's.
    """

    def __init__(self, make_iter: Callable[..., Iterable[dict]], start_epoch: int = 0):
        self.make_iter = make_iter
        self.epoch, self.offset = start_epoch, 0
        self._it: Iterator[dict] | None = None
        self._yielded = self._resumed = False

    def position(self) -> tuple[int, int]:
        return self.epoch, self.offset

    def seek(self, epoch: int, offset: int) -> None:
        self.epoch, self.offset, self._it = int(epoch), int(offset), None

    def __iter__(self) -> Cycle:
        return self

    def _open(self) -> Iterator[dict]:
        if self.offset == 0:
            return iter(self.make_iter(self.epoch))
        if _accepts_skip(self.make_iter):
            return iter(self.make_iter(self.epoch, skip=self.offset))
        log.info("re-reading %d batches of epoch %d to reach the checkpoint's data position (the source "
                 "cannot seek)", self.offset, self.epoch)
        return itertools.islice(iter(self.make_iter(self.epoch)), self.offset, None)

    def __next__(self) -> dict:
        while True:
            if self._it is None:
                self._it, self._yielded, self._resumed = self._open(), False, self.offset > 0
            try:
                batch = next(self._it)
            except StopIteration:
                if not self._yielded and not self._resumed:
                    raise ValueError(f"epoch {self.epoch} of the training data is empty; check "
                                     f"data.train_split and the dataset") from None
                self.epoch, self.offset, self._it = self.epoch + 1, 0, None
                continue
            self._yielded = True
            self.offset += 1
            return batch


def cycle(make_iter: Callable[..., Iterable[dict]], start_epoch: int = 0) -> Cycle:
    """Chain epochs forever: ``make_iter(epoch)`` gives one epoch's batches (e.g. shuffled by epoch)."""
    return Cycle(make_iter, start_epoch)
