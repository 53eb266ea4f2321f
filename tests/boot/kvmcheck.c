/*
 * Is KVM usable here? /dev/kvm existing is not enough (on ppc64le it appears
 * as soon as kvm.ko loads, even with no working backend), so create a VM and
 * a vCPU. Built statically for each architecture by the boot lab.
 */
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <string.h>
#include <errno.h>
#include <sys/ioctl.h>
#include <unistd.h>

int main(void)
{
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0) {
        printf("kvmcheck: cannot open /dev/kvm: %s\n", strerror(errno));
        return 1;
    }
    int api = ioctl(kvm, KVM_GET_API_VERSION, 0);
    int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    if (vm < 0) {
        printf("kvmcheck: KVM_CREATE_VM failed: %s\n", strerror(errno));
        return 1;
    }
    int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
    if (vcpu < 0) {
        printf("kvmcheck: KVM_CREATE_VCPU failed: %s\n", strerror(errno));
        return 1;
    }
    printf("kvmcheck: KVM API %d, VM and vCPU created\n", api);
    return 0;
}
