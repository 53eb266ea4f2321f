/* Prints a line, then executes an undefined instruction with no IDT:
 * #UD -> #DF -> triple fault. */
    .include "pvh.inc"
    .globl _start
_start:
    mov $msg, %esi
    call puts
    ud2
msg: .asciz "lkvm test guest: faulting\r\n"
