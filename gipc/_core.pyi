"""Type stub for gipc._core, the C extension (csrc/module.c and friends)."""

from collections.abc import Callable, Sequence
from typing import Protocol, final

from typing_extensions import Buffer

class _HasFileno(Protocol):
    def fileno(self) -> int: ...

_FdLike = int | _HasFileno

MAX_MESSAGE_SIZE: int
PORTABLE: int
HAVE_PIDFD: int
HAVE_DLADDR: int

def fork(
    signals_to_reset: Sequence[int],
    out: list[int],
    close_in_child: Sequence[int] | None = None,
    keep_fds: Sequence[int] | None = None,
    report: tuple[int, ...] | None = None,
    /,
) -> None: ...
def reap(pid: int, pidfd: int = -1, spin_us: int = 0, /) -> int | None: ...
def pidfd_open(pid: int, /) -> int: ...
def sigchld_handler_file() -> str | None: ...
def warm_type_cache(lookups: tuple[object, ...], /) -> None: ...
def set_gc_tracked(obj: object, tracked: object, /) -> None: ...
def track_on_setattr(cls: type, /) -> None: ...
@final
class Reader:
    """Frame parser for the read end of a non-blocking pipe."""

    max_size: int
    @property
    def buffered(self) -> int: ...
    @property
    def spin_paused(self) -> int: ...
    @property
    def fd(self) -> int: ...
    def __init__(
        self, fd: _FdLike, max_size: int, buffer_size: int = 65536
    ) -> None: ...
    def read_frame(self, spin_us: int = 0, /) -> bytes | None: ...
    def read_frame_into(
        self, buffer: Buffer, offset: int = 0, spin_us: int = 0, /
    ) -> int | bytes | None: ...
    def frame_ready(self) -> bool: ...
    def detach(self) -> int: ...
    def after_fork(self) -> None: ...

@final
class Writer:
    """Frame writer for a non-blocking descriptor."""

    @property
    def fd(self) -> int: ...
    def __init__(self, fd: _FdLike) -> None: ...
    def send(self, data: Buffer, /) -> bool: ...
    def resume(self) -> bool: ...
    def abandon(self) -> tuple[int, int] | None: ...
    def detach(self) -> int: ...
    def after_fork(self) -> None: ...

@final
class Turn:
    """A time slice: due() once slice_us microseconds have passed."""

    @property
    def coarse(self) -> bool: ...
    def __init__(self, slice_us: int = 1000) -> None: ...
    def due(self) -> bool: ...
    def restart(self) -> None: ...

@final
class Gate:
    """What the fast calls of one endpoint check before they run in C."""

    ok_pid: int
    turn: Turn
    def __init__(self, turn: Turn, ownership: dict[str, object]) -> None: ...

@final
class FastSend:
    """put()/send()/send_bytes() as one C call when it need not wait."""

    lock: object
    @property
    def __wrapped__(self) -> Callable[..., None]: ...
    def __new__(
        cls,
        writer: Writer,
        gate: Gate,
        lock: object,
        full: Callable[..., None],
        slow: Callable[..., None],
        encoder: Callable[..., object] | None = None,
        protocol: object = ...,
        fallback: Callable[[object], object] | None = None,
    ) -> FastSend: ...
    def __call__(self, *args: object, **kwargs: object) -> None: ...

@final
class FastRecv:
    """get()/recv()/recv_bytes() as one C call when a frame is at hand."""

    lock: object
    @property
    def __wrapped__(self) -> Callable[..., object]: ...
    def __new__(
        cls,
        reader: Reader,
        gate: Gate,
        lock: object,
        full: Callable[..., object],
        decoder: Callable[[bytes], object] | None = None,
        wait: Callable[[], object] | None = None,
        spin_us: int = 0,
    ) -> FastRecv: ...
    def __call__(self, *args: object, **kwargs: object) -> object: ...
