/* Prints a dot every few milliseconds, forever: output that visibly
 * stops while the guest is paused and continues when it resumes. */
    .include "pvh.inc"
    .globl _start
_start:
    mov $msg, %esi
    call puts
1:  mov $COM1, %dx
    mov $'.', %al
    out %al, %dx
    mov $20000, %ecx
2:  dec %ecx
    jnz 2b
    jmp 1b
msg: .asciz "lkvm test guest: counter\r\n"
