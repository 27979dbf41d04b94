"""The warm bubblewrap pool: warm workers, isolation between jobs, limits, threads, clean-up."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from billing_recon.errors import SandboxUnavailable
from billing_recon.sandbox.bwrap import Jail
from billing_recon.sandbox.local import WarmPool
from billing_recon.sandbox.port import SandboxLimits, SandboxResult
from tests.integration.sandbox_support import any_alive, descendants, processes_with_arg


@pytest.fixture(scope="module")
def jail() -> Jail:
    """The jail production builds for this interpreter."""
    return Jail.for_this_python()


@pytest.fixture
def pool(jail: Jail, tmp_path: Path) -> Iterator[WarmPool]:
    """A one-worker pool, so consecutive jobs share a worker; its files under tmp_path."""
    box = WarmPool(jail, workers=1, tmp_root=tmp_path)
    yield box
    box.close()


def jails(tmp_path: Path) -> list[int]:
    """Host pids of the pool's jails: their command lines name the pool's directory."""
    return processes_with_arg(str(tmp_path))


def test_pandas_is_already_imported_when_a_job_starts(pool: WarmPool) -> None:
    result = pool.run("import sys\nprint('pandas' in sys.modules, 'numpy' in sys.modules)\n", {})

    assert result.stdout == "True True\n"


def test_jobs_share_no_files_variables_or_modules(pool: WarmPool, tmp_path: Path) -> None:
    first = textwrap.dedent("""
        import builtins, json, os
        for path in ('/tmp/leak', '/dev/shm/leak', 'leak', '../leak', '/tmp/dir/leak',
                     '/leak', '/dev/leak', '/usr/leak'):
            try:
                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
                open(path, 'w').write('from job one')
            except OSError:
                pass  # read-only: nothing can be left there
        os.environ['LEAK'] = '1'
        json.LEAK = builtins.LEAK = 1
        import colorsys
        """)
    second = textwrap.dedent("""
        import builtins, json, os, sys
        paths = ('/tmp/leak', '/dev/shm/leak', 'leak', '../leak', '/tmp/dir', '/leak',
                 '/dev/leak', '/usr/leak')
        print(json.dumps({'files': [p for p in paths if os.path.exists(p)],
                          'env': 'LEAK' in os.environ, 'module': hasattr(json, 'LEAK'),
                          'builtin': hasattr(builtins, 'LEAK'),
                          'import': 'colorsys' in sys.modules}))
        """)
    assert pool.run(first, {}).ok
    before = jails(tmp_path)

    seen = pool.run(second, {}).parse_json_stdout()

    assert seen == {"files": [], "env": False, "module": False, "builtin": False, "import": False}
    assert jails(tmp_path) == before  # the same warm worker served both jobs


def test_job_can_neither_kill_nor_inspect_its_warm_parent(pool: WarmPool, tmp_path: Path) -> None:
    attack = textwrap.dedent("""
        import os, signal
        for sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
            os.kill(os.getppid(), sig)
        for path in ('/proc/1/mem', '/proc/1/environ', '/proc/1/fd/3'):
            try:
                open(path, 'rb').read(1)
                print('read', path)
            except OSError:
                print('denied', path)
        """)
    assert pool.run("pass", {}).ok
    before = jails(tmp_path)

    result = pool.run(attack, {})

    assert result.ok, result.error
    assert "read" not in result.stdout
    assert pool.run("print('alive')", {}).stdout == "alive\n"
    assert jails(tmp_path) == before


def test_system_v_ipc_left_behind_retires_the_worker(pool: WarmPool, tmp_path: Path) -> None:
    leave_segment = ("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                     "print(libc.shmget(0, 4096, 0o1600))\n")  # IPC_PRIVATE, IPC_CREAT | 0600
    first = pool.run(leave_segment, {})
    assert int(first.stdout) >= 0, "the job could not create a segment"
    before = jails(tmp_path)

    second = pool.run("print(len(open('/proc/sysvipc/shm').readlines()))", {})

    assert second.stdout == "1\n"  # the header line only: a fresh IPC namespace
    assert jails(tmp_path) != before


def test_timeout_kills_the_jobs_processes_and_keeps_the_worker(
    pool: WarmPool, tmp_path: Path
) -> None:
    code = "import subprocess\nsubprocess.Popen(['sleep', '43.21'])\nwhile True:\n    pass\n"
    assert pool.run("pass", {}).ok
    before = jails(tmp_path)

    result = pool.run(code, {}, limits=SandboxLimits(wall_timeout_s=1))

    assert result.timed_out and result.exit_code is None
    assert 1.0 <= result.duration_s < 3.0
    assert processes_with_arg("43.21") == []
    assert pool.run("print('next')", {}).stdout == "next\n"
    assert jails(tmp_path) == before


def test_cpu_limit_kills_a_busy_job(pool: WarmPool) -> None:
    result = pool.run("while True:\n    pass\n", {}, limits=SandboxLimits(cpu_seconds=1))

    assert not result.timed_out
    assert result.exit_code == -signal.SIGXCPU
    assert result.error is not None and result.error.name == "SIGXCPU"


def test_process_limit_stops_a_spawn_flood(pool: WarmPool) -> None:
    # Enforced here even when the host runs as root: the jail's uid is not root.
    code = "import subprocess\nfor _ in range(50):\n    subprocess.Popen(['sleep', '30'])\n"

    result = pool.run(code, {}, limits=SandboxLimits(max_processes=8))

    assert result.error is not None
    assert result.error.name == "BlockingIOError"


def test_private_tmp_is_size_capped(pool: WarmPool) -> None:
    code = textwrap.dedent("""
        import errno
        written = 0
        try:
            for n in range(10):  # 16 MiB files: each under the file size limit
                with open(f'/tmp/fill{n}', 'wb') as fh:
                    fh.write(b'0' * (16 * 1024 * 1024))
                written += 16
        except OSError as exc:
            print(errno.errorcode[exc.errno], written)
        """)

    result = pool.run(code, {})

    assert result.stdout.split()[0] == "ENOSPC"
    assert int(result.stdout.split()[1]) < 80  # 64 MiB by default, not the host's memory


def test_a_job_locking_its_directories_does_not_break_the_next(
    pool: WarmPool, tmp_path: Path
) -> None:
    lock = "import os\nfor path in ('/sandbox/work', '/sandbox', '/tmp'):\n    os.chmod(path, 0)\n"
    assert pool.run(lock, {}).ok
    before = jails(tmp_path)

    result = pool.run("open('/tmp/t', 'w')\nopen('out/x', 'w').write(open('in.csv').read())",
                      {"in.csv": b"a\n"})

    assert result.ok, result.error
    assert result.files == {"x": b"a\n"}
    assert jails(tmp_path) == before  # repaired in place, not by replacing the worker


def test_symlinks_in_out_dir_are_not_followed_on_the_host(pool: WarmPool) -> None:
    code = "import os\nos.symlink('/etc/hostname', 'out/leak')\nopen('out/ok', 'w')\n"

    result = pool.run(code, {})

    assert result.ok, result.error
    assert set(result.files) == {"ok"}


def test_concurrent_callers_share_at_most_the_pool_size(jail: Jail, tmp_path: Path) -> None:
    box = WarmPool(jail, workers=2, tmp_root=tmp_path)
    results: list[SandboxResult] = []
    peak: list[int] = []

    def call() -> None:
        results.append(box.run("import time\ntime.sleep(0.5)\nprint('ok')\n", {}))
        peak.append(len(jails(tmp_path)))

    try:
        box.run("pass", {})  # both workers warm first, so timing is about the jobs only
        threads = [threading.Thread(target=call) for _ in range(5)]
        start = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - start
    finally:
        box.close()
    assert [r.stdout for r in results] == ["ok\n"] * 5
    assert max(peak) == 2
    assert elapsed >= 1.5  # five half-second jobs on two workers take three rounds


def test_workers_start_lazily_and_close_kills_them(jail: Jail, tmp_path: Path) -> None:
    box = WarmPool(jail, workers=2, tmp_root=tmp_path)
    assert jails(tmp_path) == []

    box.run("pass", {})
    assert len(jails(tmp_path)) == 1
    box.close()

    assert jails(tmp_path) == []
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(SandboxUnavailable, match="closed"):
        box.run("pass", {})


def test_workers_are_killed_when_the_interpreter_exits(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        from billing_recon.sandbox.bwrap import Jail
        from billing_recon.sandbox.local import WarmPool
        pool = WarmPool(Jail.for_this_python(), tmp_root={str(tmp_path)!r})
        print(pool.run("print('ran')", {{}}).stdout, end="")
        """)  # and exit without close()

    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=True)

    assert proc.stdout == "ran\n"
    assert jails(tmp_path) == []
    assert list(tmp_path.iterdir()) == []


