/* Writes and reads port 0x510, where no lkvm device is (QEMU's fw_cfg),
 * between handled accesses to COM1, then powers off. */
    .include "pvh.inc"
    .globl _start
_start:
    mov $msg, %esi
    call puts
    mov $0x510, %dx
    mov $0x5a, %al
    out %al, %dx
    inc %dx
    in %dx, %al
    jmp poweroff
msg: .asciz "lkvm test guest: ports\r\n"
