#!/bin/busybox sh
# Init of the default interactive guest: a busybox shell on the console.
/bin/busybox mkdir -p /proc /sys /dev /tmp
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs dev /dev 2>/dev/null
/bin/busybox --install -s /bin
export PATH=/bin HOME=/ PS1='lkvm-guest:\w# '
echo "lkvm guest $(uname -m) $(uname -r), $(nproc) CPUs. Leave the shell to power off; Ctrl-A x quits lkvm."
setsid cttyhack sh
@END@
