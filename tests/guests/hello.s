/* Prints a line and a run of raw bytes, then powers off. */
    .include "pvh.inc"
    .globl _start
_start:
    mov $msg, %esi
    call puts
    mov $raw, %esi
    call puts
    jmp poweroff

msg: .asciz "lkvm test guest: hello\r\n"
/* Every byte from 0x01 to 0xff, to check the console is 8-bit clean. */
raw:
    .set byte, 1
    .rept 255
    .byte byte
    .set byte, byte + 1
    .endr
    .byte 0
