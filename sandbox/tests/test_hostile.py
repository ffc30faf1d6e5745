"""Hostile snippets against the real engine.

Each must come back with its status within timeout + 1 s, leave the pool
working (a trivial snippet runs right after) and leave no trace for the next
run.  ``single_pool`` has one container, so the follow-up run in ``reuse``
mode lands in the very container the hostile snippet used.
"""

from __future__ import annotations

import json
import os
import time
import uuid

import pytest

from toolrl_sandbox import ExecResult, SyncSandboxPool

pytestmark = pytest.mark.integration
CANARY = os.environ["TOOLRL_SANDBOX_TEST_CANARY"]  # set by conftest before any pool starts


def wait_ready(pool: SyncSandboxPool, within: float = 60.0) -> None:
    """Wait until a container is idle, so that timing covers the run, not a
    fresh-mode refill (which the engine may make slow on a loaded machine)."""
    assert pool.pool is not None
    end = time.monotonic() + within
    while pool.pool.idle == 0 and time.monotonic() < end:
        time.sleep(0.02)


def timed(pool: SyncSandboxPool, code: str, timeout: float, **kwargs: object) -> ExecResult:
    wait_ready(pool)
    t0 = time.monotonic()
    result = pool.run(code, timeout=timeout, **kwargs)
    elapsed = time.monotonic() - t0
    assert elapsed <= timeout + 1.0, f"took {elapsed:.2f} s for a {timeout} s timeout: {result}"
    return result


def still_works(pool: SyncSandboxPool) -> None:
    r = pool.run("print('alive', 6 * 7)", timeout=5)
    assert (r.status, r.stdout) == ("ok", "alive 42\n"), r


def processes_in_container(pool: SyncSandboxPool) -> list[int]:
    """PIDs visible in the container besides the executor and the probe itself."""
    r = pool.run("import os\nprint(' '.join(p for p in os.listdir('/proc') if p.isdigit()))\nprint(os.getpid())")
    assert r.status == "ok", r
    pids, me = r.stdout.split("\n")[:2]
    return [int(p) for p in pids.split() if int(p) not in (1, int(me))]


FORK_BOMB = """
import os
while True:
    try:
        os.fork()
    except OSError:
        pass
"""


def test_fork_bomb(any_pool: SyncSandboxPool) -> None:
    r = timed(any_pool, FORK_BOMB, timeout=2)
    assert r.status == "timeout", r
    still_works(any_pool)


def test_fork_bomb_leaves_no_process(single_pool: SyncSandboxPool) -> None:
    timed(single_pool, FORK_BOMB, timeout=1.5)
    assert processes_in_container(single_pool) == []


def test_snippet_runs_below_the_executors_priority(single_pool: SyncSandboxPool) -> None:
    """Snippets run at nice 19 and cannot raise their priority again, so the executor (nice 0) gets the CPU to
    enforce deadlines when a snippet fills every core (test_fork_bomb_leaves_no_process once took 3.4 s for a
    1.5 s timeout in CI, when snippets ran at the executor's priority)."""
    code = ("import os\nprint(os.getpriority(os.PRIO_PROCESS, 0), os.getpriority(os.PRIO_PROCESS, 1))\n"
            "try:\n    os.setpriority(os.PRIO_PROCESS, 0, 0)\n    print('raised')\nexcept OSError as e:\n"
            "    print('refused', e.errno)\n")
    r = single_pool.run(code, timeout=5)
    assert r.status == "ok", r
    assert r.stdout.split("\n")[:2] == ["19 0", "refused 1"], r.stdout  # EPERM


def test_memory_bomb(any_pool: SyncSandboxPool) -> None:
    code = "x = []\nwhile True:\n    x.append(bytearray(10 * 1024 * 1024))"
    r = timed(any_pool, code, timeout=5, memory_mb=128)
    assert r.status == "memory", r
    assert "MemoryError" in r.stderr
    still_works(any_pool)


