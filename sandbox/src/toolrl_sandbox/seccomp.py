"""A seccomp filter for untrusted code in the sandbox (standard library only; copied into the image).

Snippets, solutions and the executor share one uid (the container has no
capability to switch uids), and the kernel lets a process change some
properties of any process of its uid.  Docker's default seccomp profile stays
in force; this filter, installed in every untrusted child before its code
runs, adds what that profile allows but a snippet must not do to the executor
or the grader:

* ``prlimit64`` on another process (it could lower PID 1's limits and make
  every later run fail as an infrastructure error): only ``pid == 0`` (itself);
* ``sched_setscheduler``/``sched_setparam``/``sched_setattr``/
  ``sched_setaffinity`` on another process (starving the executor): only itself;
* ``setpriority`` and ``ioprio_set`` (``PRIO_USER`` reaches every process of
  the uid): refused;
* the x32 system-call ABI on x86-64: refused.

Refused calls fail with ``EPERM``.  Architectures: x86-64 and aarch64; on any
other the filter is not installed and :func:`install` returns False.
"""

from __future__ import annotations

import ctypes
import errno
import platform
import struct

_ARCH = {  # machine: (AUDIT_ARCH_*, {syscall: rule})
    "x86_64": (0xC000003E, {302: "self", 144: "self", 142: "self", 314: "self", 203: "self",
                            141: "deny", 251: "deny"}),
    "aarch64": (0xC00000B7, {261: "self", 119: "self", 118: "self", 274: "self", 122: "self",
                             140: "deny", 30: "deny"}),
}
_LD_ABS_W, _JEQ, _JSET, _RET = 0x20, 0x15, 0x45, 0x06
_ALLOW, _DENY = 0x7FFF0000, 0x00050000 | errno.EPERM
_X32 = 0x40000000


def program(machine: str | None = None) -> list[tuple[int, int, int, int]] | None:
    """The BPF program as (code, jt, jf, k) instructions, or None for an unsupported machine."""
    entry = _ARCH.get(machine or platform.machine())
    if entry is None:
        return None
    arch, rules = entry
    # Layout: 0 ld arch; 1 jeq arch; 2 ld nr; 3 jset x32; then one jeq per rule; allow; deny;
    # self-check (ld arg0 low word; jeq 0 -> allow/deny).
    n = len(rules)
    allow, deny = 4 + n, 5 + n
    check_self = 6 + n
    prog = [(_LD_ABS_W, 0, 0, 4), (_JEQ, 0, allow - 2, arch), (_LD_ABS_W, 0, 0, 0)]
    prog.append((_JSET, deny - 4, 0, _X32 if arch == 0xC000003E else 0))
    for i, (nr, rule) in enumerate(rules.items()):
        here = 4 + i
        target = check_self if rule == "self" else deny
        prog.append((_JEQ, target - here - 1, 0, nr))
    prog += [(_RET, 0, 0, _ALLOW), (_RET, 0, 0, _DENY),
             (_LD_ABS_W, 0, 0, 16), (_JEQ, 0, 1, 0), (_RET, 0, 0, _ALLOW), (_RET, 0, 0, _DENY)]  # arg0 == 0?
    return prog


def install(libc: ctypes.CDLL | None = None) -> bool:
    """Install the filter in this process (irreversible; inherited by its children)."""
    prog = program()
    if prog is None:
        return False
    libc = libc or ctypes.CDLL(None, use_errno=True)
    raw = b"".join(struct.pack("=HBBI", *ins) for ins in prog)
    buf = ctypes.create_string_buffer(raw, len(raw))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(len(prog), ctypes.cast(buf, ctypes.c_void_p))
    if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS failed")
    if libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) != 0:  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
        raise OSError(ctypes.get_errno(), "installing the seccomp filter failed")
    return True
