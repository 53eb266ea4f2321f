/* A flat real-mode binary, as kvmtool boots any file that is neither a
 * bzImage nor an ELF: loaded at 1000:0000 and entered there with every
 * segment register 0x1000. Prints a line on COM1, then resets through the
 * i8042. Linked at 0 and stripped to raw bytes (no header at all). */
    .code16
    .globl _start
_start:
    mov $msg, %si          /* ds = cs: the message is at ds:si */
    mov $0x3f8, %dx
1:  lodsb
    test %al, %al
    jz 2f
    out %al, %dx
    jmp 1b
2:  mov %sp, %ax           /* report the stack pointer lkvm set: 8000 */
    call hex16
    mov $0x0d, %al
    out %al, %dx
    mov $0x0a, %al
    out %al, %dx
3:  in $0x64, %al          /* wait for an empty input buffer */
    test $2, %al
    jnz 3b
    mov $0xfe, %al         /* pulse the reset line */
    out %al, $0x64
4:  hlt
    jmp 4b

/* Writes %ax as four hex digits to the port in %dx. */
hex16:
    mov $4, %cx
5:  rol $4, %ax
    push %ax
    and $0xf, %al
    add $'0', %al
    cmp $'9', %al
    jbe 6f
    add $7, %al
6:  out %al, %dx
    pop %ax
    loop 5b
    ret

msg: .asciz "lkvm flat guest: real mode, sp="
