#!/bin/busybox sh
# PID 1 of the kernel-matrix VM (xtask/src/vm/): mounts what scalp-bpf reads, loads the disk
# modules, runs each check of /vm/plan.sh under `scalp-bpf run`, and writes everything it
# collected as a tar archive onto the results disk (/dev/vdc), which the host unpacks and checks.
# Progress goes to the serial console as "SCALP-VM <event> <uptime>" lines the host times.
# Every step that fails is recorded in /results/errors; the guest always powers off.

/bin/busybox --install -s /bin
export PATH=/bin
R=/results

mark() { echo "SCALP-VM $* $(cut -d' ' -f1 /proc/uptime)"; }
fail() { echo "$*" >> $R/errors; echo "SCALP-VM error: $*"; }

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p $R /tmp /mnt
mount -t tmpfs tmpfs /tmp
mark init
: > $R/errors

for m in /vm/modules/*.ko; do
    insmod "$m" 2>> $R/errors || fail "insmod $m failed"
done
# No periodic writeback: what one check dirties stays dirty until a sync (or fsync) writes it.
# The checks then do not depend on where a 30 s expiry falls, and the writeback check always
# meets the first condition of issue 17: the metadata pages the fileio check dirtied are still
# dirty when the workload changes them again, so the block device's inode gets no dirtier from
# the workload (tests/vm/FINDINGS.md).
echo 360000 > /proc/sys/vm/dirty_expire_centisecs || fail "cannot set vm.dirty_expire_centisecs"
mount -t tracefs tracefs /sys/kernel/tracing || fail "cannot mount tracefs"
mount -t debugfs debugfs /sys/kernel/debug || fail "cannot mount debugfs"
mount -t ext4 -o lazytime /dev/vda /mnt 2>> $R/errors || fail "cannot mount /dev/vda (ext4)"
ip link set lo up || fail "cannot bring up lo"
mark modules

uname -r > $R/uname
cat /proc/version > $R/version
cat /proc/cmdline > $R/cmdline
ls /sys/block > $R/block_devices
cat /sys/kernel/tracing/available_events > $R/available_events 2>/dev/null
# For the kernel probe's design: the kernel's BTF (tracepoint prototypes: btf_trace_<name>) and
# the formats of the block and writeback events.
cp /sys/kernel/btf/vmlinux $R/btf_vmlinux || fail "no /sys/kernel/btf/vmlinux"
for f in /sys/kernel/tracing/events/block/*/format /sys/kernel/tracing/events/writeback/*/format; do
    e=${f%/format}
    echo "== ${e#/sys/kernel/tracing/events/}"
    cat "$f"
done > $R/event_formats 2>/dev/null
ulimit -l > $R/memlock

# ftrace_on: records the events of $FTRACE (xtask's --guest-ftrace) from now on; each check keeps
# what was recorded before it (trace_before) and during it (trace).
T=/sys/kernel/tracing
ftrace_on() {
    echo 4096 > $T/buffer_size_kb || fail "ftrace: buffer_size_kb refused"
    for e in $FTRACE; do
        echo "$e" >> $T/set_event || fail "ftrace: no event $e"
    done
    : > $T/trace
    echo 1 > $T/tracing_on
}
ftrace_save() {
    [ -n "$FTRACE" ] || return 0
    cat $T/trace > "$1"
    : > $T/trace
}

# check NAME [--disk DEV] [--exit CODE] -- WORKLOAD...: one `scalp-bpf run` of WORKLOAD, its exit
# code, stdout and stderr, its output directory, and DEV's /sys/block stat around it.
check() {
    name=$1
    shift
    disk=
    while [ "$1" != "--" ]; do
        case $1 in
            --disk) disk=$2; shift 2 ;;
            *) fail "check $name: bad option $1"; return ;;
        esac
    done
    shift
    d=$R/$name
    mkdir -p $d
    [ -n "$disk" ] && cat /sys/block/$disk/stat > $d/stat_before
    ftrace_save $d/trace_before
    mark "check $name start"
    # shellcheck disable=SC2086 # SCALP_GLOBAL and SCALP_ARGS are word lists on purpose
    timeout -s KILL $CHECK_TIMEOUT /vm/scalp-bpf $SCALP_GLOBAL run --output $d/out $SCALP_ARGS -- "$@" \
        > $d/stdout 2> $d/stderr
    echo $? > $d/exit
    ftrace_save $d/trace
    [ -n "$disk" ] && cat /sys/block/$disk/stat > $d/stat_after
    mark "check $name end exit=$(cat $d/exit)"
    # A short view on the console; the whole stderr (verifier logs included) is in the results.
    tail -n 15 $d/stderr | sed "s/^/SCALP-VM stderr $name: /"
}

# support: what `scalp-bpf check` says about this kernel, as JSON and as the table, with the exit
# codes; the table also goes to the console.
support() {
    d=$R/support
    mkdir -p $d
    mark "support start"
    # shellcheck disable=SC2086 # SCALP_GLOBAL is a word list on purpose
    timeout -s KILL $CHECK_TIMEOUT /vm/scalp-bpf $SCALP_GLOBAL check --format json \
        > $d/check.json 2> $d/check.json.stderr
    echo $? > $d/json_exit
    timeout -s KILL $CHECK_TIMEOUT /vm/scalp-bpf check > $d/check.txt 2> $d/check.txt.stderr
    echo $? > $d/table_exit
    mark "support end exit=$(cat $d/json_exit)"
    sed "s/^/SCALP-VM check: /" $d/check.txt
}

# The writeback check: the workload dirties pages and waits; an untraced sync here makes the
# flusher threads write them back while the workload is still traced.
# $1: the check, whose end (a failed start) also ends the wait.
writeback_sync() {
    while [ ! -e /tmp/written ] && [ ! -e $R/$1/exit ]; do sleep 0.05; done
    sync
    touch /tmp/synced
}

. /vm/plan.sh

dmesg > $R/dmesg
mark done
cd $R && tar -cf /dev/vdc . || echo "SCALP-VM error: cannot write the results disk"
sync
mark poweroff
poweroff -f
