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
# Prove console input end to end: the harness types a line into L1's
# console when it sees this prompt; lkvm must carry it to this UART.
# What the guest sees of its CPU (the ISA string on RISC-V), for checks of
# options such as --disable-<ext>.
echo "LKVM-L2-CPUINFO $(grep -m1 -E '^(isa|cpu|model name)[[:space:]]*:' /proc/cpuinfo)"
echo "LKVM-L2-ASK"
read -t 60 reply
echo "LKVM-L2-MARKER arch=$(uname -m) cpus=$(nproc) token=$token input=$reply uptime=$(cut -d' ' -f1 /proc/uptime)"
@END@
