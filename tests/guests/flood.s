/* Writes port 0x510, where no device is, 100000 times, then powers off:
 * a guest flooding lkvm with accesses it logs. */
    .include "pvh.inc"
    .globl _start
_start:
    mov $0x510, %dx
    mov $100000, %ecx
1:  out %al, %dx
    dec %ecx
    jnz 1b
    jmp poweroff
