"""Nothing stays in the kernel after any exit: checked around every test (conftest's autouse
fixture `nothing_left_in_the_kernel`): whatever way each scalp-bpf the test started ended
(SIGINT, SIGTERM, its command's exit, a failed load, bad input, kill -9), none of its programs or
maps is still loaded afterwards, none was pinned, and no other process — the traced command
first — ever held one of them.

How: while the test runs, a thread notes the BPF objects every scalp-bpf process descended from
this pytest holds (their /proc fdinfo) and looks at the descriptors of those processes'
children. After the test, bpftool must no longer list any object noted, nor any program or map
with one of scalp-bpf's names that appeared during the test and that no process holds (a run too
short to be sampled, or an object pinned in bpffs, which no process needs to hold)."""
import json
import os
import re
import subprocess
import threading
import time

from bpfmaps import held_ids

BPF_LINK_TARGETS = ("anon_inode:bpf-map", "anon_inode:bpf-prog")


def kernel_names(ebpf_src):
    """(program names, map names) of scalp-bpf's kernel object, as the kernel shows them (cut to
    15 characters), from the sources in tracer-ebpf/src."""
    progs, maps = set(), set()
    for src in ebpf_src.rglob("*.rs"):
        text = src.read_text()
        for m in re.finditer(r"#\[(?:btf_tracepoint|tracepoint|raw_tracepoint|tp_btf)\b[^\]]*\]\s*"
                             r"(?:pub\s+)?fn\s+(\w+)", text):
            progs.add(m.group(1)[:15])
        for m in re.finditer(r"#\[map\]\s*(?:pub(?:\([^)]*\))?\s+)?static\s+(\w+)", text):
            maps.add(m.group(1)[:15])
    assert {"sys_enter", "sys_exit"} <= progs and {"SYSCALL_STATS", "TRACED"} <= maps, (progs, maps)
    return progs, maps


def loaded():
    """({prog id: name}, {map id: name}, map ids used by loaded programs), from bpftool."""
    def show(kind):
        r = subprocess.run(["bpftool", kind, "show", "--json"], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout or "[]")
    progs = show("prog")
    maps = show("map")
    used = {m for p in progs for m in p.get("map_ids", [])}
    return {p["id"]: p.get("name", "") for p in progs}, {m["id"]: m.get("name", "") for m in maps}, used


def children(pid):
    """Direct children of a process (every thread's children file)."""
    out = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            out += [int(c) for c in open(f"/proc/{pid}/task/{tid}/children").read().split()]
        except OSError:
            continue
    return out


def exe(pid):
    try:
        return os.readlink(f"/proc/{pid}/exe").removesuffix(" (deleted)")
    except OSError:
        return None


