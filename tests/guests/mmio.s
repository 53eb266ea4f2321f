/* Writes and reads an unmapped MMIO address in the PCI hole (nothing is
 * there: writes are dropped, reads return zero), reports what it read,
 * then powers off. */
    .include "pvh.inc"
    .set HOLE, 0xd0000000
    .globl _start
_start:
    movl $0x11223344, HOLE
    movl HOLE, %eax
    test %eax, %eax
    jnz 1f
    mov $zero, %esi
    call puts
    jmp poweroff
1:  mov $nonzero, %esi
    call puts
    jmp poweroff
zero: .asciz "lkvm test guest: mmio read 0\r\n"
nonzero: .asciz "lkvm test guest: mmio read nonzero\r\n"
