"""The server's memory bounded: glibc's allocator told to keep few arenas and to hand freed memory back after each
request. Measured (benchmarks/README.md): the demo's resident memory grew from 1.2 to 2.4 GB over 300 slide and
image requests sent 20 at a time, with no growth of Python's own allocations (tracemalloc): Gradio runs each request
on a worker thread, each thread's arena kept the peak of the requests it had served. Elsewhere than glibc (musl,
macOS) these are no-ops."""
import ctypes
import ctypes.util
import functools
from typing import Any, Callable, Optional, TypeVar

__all__ = ['ARENAS', 'bound_allocator', 'release_freed_memory', 'trimmed']

M_ARENA_MAX = -8  # glibc's mallopt parameter
ARENAS = 2  # malloc arenas for all threads (glibc's default: 8 per core)

Handler = TypeVar('Handler', bound=Callable[..., Any])


@functools.lru_cache(maxsize=1)
def _glibc() -> Optional[ctypes.CDLL]:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
    except OSError:
        return None
    return libc if hasattr(libc, 'malloc_trim') and hasattr(libc, 'mallopt') else None


def bound_allocator(arenas: int = ARENAS) -> bool:
    """Cap the arenas that threads allocate from (before the server starts its threads); False where not glibc."""
    libc = _glibc()
    return libc is not None and bool(libc.mallopt(M_ARENA_MAX, arenas))


def release_freed_memory() -> None:
    """Hand the memory freed by a request back to the system (`malloc_trim`), from every arena."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def trimmed(handler: Handler) -> Handler:
    """`handler`, releasing freed memory when each call ends (answered or refused)."""
    @functools.wraps(handler)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return handler(*args, **kwargs)
        finally:
            release_freed_memory()
    return call  # type: ignore[return-value]