def test_memory_bomb_in_many_processes(single_pool: SyncSandboxPool) -> None:
    """Children that together exceed the container's cgroup limit: the OOM
    killer takes snippet processes (oom_score_adj 1000), never the executor."""
    code = """
import os, time
for _ in range(8):
    if os.fork() == 0:
        try:
            blob = bytearray(200 * 1024 * 1024)
            for i in range(0, len(blob), 4096):
                blob[i] = 1
            time.sleep(1)
        finally:
            os._exit(0)
deaths = 0
for _ in range(8):
    _, status = os.wait()
    deaths += os.WIFSIGNALED(status)
print('killed', deaths)
"""
    r = timed(single_pool, code, timeout=8, memory_mb=256)
    assert r.status == "ok", r
    assert int(r.stdout.split()[-1]) >= 1, r.stdout   # the cgroup OOM killer did strike
    still_works(single_pool)
    assert processes_in_container(single_pool) == []


def test_infinite_loop(any_pool: SyncSandboxPool) -> None:
    r = timed(any_pool, "while True:\n    pass", timeout=1)
    assert r.status == "timeout" and r.exit_code == -9, r
    still_works(any_pool)


DETACHED = """
import os, sys
pid = os.fork()
if pid == 0:
    os.setsid()
    if os.fork() == 0:          # double fork: the grandchild is re-parented
        while True:
            pass
    os._exit(0)
os.waitpid(pid, 0)
print('parent done')
"""


def test_detached_busy_grandchild_is_killed(single_pool: SyncSandboxPool) -> None:
    r = timed(single_pool, DETACHED, timeout=3)
    assert (r.status, r.stdout) == ("ok", "parent done\n"), r
    assert processes_in_container(single_pool) == []
    still_works(single_pool)


def test_detached_grandchild_holding_stdout_does_not_block(any_pool: SyncSandboxPool) -> None:
    """The grandchild keeps the stdout pipe open; the run still ends when the snippet does."""
    code = DETACHED.replace("while True:\n            pass", "import time; time.sleep(60)")
    r = timed(any_pool, code, timeout=5)
    assert r.status == "ok" and r.wall_ms < 3000, r


def test_detached_grandchild_with_timeout(single_pool: SyncSandboxPool) -> None:
    code = DETACHED.replace("print('parent done')", "import time; time.sleep(60)")
    r = timed(single_pool, code, timeout=1)
    assert r.status == "timeout", r
    assert processes_in_container(single_pool) == []


def test_disk_fill(single_pool: SyncSandboxPool) -> None:
    code = """
import os
chunk = b'x' * (1 << 20)
i = 0
while True:
    with open(f'fill{i}', 'wb') as fh:
        for _ in range(8):
            fh.write(chunk)
    i += 1
"""
    r = timed(single_pool, code, timeout=10)
    assert r.status == "error", r
    assert "No space left" in r.stderr or "File too large" in r.stderr, r.stderr[-500:]
    probe = single_pool.run("import os\nst = os.statvfs('.')\nprint(os.listdir('.'), st.f_bfree == st.f_blocks)")
    assert probe.stdout == "[] True\n", probe
    still_works(single_pool)


def test_single_huge_file_hits_fsize_limit(any_pool: SyncSandboxPool) -> None:
    code = "with open('big', 'wb') as fh:\n    fh.write(b'x' * (48 << 20))"
    r = timed(any_pool, code, timeout=5, memory_mb=256)
    assert r.status == "error" and "File too large" in r.stderr, r


@pytest.mark.parametrize("code", [
    "import sys\nsys.stdout.write('x' * (100 * 1024 * 1024))",
    "import os\nchunk = b'y' * 65536\nfor _ in range(1600):\n    os.write(1, chunk)",
    "import sys\nwhile True:\n    sys.stderr.write('e' * 100000)",
])
def test_100mb_of_output(any_pool: SyncSandboxPool, code: str) -> None:
    r = timed(any_pool, code, timeout=10, memory_mb=512)
    assert r.status == "output_limit", r.status
    assert len(r.stdout) <= 1 << 20 and len(r.stderr) <= 1 << 20
    still_works(any_pool)


NETWORK_PROBE = """
import json, os, socket
dev = [line.split(':')[0].strip() for line in open('/proc/net/dev').read().splitlines()[2:]]
routes = open('/proc/net/route').read().splitlines()[1:]
routes6 = [l for l in open('/proc/net/ipv6_route').read().splitlines() if not l.split()[-1] == 'lo']
s = socket.socket()
s.settimeout(1)
try:
    s.connect(('127.0.0.1', 9))          # loopback only; nothing listens there
    loop = 'connected'
except OSError as exc:
    loop = type(exc).__name__
print(json.dumps({'dev': dev, 'routes': routes, 'routes6': routes6, 'sys': sorted(os.listdir('/sys/class/net')),
                  'loopback': loop}))
"""


