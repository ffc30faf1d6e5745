"""In-container executor of toolrl-sandbox.  Standard library only.

The container's main process (PID 1 of its PID namespace), non-root.  It
speaks length-prefixed JSON frames (4-byte big-endian length, UTF-8 JSON) on
its stdin/stdout, which the host reaches through the Docker attach stream: a
``hello`` first, then one response per request.  ``run`` forks a child from
this pre-imported process (new session, OOM score, rlimits, fresh pipes,
every other descriptor closed, clean environment and ``__main__``, seccomp
filter) and runs the snippet; ``grade`` forks the grader and the solution
(``grade_run.py``).  Afterwards every other process is SIGKILLed
(``kill(-1)`` from PID 1 reaches setsid/double-forked ones too) and reaped,
and the writable directories are wiped.

The snippet cannot tamper with this process although it shares its uid: a
PID-namespace init gets no signal from inside the namespace unless it
installed a handler (none is; SIGINT is reset to SIG_DFL); it is
non-dumpable (no ptrace, /proc/1/mem, /proc/1/fd); the seccomp filter
(``seccomp.py``) refuses prlimit/renice on other processes; the code is on
the read-only root file system.
"""

from __future__ import annotations

import base64
import errno
import fcntl
import json
import os
import resource
import shutil
import signal
import stat
import struct
import sys
import time

PROTOCOL = 1
WORKDIR = os.environ.get("TOOLRL_SANDBOX_WORKDIR", "/sandbox")
# Writable places, wiped after every run, with the mode to restore (None:
# not ours to chmod; the engine made them).
SCRATCH_DIRS = ((WORKDIR, 0o700), ("/tmp", 0o700), ("/dev/shm", None), ("/dev/mqueue", None))
MAX_FRAME = 256 * 1024 * 1024
CHILD_SETUP_FAILED = 125
# Untrusted code runs at the lowest CPU priority, so that this process (nice 0) still gets the CPU to enforce the
# deadline when a snippet fills every core (a fork bomb's 64 spinning processes on 2 cores once kept it from
# noticing a 1.5 s deadline for 1.9 s). Raising one's niceness needs no privilege; lowering it again needs
# CAP_SYS_NICE, which the container lacks, and the seccomp filter refuses setpriority anyway.
SNIPPET_NICE = 19
# Modules imported once here so that forked snippets find them ready.
WARM_MODULES = (
    "traceback", "linecache", "types", "io", "math", "re", "collections",
    "itertools", "functools", "typing", "string", "heapq", "bisect",
    "hashlib", "unittest", "ctypes", "random",
)
CHILD_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": WORKDIR,
    "TMPDIR": "/tmp",
    "LANG": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    "MALLOC_ARENA_MAX": "2",
}

_libc = None
capture = _drain = None  # the pipe readers of capture.py beside this file (main() imports it; grade_run uses both)
_seccomp = None


def _log(msg: str) -> None:
    try:
        os.write(2, ("toolrl-sandbox executor: %s\n" % msg).encode("utf-8", "replace"))
    except OSError:
        pass


def _prctl_dumpable(flag: int) -> bool:
    """PR_SET_DUMPABLE; 0 closes ptrace and /proc/<pid>/{mem,fd,environ}."""
    if _libc is None:
        return False
    return _libc.prctl(4, flag, 0, 0, 0) == 0


# --------------------------------------------------------------------- framing
def _read_exact(fd: int, n: int) -> bytes | None:
    chunks = []
    while n:
        try:
            data = os.read(fd, min(n, 1 << 20))
        except InterruptedError:
            continue
        if not data:
            return None
        chunks.append(data)
        n -= len(data)
    return b"".join(chunks)


def read_frame(fd: int) -> dict | None:
    head = _read_exact(fd, 4)
    if head is None:
        return None
    (size,) = struct.unpack(">I", head)
    if size > MAX_FRAME:
        raise ValueError("frame of %d bytes is too large" % size)
    body = _read_exact(fd, size)
    if body is None:
        return None
    return json.loads(body)


def write_frame(fd: int, msg: dict) -> None:
    body = json.dumps(msg, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")
    view = memoryview(struct.pack(">I", len(body)) + body)
    while view:
        try:
            n = os.write(fd, view)
        except InterruptedError:
            continue
        view = view[n:]


def _decode_blob(value) -> bytes:
    if value is None:
        return b""
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, dict) and "b64" in value:
        return base64.b64decode(value["b64"])
    raise ValueError("expected a string or {'b64': ...}")


