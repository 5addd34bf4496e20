"""Turns a strace of a client into a parser test fixture: what each of its connections to a
server sent and received, one syscall a line.

    strace -f -ttt -yy -xx -s 65535 -e trace=network,read,write,readv,writev,clone,clone3,fork,vfork \
        -o trace.txt CMD...
    python3 strace2fixture.py trace.txt --port 5672 [--unix /path/server.sock] > fixture.txt

Output: `# conn <n>: process <tgid> <endpoint>` per connection, then
`<conn> <S|R> <time ns> <bytes moved> <hex of the bytes>` per syscall that moved bytes, in the
trace's order. Times are the syscall's return as strace saw it (the resumed line for a call that
blocked), to the microsecond.
"""
import argparse
import re

LINE = re.compile(r"^(\d+) +(\d+)\.(\d+) (.*)$")
# The descriptor's annotation (-yy) holds "->" for TCP, so it is matched up to its "]>".
CALL = re.compile(r"^(sendto|recvfrom|sendmsg|recvmsg|read|write|writev|readv)"
                  r"\((\d+)<((?:TCP|TCPv6|UNIX-STREAM):\[[^\]]*\])>, (.*)\) += (-?\d+)")
CONNECT = re.compile(r'^connect\(\d+<(UNIX-STREAM:\[\d+\])>, \{sa_family=AF_UNIX, sun_path="([^"]*)"')
CLONE = re.compile(r"^(clone3?|fork|vfork)\((.*)\) += (\d+)")
SENDS = {"sendto", "sendmsg", "write", "writev"}


def unescape(s):
    """strace -xx strings: every byte as \\xNN (some strace versions leave paths plain)."""
    if "\\x" not in s:
        return s.encode()
    return bytes.fromhex(s.replace("\\x", ""))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("trace")
    p.add_argument("--port", type=int)
    p.add_argument("--unix", help="the server's socket path")
    a = p.parse_args()
    unfinished, tgid, conns, out = {}, {}, {}, []
    unix_endpoints = set()
    for raw in open(a.trace, errors="replace"):
        m = LINE.match(raw.rstrip("\n"))
        if not m:
            continue
        pid, sec, usec, rest = m.groups()
        t = int(sec) * 10**9 + int(usec.ljust(6, "0")[:6]) * 1000
        if rest.endswith("<unfinished ...>"):
            unfinished[pid] = rest[: -len("<unfinished ...>")]
            continue
        r = re.match(r"^<\.\.\. \w+ resumed>(.*)$", rest)
        if r:
            if pid not in unfinished:
                continue
            rest = unfinished.pop(pid) + r.group(1)
        c = CLONE.match(rest)
        if c:
            tgid[c.group(3)] = tgid.get(pid, pid) if "CLONE_THREAD" in c.group(2) else c.group(3)
            continue
        c = CONNECT.match(rest)
        if c and a.unix and unescape(c.group(2)).decode(errors="replace") == a.unix:
            unix_endpoints.add(c.group(1))
            continue
        c = CALL.match(rest)
        if not c:
            continue
        name, _fd, info, args, ret = c.groups()
        if info.startswith("UNIX"):
            # Once connected the annotation names the peer too: [ours->peer].
            endpoint = info.split("->")[0] + ("]" if "->" in info else "")
            if endpoint not in unix_endpoints:
                continue
        else:
            if a.port is None or not info.endswith(f":{a.port}]"):
                continue
            endpoint = info.split("[", 1)[1].split("->")[0]
        ret = int(ret)
        if ret <= 0:
            continue
        process = tgid.get(pid, pid)
        conn = conns.setdefault((process, endpoint), len(conns))
        data = b"".join(unescape(s) for s in re.findall(r'"((?:\\x[0-9a-f]{2})*)"', args))[:ret]
        out.append(f"{conn} {'S' if name in SENDS else 'R'} {t} {ret} {data.hex()}")
    for (process, endpoint), n in conns.items():
        print(f"# conn {n}: process {process} {endpoint}")
    print("\n".join(out))


if __name__ == "__main__":
    main()
