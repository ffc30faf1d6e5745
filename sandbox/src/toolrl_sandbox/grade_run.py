"""The processes of a ``grade`` request (in-container, standard library only; beside ``executor.py``).

:func:`run_grade` forks the trusted grader and the untrusted solution (see
``grading.py`` for what runs inside each) and supervises them: time limit,
output caps, clean-up.  Kept apart from the executor so each file stays small.
"""

import json
import os
import sys

from grading import _describe, _send, grade, hello, serve, write_all


def run_grade(req, ex, warm_path, statuses):
    """Grade ``req["code"]`` against the tests frame that follows ``req`` on the executor's stdin.

    ``ex`` is the executor module (its child set-up, kill and clean-up steps).
    Returns the response (the solution's stdout/stderr, the grader's status);
    the outcomes went to the host from the grader itself."""
    import select
    import signal
    import time

    t0 = time.monotonic()
    timeout = float(req.get("timeout", 10.0))
    cap = int(req.get("max_output", 1 << 20))
    ooms_before = ex._oom_kills()
    ack_r, ack_w = os.pipe2(os.O_CLOEXEC)
    call_r, call_w = os.pipe2(os.O_CLOEXEC)
    reply_r, reply_w = os.pipe2(os.O_CLOEXEC)
    null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
    greq = dict(req, memory_mb=max(int(req.get("memory_mb", 256)), 256), env={})
    gpid = os.fork()
    if gpid == 0:  # fd 3 of the grader is the host connection itself (see _grader_child)
        _grader_child(greq, ex, warm_path, (null, null, null, 1, call_w, reply_r, ack_w))
    for fd in (null, call_w, reply_r, ack_w):
        os.close(fd)
    # The solution's process is set up meanwhile, but runs no code of its own before "go".
    stdin_fd = os.memfd_create("stdin", os.MFD_CLOEXEC)
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    spid = os.fork()
    if spid == 0:
        _solution_child(req, ex, warm_path, (stdin_fd, out_w, err_w, call_r, reply_w, go_r))
    for fd in (stdin_fd, out_w, err_w, call_r, reply_w, go_r):
        os.close(fd)
    # The grader takes the tests frame off the connection itself; wait until it has.
    ready = select.select([ack_r], [], [], 10.0)[0] and os.read(ack_r, 1) == b"1"
    os.close(ack_r)
    if ready:
        write_all(go_w, b"1")
    os.close(go_w)
    if not ready:
        ex.kill_all(statuses)
        for fd in (out_r, err_r):
            os.close(fd)
        ex.cleanup(statuses)
        return {"status": "infra_error", "stdout": "", "stderr": "the grader process did not start",
                "exit_code": None, "wall_ms": 0.0, "tainted": True}
    caps = {out_r: cap, err_r: cap}
    try:
        pidfd = os.pidfd_open(gpid)  # wakes the poll when the grader exits
    except (AttributeError, OSError):
        pidfd = -1
    bufs, reason, status = ex.capture(gpid, out_r, err_r, cap, t0 + timeout, statuses, pidfd)
    wall_ms = (time.monotonic() - t0) * 1000.0
    clean = ex.kill_all(statuses)
    if status is None:
        status = statuses.pop(gpid, 0)
    statuses.pop(gpid, None)
    statuses.pop(spid, None)
    ex._drain(bufs, caps)
    for fd in list(bufs) + ([pidfd] if pidfd >= 0 else []):
        os.close(fd)
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status)
    if reason is None:
        if code in (0, 1):
            reason = "ok" if code == 0 else "error"
        elif code == -signal.SIGXCPU:
            reason = "timeout"
        elif code == -signal.SIGKILL and ooms_before >= 0 and ex._oom_kills() > ooms_before:
            reason = "memory"
        else:
            reason = "error"
    clean = ex.cleanup(statuses) and clean
    return {"status": reason, "stdout": bufs[out_r].decode("utf-8", "replace"),
            "stderr": bufs[err_r].decode("utf-8", "replace"), "exit_code": code, "wall_ms": round(wall_ms, 3),
            "tainted": not clean}


def _grader_child(req, ex, warm_path, fds):
    """The trusted process; never returns.

    It reads the tests frame from the host connection (fd 0 of the executor)
    and writes each outcome as its own frame straight to the host connection
    (its fd 3): no test text ever passes through the executor, whose memory
    every later solution inherits.  Each outcome frame is one ``write`` of at
    most 4096 bytes to a pipe, so it is atomic: killing the grader cannot
    leave half a frame.  Its stdout and stderr are /dev/null for the same reason."""
    try:
        spec = ex.read_frame(0)
    except BaseException:  # noqa: BLE001
        spec = None
    ex._enter_child(req, fds, warm_path, dumpable=False, oom="900", cwd="/", path=(), name="<tests>", source="")
    if type(spec) is not dict or spec.get("op") != "tests":
        os._exit(ex.CHILD_SETUP_FAILED)
    write_all(6, b"1")
    os.close(6)
    rid = req.get("id")

    def emit(rec):
        for key in ("msg", "error"):
            if key in rec:
                rec[key] = str(rec[key])[-600:]
        body = json.dumps({"op": "outcome", "id": rid, "rec": rec}, separators=(",", ":")).encode("ascii")
        os.write(3, len(body).to_bytes(4, "big") + body)  # <= PIPE_BUF: one atomic write

    try:
        code = grade(spec, 4, 5, emit)
    except BaseException as exc:  # noqa: BLE001 - counted as failures by the host (no outcome lines)
        try:
            emit({"error": "grader: " + _describe(exc)})
        except BaseException:  # noqa: BLE001
            pass
        code = 1
    os._exit(code)


def _solution_child(req, ex, warm_path, fds):
    """The untrusted process: runs the solution, then serves calls on fds 3 (in) and 4 (out); never returns."""
    main = ex._enter_child(req, fds, warm_path, name="<solution>")
    if os.read(5, 1) != b"1":  # the grader is ready (it holds the tests); else leave
        os._exit(0)
    os.close(5)
    try:
        exec(compile(req.get("code", ""), "<solution>", "exec"), main.__dict__)
        msg = hello(main.__dict__)
    except BaseException as exc:  # noqa: BLE001 - the solution's error: no test can pass
        msg = hello(None, error=_describe(exc))
    try:
        _send(4, msg)
        if msg["hello"]:
            serve(main.__dict__, 3, 4)
    except BaseException:  # noqa: BLE001
        pass
    for s in (sys.stdout, sys.stderr):
        try:
            s.flush()
        except BaseException:  # noqa: BLE001
            pass
    os._exit(0)
