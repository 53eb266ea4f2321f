#!/bin/busybox sh
# L2 init of the boot lab: print the marker the harness checks, then end the
# guest. @END@ is filled in per architecture (x86 resets, others power off).
/bin/busybox mkdir -p /proc /sys /dev
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs dev /dev 2>/dev/null
/bin/busybox --install -s /bin
export PATH=/bin
token=$(sed -n 's/.*lkvm\.token=\([^[:space:]]*\).*/\1/p' /proc/cmdline)
# With --console virtio the console is an hvc that Debian kernels build as a
# module: the kernel found no console for init, so load the drivers and
# talk through the device once it is a console (/dev/hvcN may exist before
# that: PowerPC's hvterm creates the hvc nodes).
hvc=$(sed -n 's/.*console=\(hvc[0-9]*\).*/\1/p' /proc/cmdline)
if [ -n "$hvc" ] && ! grep -q "^$hvc " /proc/consoles; then
    for m in $(cat /modules.order); do insmod "/modules/$m" 2>/dev/null; done
    for i in 1 2 3 4 5 6 7 8 9 10; do grep -q "^$hvc " /proc/consoles && break; sleep 1; done
    exec <"/dev/$hvc" >"/dev/$hvc" 2>&1
fi
# The interface with MAC $1 (lkvm numbers its cards' MACs from
# 02:15:15:15:15:15 in -n order).
ifname() {
    for d in /sys/class/net/*; do
        [ "$(cat "$d/address" 2>/dev/null)" = "$1" ] && { echo "${d##*/}"; return; }
    done
}
# A lease from lkvm's DHCP server on interface $1 (udhcpc calls this
# script as /tmp/dhcp.sh bound|renew|deconfig).
dhcp() {
    cat > /tmp/dhcp.sh <<'SCRIPT'
#!/bin/sh
case "$1" in
bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
    ip route add default via "$router" dev "$interface"
    echo "nameserver $dns" > /etc/resolv.conf
    echo "LKVM-L2-LEASE ip=$ip mask=$mask router=$router dns=$dns lease=$lease"
    ;;
deconfig) ip link set "$interface" up ;;
esac
SCRIPT
    chmod +x /tmp/dhcp.sh
    ip link set "$1" up
    udhcpc -i "$1" -f -q -n -t 5 -T 2 -s /tmp/dhcp.sh >/dev/null 2>&1
}
# User-mode networking (the second card, -n mode=user): DHCP, HTTP from a
# server on L1's loopback through the gateway, a UDP exchange with L1, DNS
# through the gateway to L1's resolver, and a server here that L1 reaches
# through hostfwd (L1 fetches the token from it and says so over UDP).
usernet() {
    uif=$(ifname 02:15:15:15:15:16)
    if [ -z "$uif" ]; then
        echo "LKVM-L2-USERNET dhcp=none http=none udp=none dns=none fwd=none"
        return
    fi
    dhcp "$uif"
    addr=$(ip -4 addr show dev "$uif" | sed -n 's/.*inet \([0-9.]*\).*/\1/p' | head -n 1)
    http=$(wget -q -O - http://192.168.33.1:8080/known.bin | sha256sum | cut -d' ' -f1)
    udp=fail
    [ "$(/netprobe ask 192.168.33.1 7777 "udp-$token")" = "echo:udp-$token" ] && udp=ok
    dns=fail
    nslookup lkvm.test 192.168.33.1 2>/dev/null | grep -q '10.11.12.13' && dns=ok
    mkdir -p /www
    echo "$token" > /www/token
    httpd -p 80 -h /www
    fwd=fail
    for i in $(seq 1 60); do
        if [ "$(/netprobe ask 192.168.33.1 7777 'fwd?')" = "fwd:$token" ]; then fwd=ok; break; fi
        sleep 1
    done
    echo "LKVM-L2-USERNET dhcp=${addr:-none} http=${http:-none} udp=$udp dns=$dns fwd=$fwd"
}
# TCP throughput from here to L1 over the tap card and the user card
# (lkvm.netbench): 3 rounds of 8 MiB each way, timed by the guest's clock.
if grep -q 'lkvm\.netbench' /proc/cmdline; then
    for m in $(cat /modules.order); do insmod "/modules/$m" 2>/dev/null; done
    tapif=$(ifname 02:15:15:15:15:15)
    ip addr add 10.0.2.15/24 dev "$tapif"
    ip link set "$tapif" up
    dhcp "$(ifname 02:15:15:15:15:16)"
    for i in $(seq 1 30); do ping -c 1 -W 1 10.0.2.1 >/dev/null 2>&1 && break; done
    for round in 1 2 3; do
        echo "LKVM-L2-NETBENCH via=user $(/netprobe send 192.168.33.1 9000 8)"
        echo "LKVM-L2-NETBENCH via=tap $(/netprobe send 10.0.2.1 9000 8)"
    done
fi
# Sequential read of the 64 MiB benchmark disk, timed by the guest's clock.
if grep -q 'lkvm\.bench' /proc/cmdline; then
    for m in $(cat /modules.order); do insmod "/modules/$m" 2>/dev/null; done
    t0=$(cut -d' ' -f1 /proc/uptime)
    n=$(dd if=/dev/vda bs=1M 2>/dev/null | wc -c)
    t1=$(cut -d' ' -f1 /proc/uptime)
    echo "LKVM-L2-BLKREAD bytes=$n seconds=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')"
fi
# Virtio checks (lkvm.virtio on the command line; L1 passes -d, --9p, --rng):
# entropy from virtio-rng, a known file on the virtio-blk ext2 image and a
# written one (the harness reads it back from the image after lkvm exits),
# and a read and a write through the 9p share.
if grep -q 'lkvm\.virtio' /proc/cmdline; then
    for m in $(cat /modules.order); do insmod "/modules/$m" 2>/dev/null; done
    rng=$(dd if=/dev/hwrng bs=64 count=1 2>/dev/null | wc -c)
    mkdir -p /mnt /share
    blk=none
    if mount -t ext2 /dev/vda /mnt; then
        blk=$(sha256sum /mnt/known.bin | cut -d' ' -f1)
        echo "$token" > /mnt/written.txt
        sync
        umount /mnt
    fi
    p9=none
    if mount -t 9p -o trans=virtio,version=9p2000.L lkvmshare /share; then
        p9=$(cat /share/hello.txt)
        echo "$token" > /share/from-l2.txt
        umount /share
    fi
    net=none
    tapif=$(ifname 02:15:15:15:15:15)
    if [ -n "$tapif" ]; then
        ip addr add 10.0.2.15/24 dev "$tapif"
        ip link set "$tapif" up
        net=fail
        for i in 1 2 3 4 5; do
            if ping -c 1 -W 3 10.0.2.1 >/dev/null 2>&1; then net=ok; break; fi
        done
    fi
    echo "LKVM-L2-VIRTIO rng=$rng blk=$blk 9p=$p9 net=$net"
    usernet
    # How the devices interrupt (MSI-X vectors or a wired line), for checks.
    echo "LKVM-L2-IRQS $(grep virtio /proc/interrupts | tr -s ' ' | cut -d' ' -f$(( $(nproc) + 3 ))- | tr '\n' ';')"
fi
# Prove console input end to end: the harness types a line into L1's
# console when it sees this prompt; lkvm must carry it to this UART.
# What the guest sees of its CPU (the ISA string on RISC-V), for checks of
# options such as --disable-<ext>.
echo "LKVM-L2-CPUINFO $(grep -m1 -E '^(isa|cpu|model name)[[:space:]]*:' /proc/cpuinfo)"
echo "LKVM-L2-ASK"
read -t 60 reply
echo "LKVM-L2-MARKER arch=$(uname -m) cpus=$(nproc) token=$token input=$reply uptime=$(cut -d' ' -f1 /proc/uptime)"
@END@