def test_workers_die_with_a_host_killed_by_sigkill(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        from billing_recon.sandbox.bwrap import Jail
        from billing_recon.sandbox.local import WarmPool
        pool = WarmPool(Jail.for_this_python(), tmp_root={str(tmp_path)!r})
        print(pool.run("print('ran')", {{}}).stdout, end="", flush=True)
        pool.run("import time\\ntime.sleep(60)", {{}})  # busy: the worker is not listening
        """)
    host = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert host.stdout is not None and host.stdout.readline() == "ran\n"
    jail_processes = descendants(host.pid)
    assert len(jail_processes) >= 2  # the jail and the warm worker inside it

    time.sleep(0.3)  # the second job is running
    host.kill()  # no close(), no atexit, no socket read: only --die-with-parent is left
    host.wait()

    deadline = time.monotonic() + 5
    while any_alive(jail_processes) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any_alive(jail_processes)


def test_worker_that_cannot_start_is_sandbox_unavailable(jail: Jail, tmp_path: Path) -> None:
    broken = Jail(bwrap=jail.bwrap, python="/nonexistent/python3", readonly=jail.readonly,
                  uid=jail.uid)
    box = WarmPool(broken, tmp_root=tmp_path)

    with pytest.raises(SandboxUnavailable, match=r"did not start.*nonexistent/python3"):
        box.run("pass", {})
    box.close()
    assert jails(tmp_path) == []


def test_jail_binds_only_python_and_usr(jail: Jail) -> None:
    code = ("import json, os\n"
            "print(json.dumps(sorted(os.listdir('/')) + [os.getuid(), os.getpid()]))\n")
    box = WarmPool(jail, workers=1)
    try:
        seen = box.run(code, {}).parse_json_stdout()
    finally:
        box.close()
    *top, uid, pid = seen
    expected = {"bin", "dev", "lib", "lib64", "opt", "proc", "sandbox", "tmp", "usr"}
    expected |= {path.split("/")[1] for path in jail.readonly}
    assert set(top) <= expected | {"sbin", "lib32"}
    assert uid != 0 and uid == (jail.uid if os.geteuid() == 0 else os.geteuid())
    assert pid > 1  # a fork of the worker, which is pid 1 of the jail's own namespace
    assert json.dumps(jail.readonly)  # derived from this interpreter, never empty


def test_a_worker_killed_while_idle_is_replaced(pool: WarmPool, tmp_path: Path) -> None:
    assert pool.run("pass", {}).ok
    (jail_pid,) = jails(tmp_path)
    os.killpg(jail_pid, signal.SIGKILL)  # from outside, while it waits for work
    deadline = time.monotonic() + 5
    while jails(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.02)

    result = pool.run("print('replaced')", {})

    assert result.stdout == "replaced\n"
    assert jails(tmp_path) not in ([], [jail_pid])


def test_a_forked_child_uses_its_own_workers_and_leaves_the_parents(
    pool: WarmPool, tmp_path: Path
) -> None:
    assert pool.run("pass", {}).ok
    parents = jails(tmp_path)
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        try:
            ok = pool.run("print('child')", {}).stdout == "child\n"
            pool.close()
            os.write(write, b"ok" if ok else b"bad")
        finally:
            os._exit(0)
    os.close(write)
    answer = os.read(read, 16)
    os.waitpid(child, 0)
    os.close(read)

    assert answer == b"ok"
    assert pool.run("print('parent')", {}).stdout == "parent\n"
    assert jails(tmp_path) == parents


def test_a_forked_child_exiting_normally_leaves_the_parents_workers(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import os, sys
        from billing_recon.sandbox.bwrap import Jail
        from billing_recon.sandbox.local import WarmPool
        pool = WarmPool(Jail.for_this_python(), tmp_root={str(tmp_path)!r})
        pool.run("pass", {{}})
        if os.fork() == 0:
            sys.exit(0)  # runs atexit and the pool's finalizer in the child
        os.wait()
        print(pool.run("print('parent')", {{}}).stdout, end="")
        """)

    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=True)

    assert proc.stdout == "parent\n"