def test_no_network(any_pool: SyncSandboxPool) -> None:
    r = timed(any_pool, NETWORK_PROBE, timeout=5)
    assert r.status == "ok", r
    info = json.loads(r.stdout)
    assert info["dev"] == ["lo"] and info["sys"] == ["lo"]
    assert info["routes"] == [] and info["routes6"] == []
    assert info["loopback"] == "ConnectionRefusedError"


HOST_PROBE = """
import json, os
out = {'env': dict(os.environ), 'uid': os.getuid(), 'gid': os.getgid(), 'hostname': open('/etc/hostname').read().strip()}
for path in ('/etc/shadow', '/proc/1/environ', '/proc/1/mem', '/proc/1/fd', '/root'):
    try:
        if os.path.isdir(path):
            os.listdir(path)
        else:
            open(path, 'rb').read(1)
        out[path] = 'readable'
    except OSError as exc:
        out[path] = type(exc).__name__
out['marker'] = os.path.exists(MARKER)
out['docker_sock'] = any(os.path.exists(p) for p in ('/var/run/docker.sock', '/run/docker.sock'))
out['mounts'] = open('/proc/self/mountinfo').read()
out['caps'] = [l for l in open('/proc/self/status').read().splitlines() if l.startswith(('Cap', 'NoNewPrivs', 'Seccomp'))]
print(json.dumps(out))
"""


def test_host_files_and_environment_do_not_leak(any_pool: SyncSandboxPool, tmp_path: object) -> None:
    marker = f"/tmp/toolrl-host-marker-{uuid.uuid4().hex}"
    with open(marker, "w") as fh:
        fh.write("host secret")
    try:
        r = timed(any_pool, f"MARKER = {marker!r}\n" + HOST_PROBE, timeout=5)
    finally:
        os.unlink(marker)
    assert r.status == "ok", r
    info = json.loads(r.stdout)
    assert CANARY not in r.stdout
    assert not any(k.startswith("TOOLRL_SANDBOX_TEST") for k in info["env"])
    assert set(info["env"]) <= {"PATH", "HOME", "TMPDIR", "LANG", "PYTHONDONTWRITEBYTECODE", "MALLOC_ARENA_MAX"}
    assert info["uid"] == 10001 and info["gid"] == 10001 and info["hostname"] == "sandbox"
    for path in ("/etc/shadow", "/proc/1/environ", "/proc/1/mem", "/proc/1/fd", "/root"):
        assert info[path] == "PermissionError", (path, info[path])
    assert info["marker"] is False and info["docker_sock"] is False
    assert " /home" not in info["mounts"] and "docker.sock" not in info["mounts"]
    caps = {line.split(":")[0]: line.split(":")[1].strip() for line in info["caps"]}
    assert caps["CapEff"] == caps["CapPrm"] == caps["CapBnd"] == "0000000000000000"
    assert caps["NoNewPrivs"] == "1" and caps["Seccomp"] == "2"


WRITE_PROBE = """
import json, os
targets = ['/x', '/etc/x', '/etc/hosts', '/etc/passwd', '/usr/x', '/usr/bin/python3', '/opt/toolrl_sandbox/executor.py',
           '/opt/toolrl_sandbox/x', '/root/x', '/home/x', '/var/tmp/x', '/var/x', '/bin/x', '/proc/sys/kernel/hostname',
           '/sys/x', '/dev/x', '/run/x']
res = {}
for t in targets:
    try:
        with open(t, 'a') as fh:
            fh.write('owned')
        res[t] = 'WROTE'
    except OSError as exc:
        res[t] = type(exc).__name__
print(json.dumps(res))
"""


def test_cannot_write_outside_the_work_directory(any_pool: SyncSandboxPool) -> None:
    r = timed(any_pool, WRITE_PROBE, timeout=5)
    assert r.status == "ok", r
    res = json.loads(r.stdout)
    assert "WROTE" not in res.values(), res
    still_works(any_pool)


