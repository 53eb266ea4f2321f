#!/bin/busybox sh
# /sbin/init on the lab's ext4 root disk: report what the guest booted
# from (the kernel's root= and what / is mounted from), then end.
/bin/busybox --install -s /bin 2>/dev/null
export PATH=/bin
/bin/busybox mount -t proc proc /proc
token=$(/bin/busybox sed -n 's/.*lkvm\.token=\([^[:space:]]*\).*/\1/p' /proc/cmdline)
root=$(/bin/busybox sed -n 's/.*[[:space:]]root=\([^[:space:]]*\).*/\1/p' /proc/cmdline)
mounted=$(/bin/busybox awk '$2 == "/" && $1 != "rootfs" { print $1 ":" $3 ":" substr($4, 1, 2) }' /proc/mounts | /bin/busybox tail -n 1)
echo "LKVM-ROOTDISK root=$root mounted=$mounted token=$token arch=$(/bin/busybox uname -m)"
@END@
