/* 100000 writes to port 0x80, each one a VM exit to lkvm, then power off.
 * `make bench` divides the extra run time over the exits. */
    .include "pvh.inc"
    .set COUNT, 100000
    .globl _start
_start:
    mov $COUNT, %ecx
    mov $0x80, %dx
1:  out %al, %dx
    dec %ecx
    jnz 1b
    mov $msg, %esi
    call puts
    jmp poweroff
msg: .asciz "lkvm test guest: loop done\r\n"