KILL_EXECUTOR = """
import os, signal
for sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGSTOP, signal.SIGQUIT, signal.SIGHUP):
    os.kill(1, sig)
os.kill(os.getppid(), signal.SIGKILL)
try:
    os.kill(-1, signal.SIGKILL)   # everything this uid may signal
except ProcessLookupError:
    pass
for path in ('/proc/1/mem', '/proc/1/fd/0', '/proc/1/fd/1'):
    try:
        open(path, 'wb').write(b'x')
        print('opened', path)
    except OSError as exc:
        print(path, type(exc).__name__)
print('still here, parent is', os.getppid())
"""


def test_snippet_cannot_kill_the_executor(single_pool: SyncSandboxPool) -> None:
    r = timed(single_pool, KILL_EXECUTOR, timeout=5)
    assert r.status == "ok", r
    assert "opened" not in r.stdout and "still here, parent is 1" in r.stdout, r.stdout
    still_works(single_pool)
    assert single_pool.pool is not None and single_pool.pool.stats["infra_errors"] == 0


def test_killing_parent_via_ptrace_is_refused(single_pool: SyncSandboxPool) -> None:
    code = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
print(libc.ptrace(16, 1, 0, 0), ctypes.get_errno())   # PTRACE_ATTACH to the executor
"""
    r = timed(single_pool, code, timeout=5)
    assert r.status == "ok" and r.stdout.split()[0] == "-1", r
    still_works(single_pool)


LEAVE = """
import os, ctypes
for d in ('.', '/tmp', '/dev/shm', 'sub/deeper'):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, 'note.txt'), 'w') as fh:
        fh.write('secret from the previous run')
os.chmod('sub', 0o000)          # try to make the cleanup fail
libc = ctypes.CDLL(None, use_errno=True)
shm = libc.shmget(0x5EC7E7, 4096, 0o1666)   # IPC_CREAT | 0666
print('left', shm)
"""

FIND = """
import os
found = []
for root in ('.', '/tmp', '/dev/shm', '/dev/mqueue'):
    if os.path.isdir(root):
        for dirpath, dirs, files in os.walk(root):
            found += [os.path.join(dirpath, f) for f in files]
        found += [os.path.join(root, d) for d in os.listdir(root)]
sysv = open('/proc/sysvipc/shm').read().splitlines()[1:]
print(sorted(set(found)), len(sysv))
"""


def test_files_do_not_survive_to_the_next_run(any_pool: SyncSandboxPool) -> None:
    r = timed(any_pool, LEAVE, timeout=5)
    assert r.status == "ok", r
    r = timed(any_pool, FIND, timeout=5)
    assert (r.status, r.stdout) == ("ok", "[] 0\n"), r


def test_locked_directories_are_still_wiped(single_pool: SyncSandboxPool) -> None:
    assert single_pool.pool is not None
    tainted = single_pool.pool.stats["tainted"]
    code = """
import os
for d in ('/tmp', '.'):
    os.makedirs(d + '/inner', exist_ok=True)
    open(d + '/inner/loot.txt', 'w').write('secret')
    os.chmod(d + '/inner', 0o000)
    os.chmod(d, 0o000)
print('locked')
"""
    r = timed(single_pool, code, timeout=5)
    assert (r.status, r.stdout) == ("ok", "locked\n"), r
    r = timed(single_pool, FIND, timeout=5)
    assert (r.status, r.stdout) == ("ok", "[] 0\n"), r
    assert single_pool.pool.stats["tainted"] == tainted  # cleaned, not merely replaced


def test_uncleanable_container_is_replaced(single_pool: SyncSandboxPool) -> None:
    """A tree too deep for the wipe: the executor reports itself tainted and the
    pool swaps the container; the next run sees a clean one."""
    pool = single_pool.pool
    assert pool is not None
    tainted = pool.stats["tainted"]
    code = "import os\nfor _ in range(3000):\n    os.mkdir('d')\n    os.chdir('d')\nopen('loot.txt', 'w').write('x')\n"
    r = timed(single_pool, code, timeout=10)
    assert r.status == "ok", r
    assert pool.stats["tainted"] == tainted + 1
    r = timed(single_pool, FIND, timeout=10)
    assert (r.status, r.stdout) == ("ok", "[] 0\n"), r