def bpf_fds(pid):
    """True when the process holds a BPF map or program descriptor (readlink only: cheap)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") in BPF_LINK_TARGETS:
                return True
        except OSError:
            continue
    return False


def holders():
    """Every (prog ids, map ids) some process holds now."""
    progs, maps = set(), set()
    for pid in os.listdir("/proc"):
        if pid.isdigit() and bpf_fds(pid):
            p, m = held_ids(pid)
            progs |= p
            maps |= m
    return progs, maps


class Watch:
    """Follows the scalp-bpf processes (binary `scalp`) that descend from this process."""

    def __init__(self, scalp, names, period=0.05):
        self.scalp = os.path.realpath(scalp)
        self.prog_names, self.map_names = names
        progs, maps, _ = loaded()
        self.before_progs, self.before_maps = set(progs), set(maps)
        self.progs, self.maps = set(), set()
        self.scalps = set()
        self.seen_fds = set()
        # (pid, exe) of a non-scalp-bpf process seen holding scalp-bpf's objects, once; a second
        # sighting makes it a leak (the first may be a child between exec and close-on-exec).
        self.suspect_children = {}
        self.leaked_to_children = []
        self.period = period
        # Processes outside this pytest's tree whose descendants are followed too (a scalp-bpf
        # started in a tmux, whose server is not a child of the test).
        self.roots = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self):
        while not self.stopping.is_set():
            self.sample()
            self.stopping.wait(self.period)

    def follow(self, pid):
        """Also follows `pid` and its descendants."""
        self.roots.append(pid)
        self.sample()

    def sample(self):
        stack = children(os.getpid()) + list(self.roots)
        while stack:
            pid = stack.pop()
            kids = children(pid)
            if exe(pid) == self.scalp:
                self.scalps.add(pid)
                self._note_fds(pid)
                self._check_children(kids)
            stack += kids

    def _note_fds(self, pid):
        """Notes the BPF objects behind the BPF descriptors of `pid` not seen yet (their fdinfo is
        read once: the sampling must not load the machine)."""
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            return
        for fd in fds:
            if (pid, fd) in self.seen_fds:
                continue
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") not in BPF_LINK_TARGETS:
                    continue
                info = open(f"/proc/{pid}/fdinfo/{fd}").read()
            except OSError:
                continue
            self.seen_fds.add((pid, fd))
            for line in info.splitlines():
                key, _, value = line.partition(":")
                if key == "prog_id":
                    self.progs.add(int(value))
                elif key == "map_id":
                    self.maps.add(int(value))

    def _check_children(self, kids):
        """Descendants of a scalp-bpf that are not scalp-bpf (the traced command) hold none of
        its objects."""
        stack = list(kids)
        while stack:
            pid = stack.pop()
            stack += children(pid)
            binary = exe(pid)
            if binary is None or binary == self.scalp or not bpf_fds(pid):
                continue
            progs, maps = held_ids(pid)
            mine = (progs & self.progs) | (maps & self.maps)
            if not mine:
                continue
            key = (pid, binary)
            if key in self.suspect_children:
                self.leaked_to_children.append(f"PID {pid} ({binary}) holds BPF objects {sorted(mine)}")
            else:
                self.suspect_children[key] = mine

    def stop(self):
        self.stopping.set()
        self.thread.join()
        self.sample()

    def still_running(self):
        """Our scalp-bpf processes that have not exited yet."""
        return [pid for pid in self.scalps if exe(pid) == self.scalp]

    def check(self, timeout=10):
        """Raises AssertionError naming what stays loaded `timeout` s after the test."""
        assert not self.leaked_to_children, (
            "scalp-bpf's kernel objects leaked to a process it started: " + "; ".join(self.leaked_to_children))
        deadline = time.monotonic() + timeout
        while True:
            progs, maps, used = loaded()
            left_progs = {i: progs[i] for i in self.progs & progs.keys()}
            left_maps = {i: maps[i] for i in self.maps & maps.keys()}
            new_progs = {i: n for i, n in progs.items() if i not in self.before_progs and n in self.prog_names}
            new_maps = {i: n for i, n in maps.items()
                        if i not in self.before_maps and n in self.map_names and i not in used}
            orphans = {}
            if new_progs or new_maps:
                # Objects of another scalp-bpf running meanwhile (another test session) are held
                # by it; ours, once the test is over, by nobody.
                held_progs, held_maps = holders()
                orphans = {**{f"prog {i}": n for i, n in new_progs.items() if i not in held_progs},
                           **{f"map {i}": n for i, n in new_maps.items() if i not in held_maps}}
            if not left_progs and not left_maps and not orphans:
                return
            if time.monotonic() > deadline:
                pinned = subprocess.run(["find", "/sys/fs/bpf", "-mindepth", "1"], capture_output=True,
                                        text=True).stdout.split()
                raise AssertionError(
                    f"still loaded {timeout} s after the test's scalp-bpf runs ended: programs {left_progs}, "
                    f"maps {left_maps}, held by no process: {orphans}; pinned in /sys/fs/bpf: {pinned}")
            time.sleep(0.1)