def test_directories_of_pools_whose_process_died_are_swept(jail: Jail, tmp_path: Path) -> None:
    dead = tmp_path / "billing-recon-pool-999999999-abcd"  # above any pid_max
    (dead / "worker-x").mkdir(parents=True)
    alive_pool = tmp_path / f"billing-recon-pool-{os.getpid()}-efgh"
    alive_pool.mkdir()
    box = WarmPool(jail, workers=1, tmp_root=tmp_path)
    try:
        assert box.run("pass", {}).ok
    finally:
        box.close()

    assert not dead.exists()
    assert alive_pool.exists()


def _stat_fields(text: str) -> list[str]:
    """The fields of a /proc/PID/stat line after the command name (field 3 onwards)."""
    return text[text.rindex(")") + 2 :].split()


def _waiting_children(tmp_path: Path) -> list[int]:
    """Host pids of workers' children that exist while no job runs (the pre-forked ones)."""
    inside = set().union(*(descendants(pid) for pid in jails(tmp_path)))
    workers = {pid for pid in inside if pid in processes_with_arg("_warm_worker.py")
               and Path(f"/proc/{pid}/comm").read_text().strip() != "bwrap"}
    waiting = []
    for pid in workers:
        with contextlib.suppress(OSError):
            if int(_stat_fields(Path(f"/proc/{pid}/stat").read_text())[1]) in workers:
                waiting.append(pid)
    return waiting


