"""Peak memory of a stage, by the allocator that serves it.

- MLX stages: ``mx.get_peak_memory()`` after ``mx.reset_peak_memory()`` at the stage's start
  (MLX's allocator: arrays alive during the stage, the resident weights included);
- NumPy stages (the full-resolution restore): :class:`NumpyPeak`, the peak of the memory
  NumPy allocates during the stage (NumPy reports its buffers to ``tracemalloc``);
- everything else (PIL, the judge, PyTorch on the CPU): :class:`PeakRSS`, the growth of this
  process's resident set over the stage, peak minus start. On Linux the kernel keeps the peak
  (``VmHWM``), which ``/proc/self/clear_refs`` resets at the stage's start, so nothing is
  missed however short the stage; where that file cannot be written, a thread samples the
  resident size every 5 ms; elsewhere (macOS) the figure is None. :func:`cold_peak_rss` first
  empties MLX's and Pillow's buffer caches and returns glibc's free heap to the system, so
  that a stage's buffers are really allocated (and counted) rather than reused.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import tracemalloc
from collections.abc import Callable, Iterator

RSS_SAMPLE_S = 0.005
_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"
HAVE_RSS = sys.platform.startswith("linux") and os.path.exists(_STATUS)


def _status(key: str) -> int:
    """A ``/proc/self/status`` size field (``VmRSS:``, ``VmHWM:``) in bytes."""
    with open(_STATUS) as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    raise OSError(f"{key} not in {_STATUS}")


def _reset_hwm() -> bool:
    """Reset the kernel's peak resident size (VmHWM) to the current one; False if refused."""
    try:
        with open(_CLEAR_REFS, "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PeakRSS:
    """This process's resident-set peak while the ``with`` block runs (see the module
    docstring for how it is measured).

    ``start_bytes`` is the size when the interval began and ``peak`` the largest since
    (bytes); ``growth`` is ``peak - start_bytes``. :meth:`mark` starts a new interval (and
    returns the last one's growth), so one instance can measure consecutive stages. Where no
    resident size can be read every figure is None.
    """

    def __init__(self) -> None:
        self._hwm = HAVE_RSS and _reset_hwm()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.start_bytes = self.rss()
        self.peak = self.start_bytes
        sample = HAVE_RSS and not self._hwm
        self._thread = threading.Thread(target=self._run, daemon=True) if sample else None

    def rss(self) -> int | None:
        return _status("VmRSS:") if HAVE_RSS else None

    def _current_peak(self) -> int:
        if self._hwm:
            return max(self.peak, _status("VmHWM:"))
        return max(self.peak, self.rss())

    def _run(self) -> None:
        while not self._stop.wait(RSS_SAMPLE_S):
            now = self.rss()
            with self._lock:
                self.peak = max(self.peak, now)

    @property
    def growth(self) -> int | None:
        if not HAVE_RSS:
            return None
        with self._lock:
            self.peak = self._current_peak()
            return self.peak - self.start_bytes

    def mark(self) -> int | None:
        """The growth since the last mark (or the start); then start a new interval here."""
        if not HAVE_RSS:
            return None
        growth = self.growth
        if self._hwm:
            _reset_hwm()
        with self._lock:
            self.start_bytes = self.peak = self.rss()
        return growth

    def __enter__(self) -> PeakRSS:
        if self._thread is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if HAVE_RSS:
            with self._lock:
                self.peak = self._current_peak()


def cold_peak_rss(fn: Callable[[], object]) -> int | None:
    """The resident growth of one ``fn()`` with MLX's and Pillow's buffer caches emptied
    first (a cached buffer is already resident and would not show), restored after."""
    import mlx.core as mx
    from PIL import Image

    mx.clear_cache()
    blocks = Image.core.get_blocks_max()
    Image.core.set_blocks_max(0)  # frees Pillow's cached blocks and keeps none
    _malloc_trim()
    try:
        with PeakRSS() as rss:
            fn()
    finally:
        Image.core.set_blocks_max(blocks)
    return rss.growth


def _malloc_trim() -> None:
    """glibc: hand freed heap memory back to the system, so that a stage's allocations are
    new resident pages (glibc otherwise reuses freed, still-resident chunks, and raises its
    mmap threshold after large frees, so buffers of a few MB never show as growth)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import ctypes.util

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)


class NumpyPeak:
    """The peak bytes NumPy (and Python) allocate between :meth:`start` and :meth:`stop`,
    through ``tracemalloc``; works when tracing was already on (then only its peak is reset)."""

    def __init__(self) -> None:
        self.peak: int | None = None
        self._started = False

    def start(self) -> None:
        if tracemalloc.is_tracing():
            tracemalloc.reset_peak()
        else:
            tracemalloc.start()
            self._started = True
        self._base = tracemalloc.get_traced_memory()[0]

    def stop(self) -> int:
        self.peak = max(0, tracemalloc.get_traced_memory()[1] - self._base)
        if self._started:
            tracemalloc.stop()
            self._started = False
        return self.peak


@contextlib.contextmanager
def numpy_peak() -> Iterator[NumpyPeak]:
    """``with numpy_peak() as p: ...`` then ``p.peak``."""
    p = NumpyPeak()
    p.start()
    try:
        yield p
    finally:
        p.stop()
