#!/bin/busybox sh
# Initramfs for `lkvm sandbox` in the lab: Debian kernels build 9p as a
# module, so load it, mount the root lkvm shares over 9p (the kernel's
# root=/dev/root rootflags=... parameters name it), and hand over to the
# rootfs's own init (lkvm's, from `lkvm setup`).
/bin/busybox mkdir -p /proc /dev /newroot
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t devtmpfs dev /dev
for m in $(/bin/busybox cat /modules.order); do /bin/busybox insmod "/modules/$m" 2>/dev/null; done
if ! /bin/busybox mount -t 9p -o trans=virtio,version=9p2000.L,rw /dev/root /newroot; then
    echo "LKVM-SANDBOX-NOROOT"
    @END@
fi
/bin/busybox umount /dev
/bin/busybox umount /proc
exec /bin/busybox switch_root /newroot /virt/init
