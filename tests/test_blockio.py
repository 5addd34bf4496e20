"""The block I/O tracer: requests and bytes per process and device, exact; writeback charged
to the process that dirtied the pages; cold reads charged to the reader."""
import contextlib
import json
import os
import pathlib
import subprocess

import pytest

from conftest import SCALP, WORKLOADS, Held, Scalp, rows

BLOCK = 4096


@contextlib.contextmanager
def loop_ext4(image, mnt, size, journal=False, options=()):
    """A fresh ext4 of `size` bytes in the file `image` on a loop device that nothing else uses,
    mounted on `mnt` (created) with mount `options`: inode tables (and the journal, if any)
    written by mkfs rather than in the background. Yields the device name; unmounts, detaches
    and removes the image after."""
    with open(image, "wb") as f:
        f.truncate(size)
    dev = subprocess.run(["losetup", "--find", "--show", image], check=True, capture_output=True,
                         text=True).stdout.strip()
    mnt.mkdir()
    features = ["-E", "lazy_itable_init=0,lazy_journal_init=0"] if journal else \
        ["-O", "^has_journal", "-E", "lazy_itable_init=0"]
    try:
        subprocess.run(["mkfs.ext4", "-q", "-F", *features, dev], check=True)
        subprocess.run(["mount", *(["-o", ",".join(options)] if options else []), dev, mnt], check=True)
        yield os.path.basename(dev)
    finally:
        subprocess.run(["umount", mnt])
        subprocess.run(["losetup", "-d", dev])
        pathlib.Path(image).unlink()


@pytest.fixture(scope="module")
def loopfs(tmp_path_factory):
    """A fresh ext4 (no journal, lazytime: no writes of its own while a test runs) on a loop
    device that nothing else uses, so /sys/block/<dev>/stat counts only the test's I/O."""
    base = tmp_path_factory.mktemp("loopfs")
    mnt = base / "mnt"
    with loop_ext4(base / "disk.img", mnt, 128 << 20, options=["lazytime"]) as dev:
        yield mnt, dev


def disk_stat(dev):
    """(reads completed, sectors read, writes completed, sectors written)."""
    f = open(f"/sys/block/{dev}/stat").read().split()
    return int(f[0]), int(f[2]), int(f[4]), int(f[6])


def prepare(path, nbytes):
    """A file of nbytes, on disk, its pages dropped from the cache."""
    with open(path, "wb") as f:
        f.write(b"\0" * nbytes)
        f.flush()
        os.fsync(f.fileno())
    subprocess.run(["sync"], check=True)
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)


def sums(out, pid, **match):
    requests = size = 0
    for r in rows(out, "blockio", pid):
        if all(r[k] == v for k, v in match.items()):
            requests += r["requests"]
            size += r["bytes"]
    return requests, size


def test_direct_io_is_counted_exactly_and_matches_the_device(out, loopfs):
    mnt, dev = loopfs
    path = mnt / "direct.dat"
    prepare(path, 256 * BLOCK)
    work = Held("direct", "--path", path, "--writes", 256, "--reads", 128, script=WORKLOADS / "fileio.py")
    scalp = Scalp(out, "--pid", work.pid, "--interval", "200ms").wait_ready()
    before = disk_stat(dev)
    work.go()
    assert work.finish() == 0
    after = disk_stat(dev)
    assert scalp.wait() == 0, scalp.stderr
    delta = [b - a for a, b in zip(before, after)]
    assert delta == [128, 128 * 8, 256, 256 * 8], "the device saw other I/O"
    assert sums(out, work.pid, device=dev, op="write", attribution="direct") == (256, 256 * BLOCK)
    assert sums(out, work.pid, device=dev, op="read", attribution="direct") == (128, 128 * BLOCK)
    r = [r for r in rows(out, "blockio", work.pid) if r["op"] == "write"]
    assert all(x["sync"] for x in r), "O_DIRECT writes are REQ_SYNC"
    assert all(x["device_ns_sum"] > 0 for x in r)
    assert sum(sum(x["device_histogram"]) for x in r) == 256


def test_buffered_writes_then_fsync(out, loopfs):
    mnt, dev = loopfs
    path = mnt / "fsync.dat"
    work = Held("buffered", "--path", path, "--bytes", 1 << 20, "--fsync", script=WORKLOADS / "fileio.py")
    scalp = Scalp(out, "--pid", work.pid).wait_ready()
    work.go()
    assert work.finish() == 0
    assert scalp.wait() == 0
    [fsync] = [r for r in rows(out, "fileio", work.pid) if r["op"] == "fsync"]
    assert fsync["calls"] == 1 and fsync["file_kind"] == "file"
    assert fsync["duration_timed_calls"] == 1 and fsync["duration_ns_sum"] > 0
    writes = [r for r in rows(out, "fileio", work.pid) if r["op"] == "write" and r["file_kind"] == "file"]
    assert sum(r["bytes"] for r in writes) == 1 << 20
    data = [r for r in rows(out, "blockio", work.pid)
            if r["device"] == dev and r["op"] == "write" and not r["meta"]]
    # fsync writes the data in the writer's own context: direct.
    assert sum(r["bytes"] for r in data) == 1 << 20
    assert {r["attribution"] for r in data} == {"direct"}


