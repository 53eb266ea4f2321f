/* Prints a line, then resets through the i8042 (what Linux's reboot=k does). */
    .include "pvh.inc"
    .globl _start
_start:
    mov $msg, %esi
    call puts
1:  in $0x64, %al          /* wait for an empty input buffer */
    test $2, %al
    jnz 1b
    mov $0xfe, %al         /* pulse the reset line */
    out %al, $0x64
2:  hlt
    jmp 2b
msg: .asciz "lkvm test guest: resetting\r\n"