# ------------------------------------------------------------------- cleanup
def reap(statuses: dict) -> None:
    """Reap every exited child without blocking; record their statuses."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        except InterruptedError:
            continue
        if pid == 0:
            return
        statuses[pid] = status


def kill_all(statuses: dict, budget_s: float = 2.0) -> bool:
    """SIGKILL every process of the container except this one; reap them.

    ``kill(-1, ...)`` from the namespace's init reaches every other process in
    the namespace, so detached grandchildren (setsid, double fork) die too.
    Returns False if something survived ``budget_s`` seconds.
    """
    end = time.monotonic() + budget_s
    while True:
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            pass
        except PermissionError:
            pass
        reap(statuses)
        try:
            os.kill(-1, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
        if time.monotonic() > end:
            return False
        time.sleep(0.0005)


def _fix_and_retry(func, path, _exc):
    parent = os.path.dirname(path)
    try:
        os.chmod(parent, 0o700)
        if os.path.isdir(path) and not os.path.islink(path):
            os.chmod(path, 0o700)
            shutil.rmtree(path)
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass


def wipe(path: str, mode: int | None = None) -> bool:
    """Delete everything below ``path``; True when it ends up empty.

    ``mode`` restores the directory's permissions first (a snippet may have
    chmod-ed its own tmpfs to 000 to hide files from the cleanup).  A
    directory we neither own nor can write to (root's /dev/shm on some
    set-ups) cannot hold the snippet's files either, and counts as clean.
    """
    if mode is not None:
        try:
            os.chmod(path, mode)
        except OSError:
            pass
    try:
        names = os.listdir(path)
    except FileNotFoundError:
        return True
    except PermissionError:
        return not os.access(path, os.W_OK) and os.stat(path).st_uid != os.getuid()
    if not names:
        return True
    for name in names:
        full = os.path.join(path, name)
        try:
            st = os.lstat(full)
            if stat.S_ISDIR(st.st_mode):
                os.chmod(full, 0o700)
                shutil.rmtree(full, onerror=_fix_and_retry)
            else:
                os.unlink(full)
        except FileNotFoundError:
            pass
        except (OSError, RecursionError) as exc:
            _log("wipe %s: %r" % (full, exc))
    try:
        return not os.listdir(path)
    except OSError:
        return False


def _wipe_sysv_ipc() -> None:
    """Remove SysV shared memory, message queues and semaphores left behind."""
    if _libc is None:
        return
    for kind, func in (("shm", "shmctl"), ("msg", "msgctl"), ("sem", "semctl")):
        try:
            with open("/proc/sysvipc/" + kind) as fh:
                rows = fh.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 1:
                ident = int(fields[1])
                if kind == "sem":
                    _libc.semctl(ident, 0, 0)  # IPC_RMID
                else:
                    _libc[func](ident, 0, None)  # IPC_RMID


def cleanup(statuses: dict) -> bool:
    """Return the container to its pristine state; False means 'tainted'."""
    clean = kill_all(statuses)
    for path, mode in SCRATCH_DIRS:
        clean = wipe(path, mode) and clean
    _wipe_sysv_ipc()
    return clean


def _oom_kills() -> int:
    """Number of OOM kills in this container's memory cgroup (-1: unknown)."""
    for path, key in (("/sys/fs/cgroup/memory/memory.oom_control", "oom_kill"),
                      ("/sys/fs/cgroup/memory.events", "oom_kill")):
        try:
            with open(path) as fh:
                for line in fh:
                    name, _, value = line.partition(" ")
                    if name == key:
                        return int(value)
        except OSError:
            continue
    return -1


