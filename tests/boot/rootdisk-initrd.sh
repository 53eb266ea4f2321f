#!/bin/busybox sh
# Initramfs of the lab's disk-root boot: a generic module loader, as a
# distribution's would be. It mounts whatever root= the kernel command line
# names (lkvm adds root=/dev/vda rw for a first disk) and hands over to its
# /sbin/init. Nothing here names /dev/vda.
/bin/busybox --install -s /bin 2>/dev/null
export PATH=/bin
/bin/busybox mkdir -p /proc /dev /newroot
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t devtmpfs dev /dev
for m in $(/bin/busybox cat /modules.order); do /bin/busybox insmod "/modules/$m" 2>/dev/null; done
root=$(/bin/busybox sed -n 's/.*[[:space:]]root=\([^[:space:]]*\).*/\1/p' /proc/cmdline)
mode=ro
/bin/busybox grep -qw rw /proc/cmdline && mode=rw
if [ -z "$root" ] || ! /bin/busybox mount -t ext4 -o "$mode" "$root" /newroot; then
    echo "LKVM-ROOTDISK-NOROOT root=$root"
    @END@
fi
/bin/busybox umount /dev
/bin/busybox umount /proc
exec /bin/busybox switch_root /newroot /sbin/init
