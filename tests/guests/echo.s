/* Echoes console input back, upper-casing letters, until it reads 'q';
 * then powers off. */
    .include "pvh.inc"
    .globl _start
_start:
    mov $msg, %esi
    call puts
1:  mov $COM1_LSR, %dx
    in %dx, %al
    test $1, %al           /* data ready? */
    jz 1b
    mov $COM1, %dx
    in %dx, %al
    cmp $'q', %al
    je 3f
    cmp $'a', %al
    jb 2f
    cmp $'z', %al
    ja 2f
    sub $0x20, %al
2:  out %al, %dx
    jmp 1b
3:  mov $bye, %esi
    call puts
    jmp poweroff
msg: .asciz "lkvm test guest: echo\r\n"
bye: .asciz "\r\nbye\r\n"