# ---------------------------------------------------------------- the child
def _enter_child(req: dict, fds: tuple, warm_path: list, *, dumpable: bool = True, oom: str = "1000",
                 cwd: str = WORKDIR, path: tuple = (WORKDIR,), name: str = "<snippet>", source=None):
    """Turn a freshly forked child into a clean, limited interpreter; return its ``__main__``.

    ``fds[i]`` becomes descriptor ``i``; every other descriptor is closed."""
    try:
        os.setsid()
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 512) for fd in fds]  # no clash while renumbering
        for target, fd in enumerate(high):
            os.dup2(fd, target)
        os.closerange(len(fds), 1 << 16)
        _prctl_dumpable(1)  # a non-dumpable process's /proc/self files belong to root
        with open("/proc/self/oom_score_adj", "w") as fh:
            fh.write(oom)
        if not dumpable and not _prctl_dumpable(0):
            raise OSError("cannot make the process non-dumpable")
        timeout = float(req.get("timeout", 5.0))
        cpu = int(timeout) + 1
        mem = int(req.get("memory_mb", 256)) * 1024 * 1024
        fsize = int(req.get("fsize_mb", 32)) * 1024 * 1024
        nofile = int(req.get("nofile", 256))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if dumpable:  # untrusted code (snippet, solution); the grader keeps the executor's priority
            os.setpriority(os.PRIO_PROCESS, 0, SNIPPET_NICE)
        os.umask(0o022)
        os.chdir(cwd)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.environ.clear()
        os.environ.update(CHILD_ENV)
        os.environ.update({str(k): str(v) for k, v in (req.get("env") or {}).items()})
        import io
        import linecache
        import types

        def stream(fd, mode, **kw):
            raw = io.FileIO(fd, mode, closefd=False)
            buf = io.BufferedReader(raw) if mode == "r" else io.BufferedWriter(raw)
            return io.TextIOWrapper(buf, encoding="utf-8", **kw)

        sys.stdin = sys.__stdin__ = stream(0, "r", errors="strict")
        sys.stdout = sys.__stdout__ = stream(1, "w", errors="backslashreplace")
        sys.stderr = sys.__stderr__ = stream(2, "w", errors="backslashreplace", line_buffering=True)
        sys.argv = ["-c"]
        sys.path[:] = list(path) + warm_path  # keep the zygote's finder caches of the read-only stdlib
        sys.dont_write_bytecode = True
        if "random" in sys.modules:
            sys.modules["random"].seed()  # do not share the zygote's state
        source = req.get("code", "") if source is None else source
        linecache.cache[name] = (len(source), None, source.splitlines(True), name)
        main = types.ModuleType("__main__")
        main.__dict__["__builtins__"] = __builtins__
        sys.modules["__main__"] = main
        if dumpable and _seccomp is not None:  # untrusted code: no prlimit/renice of other processes
            _seccomp.install(_libc)
        return main
    except BaseException as exc:  # noqa: BLE001 - report anything and leave
        try:
            os.write(2, ("toolrl-sandbox: child setup failed: %r\n" % (exc,)).encode())
        finally:
            os._exit(CHILD_SETUP_FAILED)


def _exec_main(source: str, filename: str, main) -> int:
    """Run ``source`` as ``__main__``; return the exit code python would give (traceback on stderr)."""
    try:
        exec(compile(source, filename, "exec"), main.__dict__)
    except SystemExit as exc:
        return _exit_code(exc.code)
    except BaseException:  # noqa: BLE001 - the snippet's error, printed like python does
        try:
            import traceback

            etype, value, tb = sys.exc_info()
            traceback.print_exception(etype, value, tb.tb_next if tb is not None else None)
        except BaseException:  # noqa: BLE001
            os.write(2, b"MemoryError\n" if sys.exc_info()[0] is MemoryError else b"error\n")
        return 1
    return 0


def _finish(code: int) -> None:
    """Python's own exit steps (threads, atexit, flush), then leave without unwinding the zygote."""
    try:
        if "threading" in sys.modules:
            sys.modules["threading"]._shutdown()
        import atexit

        atexit._run_exitfuncs()
    except BaseException:  # noqa: BLE001
        pass
    for s in (sys.stdout, sys.stderr):
        try:
            s.flush()
        except BaseException:  # noqa: BLE001
            pass
    os._exit(code)


def _child(req: dict, fds: tuple, warm_path: list) -> None:
    """Runs in the forked child of a ``run``; never returns."""
    main = _enter_child(req, fds, warm_path)
    _finish(_exec_main(req.get("code", ""), "<snippet>", main))


def _exit_code(value) -> int:
    if value is None:
        return 0
    if isinstance(value, int):
        return value & 0xFF
    try:
        sys.stderr.write("%s\n" % (value,))
    except BaseException:  # noqa: BLE001
        pass
    return 1


# -------------------------------------------------------------------- a run
def _write_files(files: dict) -> None:
    root = os.path.realpath(WORKDIR)
    for name, content in (files or {}).items():
        parts = name.replace("\\", "/").split("/")
        if name.startswith("/") or ".." in parts or not name:
            raise ValueError("file name must be relative and stay inside the work directory: %r" % name)
        path = os.path.join(root, *parts)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(_decode_blob(content))


