#!/bin/busybox sh
# L1 init of the boot lab: load KVM, prove it works, run lkvm on the L2
# kernel, report lkvm's exit status, power off. Parameters come from the L1
# kernel command line (lkvm.cpus, lkvm.mem, lkvm.token, lkvm.extra, lkvm.mode).
/bin/busybox mkdir -p /proc /sys /dev /tmp
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs dev /dev
/bin/busybox --install -s /bin
export PATH=/bin

arg() { sed -n "s/.*[[:space:]]$1=\([^[:space:]]*\).*/\1/p" /proc/cmdline; }
echo "LKVM-L1-BOOTED"
for m in $(cat /modules.order 2>/dev/null); do
    insmod "/modules/$m" || echo "LKVM-L1: insmod $m failed"
done
if ! /kvmcheck; then
    echo "LKVM-L1-NOKVM"
    poweroff -f
fi
# From here on the console carries L2's output and the lines the harness
# parses, and an L1 kernel message written into the middle of one breaks it
# (seen: "hrtimer: interrupt took ..." glued to the 9p line). L1's messages
# stay in its log: the watchdog and the end of the run print them. Oopses
# and panics still reach the console (the kernel turns it verbose for them).
kmsg_from=$(dmesg | wc -l)
echo 1 > /proc/sys/kernel/printk
l1_kmsg() {
    dmesg | tail -n +$((kmsg_from + 1)) | tail -n 40 | sed 's/^/LKVM-L1-KMSG /'
}
# Where L1's kernel text and modules are (KASLR moves them), so the lab can
# name the code an L1 CPU sits in when a boot times out.
text=$(awk '$3 == "_text" { s = $1 } $3 == "_etext" { print "vmlinux=0x" s "-0x" $1; exit }' \
    /proc/kallsyms)
echo "LKVM-L1-TEXT $text $(awk '{ printf "%s=%s+%s ", $1, $6, $2 }' /proc/modules)"
echo "LKVM-L1-READY"

cpus=$(arg lkvm.cpus); mem=$(arg lkvm.mem); token=$(arg lkvm.token)
extra=$(arg lkvm.extra | tr ',' ' '); mode=$(arg lkvm.mode)
if [ "$mode" = sandbox ]; then
    # lkvm sandbox sets up the default rootfs (~/.lkvm/default) and runs
    # the command in it; its exit status must come back.
    echo "LKVM-START lkvm sandbox -- sh -c 'uname -m; exit 3'"
    /lkvm sandbox -k /l2/kernel -i /l2/initrd-sandbox.cpio.gz -c "$cpus" -m "$mem" $extra \
        -p "$(cat /l2/params)" -- sh -c 'uname -m; exit 3'
    rc=$?
    l1_kmsg
    echo "LKVM-EXIT rc=$rc"
    poweroff -f
fi
if [ "$mode" = kut ]; then
    # kvm-unit-tests (tests/boot/kut.py): /kut/cases.sh calls run_case
    # once per case. Each case's output sits between its own begin and
    # end lines, the end line on a line of its own with lkvm's status;
    # `timeout` bounds it as upstream's timeout_cmd does.
    run_case() {
        name=$1 secs=$2
        shift 2
        echo "LKVM-KUT-BEGIN $name"
        timeout -k 1 "$secs" "$@" </dev/null
        rc=$?
        echo
        echo "LKVM-KUT-END $name rc=$rc"
    }
    . /kut/cases.sh
    echo "LKVM-KUT-DONE"
    l1_kmsg
    echo "LKVM-EXIT rc=0"
    poweroff -f
fi
if [ "$mode" = compat ]; then
    # kvmtool's workflows, unchanged (tests/boot/compat.py): each stage
    # between its own begin and end lines, the end line with lkvm's status.
    params="$(cat /l2/params)"
    stage() { echo "LKVM-COMPAT-BEGIN $1"; }
    done_() { rc=$?; echo; echo "LKVM-COMPAT-END $1 rc=$rc"; }
    # The kernel as run's first argument; the first disk is the root
    # (lkvm adds root=/dev/vda rw); the initrd only loads modules and
    # mounts whatever root= says.
    stage rootdisk
    /lkvm run /l2/kernel -i /l2/initrd-rootdisk.cpio.gz -d /l2/root.img -c "$cpus" \
        -m "$mem" -p "$params lkvm.token=$(arg lkvm.token)"
    done_ rootdisk
    # Neither disk nor initrd: the default rootfs with the host's / at
    # /host; lkvm finds this kernel's modules under /lib/modules. The lab
    # types a line into its shell.
    stage defaultrootfs
    /lkvm run -k /l2/kernel -c "$cpus" -m "$mem" -p "$params"
    done_ defaultrootfs
    # kvmtool's sandbox form: a host program from the working directory.
    mkdir -p /work && cp /hostprog /work/prog && cd /work
    stage sandbox-prog
    /lkvm sandbox -k /l2/kernel -c "$cpus" -m "$mem" -p "$params" ./prog "$(arg lkvm.token3)" 7
    done_ sandbox-prog
    cd /
    stage sandbox-dashes
    /lkvm sandbox -k /l2/kernel -i /l2/initrd-sandbox.cpio.gz -c "$cpus" -m "$mem" \
        -p "$params" -- sh -c 'uname -m; exit 3'
    done_ sandbox-dashes
    l1_kmsg
    echo "LKVM-EXIT rc=0"
    poweroff -f
