"""The BPF maps a process holds, read from the outside: which maps (its /proc/PID/fdinfo, so other
scalp-bpf instances running at the same time are never mixed in), their names, and how many
entries each hash map holds right now (the bpf syscall's GET_NEXT_KEY walk; bpftool's dump would
format every per-CPU value)."""
import ctypes
import mmap
import os
import platform
import struct

libc = ctypes.CDLL(None, use_errno=True)
SYS_BPF = {"x86_64": 321, "aarch64": 280}[platform.machine()]

BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_GET_NEXT_KEY = 4
BPF_MAP_GET_FD_BY_ID = 14
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_F_MMAPABLE = 1 << 10

HASH_TYPES = {1: "hash", 5: "percpu_hash", 9: "lru_hash", 10: "lru_percpu_hash"}


def _bpf(cmd, attr):
    buf = ctypes.create_string_buffer(bytes(attr).ljust(128, b"\0"), 128)
    r = libc.syscall(SYS_BPF, cmd, buf, 128)
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return r


def held_ids(pid):
    """(program ids, map ids) that a process holds open (its fds' /proc fdinfo); empty sets for a
    process that is gone."""
    progs, maps = set(), set()
    try:
        fds = os.listdir(f"/proc/{pid}/fdinfo")
    except OSError:
        return progs, maps
    for fd in fds:
        try:
            text = open(f"/proc/{pid}/fdinfo/{fd}").read()
        except OSError:
            continue
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key == "prog_id":
                progs.add(int(value))
            elif key == "map_id":
                maps.add(int(value))
    return progs, maps


class Map:
    def __init__(self, map_id):
        self.id = map_id
        self.fd = _bpf(BPF_MAP_GET_FD_BY_ID, struct.pack("=III", map_id, 0, 0))
        info = ctypes.create_string_buffer(88)
        _bpf(BPF_OBJ_GET_INFO_BY_FD, struct.pack("=IIQ", self.fd, 88, ctypes.addressof(info)))
        (self.type, _, self.key_size, self.value_size, self.max_entries, self.flags) = struct.unpack_from(
            "=6I", info.raw)
        self.name = info.raw[24:40].split(b"\0")[0].decode()

    def close(self):
        os.close(self.fd)

    def count(self):
        """Entries now (hash maps)."""
        key = ctypes.create_string_buffer(self.key_size)
        nxt = ctypes.create_string_buffer(self.key_size)
        n = 0
        first = True
        while True:
            attr = struct.pack("=IIQQ", self.fd, 0, 0 if first else ctypes.addressof(key), ctypes.addressof(nxt))
            try:
                _bpf(BPF_MAP_GET_NEXT_KEY, attr)
            except FileNotFoundError:
                return n
            n += 1
            first = False
            ctypes.memmove(key, nxt, self.key_size)

    def mapped_bytes(self):
        """All of an mmapable array's values, read through a mapping."""
        with mmap.mmap(self.fd, self.max_entries * self.value_size, mmap.MAP_SHARED, mmap.PROT_READ) as m:
            return m[:]

    def traced_bytes(self):
        """For the mmapped TRACED array: how many tgids have the traced bit set."""
        return sum(1 for b in self.mapped_bytes() if b & 1)


    def slot_tgids(self):
        """For an mmapped *_SLOTS array: {tgid: slots it holds} (a slot's first field is its key's
        tgid, 0 when free)."""
        data = self.mapped_bytes()
        held = {}
        for i in range(0, len(data), self.value_size):
            tgid = struct.unpack_from("=I", data, i)[0]
            if tgid:
                held[tgid] = held.get(tgid, 0) + 1
        return held


def possible_cpus():
    """How many CPUs the kernel may bring up (per-CPU maps hold one value for each)."""
    n = 0
    for part in open("/sys/devices/system/cpu/possible").read().strip().split(","):
        lo, _, hi = part.partition("-")
        n += int(hi or lo) - int(lo) + 1
    return n


class PerCpuCounters:
    """The u64 per-CPU array `name` that `pid` holds (a tracer's drop counters), read while
    scalp-bpf itself may be stopped."""

    def __init__(self, pid, name):
        self.map = None
        for map_id in held_ids(pid)[1]:
            m = Map(map_id)
            if m.name == name:
                self.map = m
                break
            m.close()
        assert self.map is not None, f"process {pid} holds no map {name}"
        assert self.map.type == 6 and self.map.value_size == 8, (name, self.map.type)  # PERCPU_ARRAY
        self.values = (ctypes.c_uint64 * possible_cpus())()

    def sum(self, index):
        key = ctypes.c_uint32(index)
        _bpf(BPF_MAP_LOOKUP_ELEM, struct.pack("=IIQQ", self.map.fd, 0, ctypes.addressof(key),
                                              ctypes.addressof(self.values)))
        return sum(self.values)

    def close(self):
        self.map.close()


def snapshot(pid):
    """{map name: entries} for the hash maps of `pid`, plus TRACED: the tgids marked traced, and
    the *_SLOTS arrays: the slots taken. A map that `pid` does not hold is absent, not 0."""
    out = {}
    for map_id in held_ids(pid)[1]:
        try:
            m = Map(map_id)
        except OSError as e:
            # Held a moment ago: gone only if the process let go of it (it exited).
            if map_id in held_ids(pid)[1]:
                raise AssertionError(f"cannot open map {map_id} of process {pid}: {e}") from e
            continue
        try:
            if m.type in HASH_TYPES:
                out[m.name] = m.count()
            elif m.name == "TRACED" and m.flags & BPF_F_MMAPABLE:
                out[m.name] = m.traced_bytes()
            elif m.name.endswith("_SLOTS") and m.flags & BPF_F_MMAPABLE:
                out[m.name] = sum(m.slot_tgids().values())
        finally:
            m.close()
    return out


def slot_tgids(pid):
    """{map name: {tgid: slots held}} for the *_SLOTS arrays of `pid`."""
    out = {}
    for map_id in held_ids(pid)[1]:
        m = Map(map_id)
        try:
            if m.name.endswith("_SLOTS") and m.flags & BPF_F_MMAPABLE:
                out[m.name] = m.slot_tgids()
        finally:
            m.close()
    return out


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")
