"""Nothing stays in the kernel after any exit. Every test of the suite ends with that check (the
autouse fixture `nothing_left_in_the_kernel`, tests/kernel_objects.py); here each way out of a
run is taken on purpose, with the evidence that there was something to unload."""
import ctypes
import os
import signal
import struct

import pytest

import bpfmaps
from conftest import Held, Scalp, run_scalp

BPF_MAP_CREATE = 0


def next_map_id():
    """The id the kernel gives the next map (ids are handed out in increasing order): a map of
    our own, created and freed."""
    attr = struct.pack("=IIIII", 2, 4, 4, 1, 0)  # BPF_MAP_TYPE_ARRAY, key 4, value 4, 1 entry
    fd = bpfmaps._bpf(BPF_MAP_CREATE, attr)
    try:
        info = ctypes.create_string_buffer(88)
        bpfmaps._bpf(bpfmaps.BPF_OBJ_GET_INFO_BY_FD, struct.pack("=IIQ", fd, 88, ctypes.addressof(info)))
        return struct.unpack_from("=I", info.raw, 4)[0]
    finally:
        os.close(fd)


def held_while_running(watch, scalp):
    """Waits for the watch to see the run's programs and maps; returns how many."""
    watch.sample()
    assert watch.progs and watch.maps, "the run's programs and maps were never seen"
    assert scalp.proc.poll() is None
    return len(watch.progs), len(watch.maps)


@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM", "SIGKILL"])
def test_a_signal_to_a_run_on_a_pid(out, how, nothing_left_in_the_kernel):
    work = Held("--getppid", 100)
    try:
        scalp = Scalp(out, "--pid", work.pid, "--interval", "100ms").wait_ready()
        progs, maps = held_while_running(nothing_left_in_the_kernel, scalp)
        code = scalp.stop(getattr(signal, how))
    finally:
        work.kill()
    assert code == (-signal.SIGKILL if how == "SIGKILL" else 0), scalp.stderr
    print(f"{progs} programs, {maps} maps held; exit {code}")
    nothing_left_in_the_kernel.stop()
    nothing_left_in_the_kernel.check()


@pytest.mark.parametrize("how", ["targets ended", "duration", "command exit"])
def test_a_run_that_ends_by_itself(out, how, nothing_left_in_the_kernel):
    if how == "command exit":
        r = run_scalp("run", "--output", out, "--", "sh", "-c", "sleep 0.5; exit 3")
        assert r.returncode == 3, r.stderr
    else:
        work = Held("--getppid", 100)
        try:
            args = ["--duration", "1s"] if how == "duration" else []
            scalp = Scalp(out, "--pid", work.pid, *args).wait_ready()
            held_while_running(nothing_left_in_the_kernel, scalp)
            if how == "targets ended":
                work.go()
                assert work.finish() == 0
            assert scalp.wait() == 0, scalp.stderr
        finally:
            work.kill()
    nothing_left_in_the_kernel.stop()
    assert nothing_left_in_the_kernel.progs, "the run's programs were never seen"
    nothing_left_in_the_kernel.check()


def test_a_load_the_kernel_refuses_half_way(out, nothing_left_in_the_kernel):
    """A map of 2³¹ entries (the syscall in-flight table) is refused when the maps are created (aya
    rounds ring buffer sizes up itself, so an odd ring size is no longer a refusal): some of the
    run's maps exist by then. Exit 4, one line, nothing left."""
    first = next_map_id()
    r = run_scalp("run", "--output", out, "--map-entries", "SYSCALL_INFLIGHT=2147483648", "--", "true")
    assert r.returncode == 4, r.stderr
    assert r.stderr.startswith("scalp-bpf: the kernel refused scalp-bpf's programs") and r.stderr.count("\n") == 1
    # Maps were created before the refusal (the ids moved on by more than our own map's).
    assert next_map_id() > first + 2
    assert not out.exists()
    nothing_left_in_the_kernel.stop()
    nothing_left_in_the_kernel.check()


@pytest.mark.parametrize("args, code", [
    # Refused after the object was loaded (its maps created): the map is checked against it.
    (["--map-entries", "NO_SUCH_MAP=4", "--", "true"], 2),
    # Refused before anything is loaded.
    (["--duration", "fast", "--", "true"], 2),
    (["--kernel-btf", "/nonexistent/vmlinux", "--", "true"], 4),
])
def test_a_run_refused_at_start(out, args, code, nothing_left_in_the_kernel):
    r = run_scalp("run", "--output", out, *args)
    assert r.returncode == code, r.stderr
    assert r.stderr.startswith("scalp-bpf: ") and r.stderr.count("\n") == 1, r.stderr
    nothing_left_in_the_kernel.stop()
    nothing_left_in_the_kernel.check()