fi
initrd=/l2/initrd-test.cpio.gz
[ "$mode" = shell ] && initrd=/l2/initrd-shell.cpio.gz
params="$(cat /l2/params) $(arg lkvm.kparams | tr ',' ' ') lkvm.token=$token"
virtio=$(arg lkvm.virtio)
# Cases that use virtio drivers get the L2 initramfs that carries them.
case "$virtio$(arg lkvm.bench) $extra" in
    1*|*virtio*) [ "$mode" = shell ] || initrd=/l2/initrd-virtio.cpio.gz ;;
esac
# lkvm creates the tap; give L1's end an address once it exists, so L2
# can reach L1 through virtio-net on it.
tap_address() {
    (
        for i in $(seq 1 600); do [ -e /sys/class/net/lkvmtap0 ] && break; usleep 100000; done
        ip addr add 10.0.2.1/24 dev lkvmtap0
        ip link set lkvmtap0 up
    ) &
}
# What L2 reaches through its user-mode card: the gateway 192.168.33.1 is
# L1's loopback (an HTTP server with known.bin, a UDP responder), DNS goes
# to L1's resolver (a responder on 127.0.0.1:53 that answers 10.11.12.13),
# and L1 fetches L2's token through hostfwd (127.0.0.1:5555 to L2's port
# 80), which L2 learns back over UDP. No tap, no root networking: only lo.
user_servers() {
    ip link set lo up
    mkdir -p /etc
    echo "nameserver 127.0.0.1" > /etc/resolv.conf
    httpd -p 127.0.0.1:8080 -h /www
    /netprobe serve-udp 7777 &
    /netprobe serve-udp 53 &
    (
        for i in $(seq 1 300); do
            if timeout 5 wget -q -O /tmp/hf.part http://127.0.0.1:5555/token 2>/dev/null &&
                [ -s /tmp/hf.part ]; then
                # Said after lkvm exits: a line printed now could land in
                # the middle of one of L2's.
                mv /tmp/hf.part /tmp/hostfwd.txt
                break
            fi
            sleep 1
        done
    ) &
}
if [ -n "$virtio" ]; then
    extra="$extra -d /l2/disk.img --9p /share,lkvmshare --rng -n mode=tap,tapif=lkvmtap0"
    extra="$extra -n mode=user,hostfwd=tcp:127.0.0.1:5555-:80"
    params="$params lkvm.virtio=1"
    tap_address
    user_servers
fi
if [ -n "$(arg lkvm.netbench)" ]; then
    # TCP throughput from L2 to L1 over a tap and over user networking.
    initrd=/l2/initrd-virtio.cpio.gz
    extra="$extra -n mode=tap,tapif=lkvmtap0 -n mode=user"
    params="$params lkvm.netbench=1"
    tap_address
    ip link set lo up
    /netprobe sink 9000 &
fi
if [ -n "$(arg lkvm.bench)" ]; then
    # Sequential-read benchmark: a 64 MiB image for L2's /dev/vda.
    dd if=/dev/zero of=/tmp/bench.img bs=1M count=64 2>/dev/null
    extra="$extra -d /tmp/bench.img"
    params="$params lkvm.bench=1"
fi
watchdog=
if [ "$mode" = test ]; then
    # A hung L2 says little on its console; lkvm's own view of its vCPUs
    # (registers, memory map) says where it hangs. Printed once, well
    # before the harness gives up.
    after=$(arg lkvm.dump_after)
    (
        sleep "${after:-200}"
        echo "LKVM-L1-WATCHDOG: L2 still runs after ${after:-200} s; lkvm debug --dump:"
        /lkvm debug -n lab-l2 --dump
        l1_kmsg
    ) &
    watchdog=$!
fi
echo "LKVM-START $(arg lkvm.vmm) lkvm run --name lab-l2 -k /l2/kernel -i $initrd -c $cpus -m $mem $extra -p \"$params\""
# lkvm.vmm=kvmtool: the reference VMM instead of lkvm (lab.py ab).
vmm=/lkvm
[ "$(arg lkvm.vmm)" = kvmtool ] && vmm=/kvmtool
$vmm run --name lab-l2 -k /l2/kernel -i "$initrd" -c "$cpus" -m "$mem" $extra -p "$params"
rc=$?
[ -n "$watchdog" ] && kill "$watchdog" 2>/dev/null
if [ -n "$virtio" ]; then
    # What L2 left behind, for the harness: the file it wrote through 9p,
    # and the disk image (gzip, base64) to read back with debugfs.
    echo "LKVM-L1-9P $(cat /share/from-l2.txt 2>/dev/null)"
    echo "LKVM-L1-HOSTFWD $(cat /tmp/hostfwd.txt 2>/dev/null)"
    # The checksum tells a dump damaged on the way from a disk lkvm wrote
    # wrongly.
    echo "LKVM-L1-DISK-SHA256 $(sha256sum < /l2/disk.img)"
    echo "LKVM-L1-DISK-BEGIN"
    gzip -c /l2/disk.img | base64
    echo "LKVM-L1-DISK-END"
fi
l1_kmsg
echo "LKVM-EXIT rc=$rc"
poweroff -f