def run(req: dict, warm_path: list, statuses: dict, use_pidfd: bool) -> dict:
    t0 = time.monotonic()
    timeout = float(req.get("timeout", 5.0))
    cap = int(req.get("max_output", 1 << 20))
    try:
        _write_files(req.get("files"))
        stdin_data = _decode_blob(req.get("stdin"))
    except (ValueError, OSError) as exc:
        return {"status": "error", "stdout": "", "stderr": "toolrl-sandbox: bad request: %s\n" % exc,
                "exit_code": -1, "wall_ms": 0.0, "bad_request": True, "tainted": not cleanup(statuses)}
    stdin_fd = os.memfd_create("stdin", os.MFD_CLOEXEC)
    os.write(stdin_fd, stdin_data)
    os.lseek(stdin_fd, 0, os.SEEK_SET)
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    ooms_before = _oom_kills()
    pid = os.fork()
    if pid == 0:
        _child(req, (stdin_fd, out_w, err_w), warm_path)
    for fd in (stdin_fd, out_w, err_w):
        os.close(fd)
    caps = {out_r: cap, err_r: cap}
    pidfd = os.pidfd_open(pid) if use_pidfd else -1
    bufs, reason, child_status = capture(pid, out_r, err_r, cap, t0 + timeout, statuses, pidfd)
    wall_ms = (time.monotonic() - t0) * 1000.0
    clean = kill_all(statuses)
    if child_status is None:
        child_status = statuses.pop(pid, None)
        if child_status is None:
            try:
                _, child_status = os.waitpid(pid, 0)
            except ChildProcessError:
                child_status = 0
    statuses.pop(pid, None)
    _drain(bufs, caps)
    for fd in list(bufs) + ([pidfd] if pidfd >= 0 else []):
        os.close(fd)
    if os.WIFEXITED(child_status):
        exit_code = os.WEXITSTATUS(child_status)
    else:
        exit_code = -os.WTERMSIG(child_status)
    stderr = bufs[err_r].decode("utf-8", "replace")
    if reason is None:
        if exit_code == 0:
            reason = "ok"
        elif exit_code == -signal.SIGXCPU:  # RLIMIT_CPU
            reason = "timeout"
        elif _is_memory_error(exit_code, stderr, ooms_before):
            reason = "memory"
        else:
            reason = "error"
    if exit_code == CHILD_SETUP_FAILED and "child setup failed" in stderr:
        reason = "infra_error"
    clean = cleanup(statuses) and clean
    return {
        "status": reason,
        "stdout": bufs[out_r].decode("utf-8", "replace"),
        "stderr": stderr,
        "exit_code": exit_code,
        "wall_ms": round(wall_ms, 3),
        "tainted": not clean,
    }


def _is_memory_error(exit_code: int, stderr: str, ooms_before: int) -> bool:
    if exit_code == -signal.SIGKILL and ooms_before >= 0 and _oom_kills() > ooms_before:
        return True
    tail = stderr.rstrip().rsplit("\n", 1)[-1]
    return exit_code != 0 and tail.startswith("MemoryError")


# --------------------------------------------------------------------- main
def main() -> int:
    global _libc
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # PID 1 with no handler: immune
    import importlib

    for name in WARM_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    try:
        import ctypes

        _libc = ctypes.CDLL(None, use_errno=True)
    except (ImportError, OSError):
        _libc = None
    dumpable_off = _prctl_dumpable(0)
    import gc

    gc.freeze()  # forked children's collections skip the zygote's objects: fewer copy-on-write faults
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, here)
    import grade_run  # the code grader, beside this file on the read-only root
    import capture as capture_module
    import seccomp

    global _seccomp, capture, _drain
    _seccomp = seccomp
    capture, _drain = capture_module.capture, capture_module._drain

    del sys.path[0]
    this = sys.modules[__name__]
    warm_path = [p for p in sys.path if p and os.path.abspath(p) != here]
    use_pidfd = hasattr(os, "pidfd_open")
    if use_pidfd:
        try:
            os.close(os.pidfd_open(os.getpid()))
        except OSError:
            use_pidfd = False
    statuses: dict = {}
    clean = cleanup(statuses)
    write_frame(1, {
        "op": "hello", "protocol": PROTOCOL, "pid": os.getpid(), "uid": os.getuid(),
        "python": sys.version.split()[0], "pidfd": use_pidfd, "nondumpable": dumpable_off,
        "clean": clean,
    })
    while True:
        try:
            req = read_frame(0)
        except (ValueError, OSError) as exc:
            _log("bad frame: %r" % (exc,))
            return 2
        if req is None:
            return 0
        op = req.get("op")
        if op == "run":
            try:
                resp = run(req, warm_path, statuses, use_pidfd)
            except Exception as exc:  # noqa: BLE001 - report it as ours, not the snippet's
                _log("run failed: %r" % (exc,))
                resp = {"status": "infra_error", "stdout": "", "stderr": "executor: %r" % (exc,),
                        "exit_code": -1, "wall_ms": 0.0, "tainted": True}
        elif op == "grade":
            try:
                resp = grade_run.run_grade(req, this, warm_path, statuses)
            except Exception as exc:  # noqa: BLE001 - ours, not the solution's
                _log("grade failed: %r" % (exc,))
                resp = {"status": "infra_error", "stdout": "", "stderr": "executor: %r" % (exc,),
                        "exit_code": -1, "wall_ms": 0.0, "tainted": True}
        elif op == "ping":
            resp = {"op": "pong"}
        else:
            resp = {"status": "infra_error", "stderr": "unknown op %r" % (op,), "tainted": False}
        resp["id"] = req.get("id")
        try:
            write_frame(1, resp)
        except OSError as exc:
            if exc.errno == errno.EPIPE:
                return 0
            raise


if __name__ == "__main__":
    sys.exit(main())