def test_the_next_job_runs_in_a_child_forked_before_it_arrived(
    pool: WarmPool, tmp_path: Path
) -> None:
    assert pool.run("pass", {}).ok
    deadline = time.monotonic() + 10
    while not (waiting := _waiting_children(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.05)  # the worker forks it right after its answer
    assert len(waiting) == 1
    forked_at = _stat_fields(Path(f"/proc/{waiting[0]}/stat").read_text())[19]

    result = pool.run("print(open('/proc/self/stat').read().rsplit(')', 1)[1].split()[19])", {})

    assert result.stdout.strip() == forked_at  # the start time (ticks since boot) of that child


def test_a_job_holds_no_descriptor_of_its_worker(pool: WarmPool) -> None:
    assert pool.run("pass", {}).ok  # the second job runs in a child forked ahead of it

    result = pool.run("import os\nprint(sorted(os.listdir('/proc/self/fd')))\n", {})

    assert result.stdout == "['0', '1', '2', '3']\n"  # 3 is the listing's own descriptor


def test_a_job_sees_no_process_or_shared_file_of_the_one_before(pool: WarmPool) -> None:
    leave = textwrap.dedent("""
        import os, subprocess
        subprocess.Popen(['sleep', '97.53'], start_new_session=True)
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.execv('/usr/bin/sleep', ['sleep', '97.54'])
            os._exit(0)
        os.makedirs('/tmp/locked/deep')
        open('/tmp/locked/deep/f', 'w').write('job one')
        os.mkfifo('/dev/shm/fifo')
        os.chmod('/tmp/locked/deep', 0)
        os.chmod('/tmp/locked', 0)
        """)
    look = textwrap.dedent("""
        import json, os
        pids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())
        print(json.dumps({'pids': pids, 'me': os.getpid(), 'tmp': os.listdir('/tmp'),
                          'shm': os.listdir('/dev/shm')}))
        """)
    assert pool.run(leave, {}).ok

    seen = pool.run(look, {}).parse_json_stdout()

    assert seen["pids"] == [1, seen["me"]]
    assert seen["tmp"] == [] and seen["shm"] == []
    assert processes_with_arg("97.53") == [] and processes_with_arg("97.54") == []


_VIEW = textwrap.dedent("""
    import json, os
    def state(path):
        info = os.lstat(path)
        try:
            attrs = os.listxattr(path, follow_symlinks=False)
        except OSError:
            attrs = 'n/a'
        return [oct(info.st_mode), info.st_uid, info.st_gid, attrs]
    tree = {}
    for top, dirs, names in os.walk('/sandbox'):
        for name in sorted(dirs + names):
            path = os.path.join(top, name)
            if path != '/sandbox/run/main.py':
                tree[path] = state(path)
    print(json.dumps({'root': state('/sandbox'), 'tree': tree,
                      'input': open('/sandbox/work/in.csv').read()}))
    """)


def _view(pool: WarmPool) -> dict[str, object]:
    result = pool.run(_VIEW, {"in.csv": b"a\n"})
    assert result.ok, result.error
    view: dict[str, object] = result.parse_json_stdout()
    return view


def test_what_a_job_leaves_in_its_directory_is_gone_for_the_next(
    pool: WarmPool, tmp_path: Path
) -> None:
    leave = textwrap.dedent(f"""
        import os
        os.makedirs('locked/deep')
        open('locked/deep/f', 'w').write('job one')
        os.chmod('locked/deep', 0)
        os.chmod('locked', 0)
        os.mkfifo('fifo')
        os.mkfifo('out/fifo')
        os.link('in.csv', 'out/hard')
        os.link('in.csv', '/sandbox/run/hard')
        os.remove('in.csv')
        os.symlink('{tmp_path}/planted', 'in.csv')  # the next job's input, if it were kept
        open('/sandbox/stray', 'w').write('job one')
        os.symlink('{tmp_path}/decoy', '/sandbox/tmp/decoy')  # a host path: never followed
        os.chmod('out/hard', 0)
        """)
    (tmp_path / "decoy").mkdir()
    (tmp_path / "decoy" / "canary").write_text("host")
    fresh = _view(pool)
    assert pool.run(leave, {"in.csv": b"a\n"}).ok

    after = _view(pool)

    assert after == fresh
    assert after["input"] == "a\n"
    assert not (tmp_path / "planted").exists()
    assert (tmp_path / "decoy" / "canary").read_text() == "host"


def test_a_job_changing_its_directories_gets_them_rebuilt_for_the_next(
    pool: WarmPool, tmp_path: Path
) -> None:
    damage = textwrap.dedent(f"""
        import os
        os.chmod('/sandbox/work', 0o2777)
        os.chmod('/sandbox/work/out', 0o1700)
        try:
            os.setxattr('/sandbox/run', 'user.leak', b'job one')
        except OSError:
            pass  # the host's file system has no user attributes: nothing to leave there
        os.rename('/sandbox/tmp', '/sandbox/tmp2')
        os.symlink('{tmp_path}/decoy', '/sandbox/tmp')  # a host path: never followed
        os.setxattr('/sandbox', 'user.leak', b'job one')
        """)
    (tmp_path / "decoy").mkdir()
    (tmp_path / "decoy" / "canary").write_text("host")
    fresh = _view(pool)
    assert pool.run(damage, {}).ok

    after = _view(pool)

    assert after == fresh
    assert (tmp_path / "decoy" / "canary").read_text() == "host"


def test_the_directories_of_a_job_are_kept_for_the_next_when_it_left_them_alone(
    pool: WarmPool, tmp_path: Path
) -> None:
    assert pool.run("pass", {}).ok
    (work,) = tmp_path.glob("billing-recon-pool-*/worker-*/work")
    held = os.open(work, os.O_RDONLY | os.O_DIRECTORY)  # its inode cannot be reused meanwhile
    try:
        assert pool.run("open('out/x', 'w').write('1')\nopen('/sandbox/tmp/y', 'w')\n", {}).ok
        assert _view(pool)["tree"]["/sandbox/work/out"]  # the job after still has its skeleton

        assert os.fstat(held).st_nlink > 0 and os.fstat(held).st_ino == work.stat().st_ino
    finally:
        os.close(held)
