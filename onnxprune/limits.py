"""How much memory a request may take, checked before allocating.

A file of a few hundred bytes can declare tensors of many gigabytes (a container's shapes, an ``.npz`` header,
a model's static input shape). Before such a buffer is allocated its size is compared with
:func:`memory_budget` — the memory this process can still use: the smaller of the machine's available memory
and what its address-space limit (``ulimit -v``, ``RLIMIT_AS``) leaves — and refused with a one-line error.
"""

from __future__ import annotations

import os

from onnxprune.errors import ResourceLimitError

_UNKNOWN = 1 << 62


def _meminfo_available() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return _UNKNOWN


def _address_space_left() -> int:
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    except (ImportError, ValueError, OSError):
        return _UNKNOWN
    if soft == resource.RLIM_INFINITY:
        return _UNKNOWN
    used = 0
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    used = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return max(soft - used, 0)


def memory_budget() -> int:
    """Bytes this process can still allocate: min(available memory, address space left under RLIMIT_AS)."""
    return min(_meminfo_available(), _address_space_left())


def gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def ensure_memory(nbytes: int, what: str, error: type[Exception] = ResourceLimitError, copies: int = 2) -> None:
    """Raise ``error`` when ``nbytes`` (times ``copies``: the buffer and what is built from it) does not fit in
    :func:`memory_budget`."""
    budget = memory_budget()
    if nbytes * copies > budget:
        raise error(f"{what} needs {gib(nbytes)}, more than this process can allocate "
                    f"({gib(budget)} available)")


#: Below this much address space left, an error from native code is taken for a failed allocation.
NEARLY_EXHAUSTED = 64 << 20


def is_out_of_memory(error: BaseException) -> bool:
    """True for Python's ``MemoryError``, an OS error ``ENOMEM`` (what an import, ``mmap`` or a thread start
    raises under an address-space limit instead of ``MemoryError``), and an error from native code
    (``SystemError``, ``RuntimeError``) that says ``bad_alloc`` or comes while the address-space limit is nearly
    exhausted: a C++ ``std::bad_alloc`` inside onnx surfaces as "SystemError: error return without exception
    set"."""
    import errno

    if isinstance(error, MemoryError) or (isinstance(error, OSError) and error.errno == errno.ENOMEM):
        return True
    return isinstance(error, (SystemError, RuntimeError)) and (
        "bad_alloc" in str(error) or _address_space_left() < NEARLY_EXHAUSTED)