def test_writeback_is_charged_to_the_process_that_dirtied_the_pages(out, loopfs):
    mnt, dev = loopfs
    path = mnt / "writeback.dat"
    work = Held("buffered", "--path", path, "--bytes", 2 << 20, "--hold-after", script=WORKLOADS / "fileio.py")
    scalp = Scalp(out, "--pid", work.pid).wait_ready()
    work.go()
    assert work.readline().startswith("done")
    # Someone else (an untraced sync) makes the flusher threads write the pages back.
    subprocess.run(["sync"], check=True)
    work.finish()
    assert scalp.wait() == 0
    data = [r for r in rows(out, "blockio", work.pid) if r["device"] == dev and r["op"] == "write" and not r["meta"]]
    assert sum(r["bytes"] for r in data if r["attribution"] == "writeback") == 2 << 20
    assert not [r for r in data if r["attribution"] == "direct"]


def test_the_gate_counts_what_the_process_wrote_not_when_the_flusher_wrote_it_back(tmp_path, loopfs):
    # The same 2 MiB of buffered writes three times: left dirty; written back by the flusher
    # (an untraced sync) during the run; written by the process's own fsync. `diff` gates
    # blockio.write_bytes on the third only: when a flusher gets to pages is the kernel's timing.
    mnt, dev = loopfs

    def traced(name, *flags, sync=False):
        work = Held("buffered", "--path", mnt / f"{name}.dat", "--bytes", 2 << 20, *flags, "--hold-after",
                    script=WORKLOADS / "fileio.py")
        scalp = Scalp(tmp_path / name, "--pid", work.pid, "--units", 1).wait_ready()
        work.go()
        assert work.readline().startswith("done")
        if sync:
            subprocess.run(["sync"], check=True)
        work.finish()
        assert scalp.wait() == 0
        return tmp_path / name, work.pid

    dirty, _ = traced("dirty")
    flushed, pid = traced("flushed", sync=True)
    synced, _ = traced("synced", "--fsync")
    assert sum(r["bytes"] for r in rows(flushed, "blockio", pid)
               if r["device"] == dev and r["attribution"] == "writeback" and not r["meta"]) == 2 << 20

    def gate(base, head):
        r = subprocess.run([SCALP, "diff", base, head, "--format", "json"], capture_output=True, text=True)
        assert r.returncode in (0, 1), r.stderr
        return r.returncode, {(x["metric"], x["key"].get("device")) for x in json.loads(r.stdout)["regressions"]}

    assert gate(dirty, flushed) == (0, set())
    assert gate(dirty, synced) == (1, {("blockio.write_bytes", dev)})


def test_reads_after_dropping_the_cache_are_block_reads_of_the_reader(out, loopfs):
    mnt, dev = loopfs
    path = mnt / "cold.dat"
    prepare(path, 1 << 20)
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("1\n")  # the page cache only: inodes and dentries stay, so only data is read
    work = Held("read", "--path", path, script=WORKLOADS / "fileio.py")
    scalp = Scalp(out, "--pid", work.pid).wait_ready()
    work.go()
    assert work.readline().strip() == f"read {1 << 20}"
    work.finish()
    assert scalp.wait() == 0
    data = [r for r in rows(out, "blockio", work.pid) if r["device"] == dev and r["op"] == "read" and not r["meta"]]
    assert sum(r["bytes"] for r in data) == 1 << 20
    assert {r["attribution"] for r in data} == {"direct"}


@pytest.fixture
def journaled(tmp_path):
    """A fresh ext4 with a journal on its own loop device, and its journal thread (jbd2)."""
    mnt = tmp_path / "journaled"
    with loop_ext4(tmp_path / "journaled.img", mnt, 64 << 20, journal=True, options=["lazytime"]) as dev:
        name = f"jbd2/{dev}-8"
        [jbd2] = [int(p) for p in os.listdir("/proc") if p.isdigit()
                  and open(f"/proc/{p}/comm").read().strip() == name]
        yield mnt, dev, jbd2


def test_a_kernel_thread_given_by_pid_is_traced_as_itself(out, journaled):
    """The journal thread of an ext4 (a kernel thread) given with --pid beside a writer that
    creates a file and fsyncs it: the journal's commit is the kernel thread's own direct writes,
    the file's data the writer's, and the two add up to what the device wrote."""
    mnt, dev, jbd2 = journaled
    subprocess.run(["sync"], check=True)
    work = Held("buffered", "--path", mnt / "new.dat", "--bytes", 64 << 10, "--fsync",
                script=WORKLOADS / "fileio.py")
    try:
        scalp = Scalp(out, "--pid", jbd2, "--pid", work.pid, "--tracers", "blockio",
                      "--interval", "200ms").wait_ready()
        before = disk_stat(dev)
        work.go()
        assert work.finish() == 0
        after = disk_stat(dev)
        assert scalp.stop() == 0, scalp.stderr
    finally:
        work.kill()
    journal = [r for r in rows(out, "blockio", jbd2) if r["device"] == dev]
    assert journal and {(r["op"], r["attribution"]) for r in journal} == {("write", "direct")}
    [p] = [p for p in rows(out, "processes") if p["process_pid"] == jbd2]
    assert p["process_name"].startswith("jbd2/")
    assert sums(out, work.pid, device=dev, op="write", attribution="direct")[1] == 64 << 10
    written = sum(r["requests"] for r in rows(out, "blockio") if r["device"] == dev and r["op"] == "write")
    assert written == after[2] - before[2], "the device saw writes nobody traced was charged with"
