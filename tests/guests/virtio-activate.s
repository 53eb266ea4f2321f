/* Drives the first PCI function (a virtio device: run with --rng) the way a
 * driver does up to DRIVER_OK, with one queue, so lkvm starts the device's
 * thread; then says so and powers off. The rings are never used. */
    .include "pvh.inc"
    .globl _start
_start:
    mov $0xcf8, %dx           /* BAR0 of 00:01.0 through configuration mechanism #1 */
    mov $0x80000810, %eax
    out %eax, %dx
    mov $0xcfc, %dx
    in %dx, %eax
    and $0xfffffff0, %eax
    mov %eax, %ebx            /* the common configuration is at BAR0 + 0 */
    movb $1, 0x14(%ebx)       /* ACKNOWLEDGE */
    movb $3, 0x14(%ebx)       /* DRIVER */
    movl $1, 0x08(%ebx)       /* driver_feature_select: bits 32-63 */
    movl $1, 0x0c(%ebx)       /* VERSION_1 */
    movb $11, 0x14(%ebx)      /* FEATURES_OK */
    movw $0, 0x16(%ebx)       /* queue_select 0 */
    movw $16, 0x18(%ebx)      /* queue_size */
    movl $0x200000, 0x20(%ebx)
    movl $0, 0x24(%ebx)
    movl $0x201000, 0x28(%ebx)
    movl $0, 0x2c(%ebx)
    movl $0x202000, 0x30(%ebx)
    movl $0, 0x34(%ebx)
    movw $1, 0x1c(%ebx)       /* queue_enable */
    movb $15, 0x14(%ebx)      /* DRIVER_OK: lkvm starts the device */
    mov $msg, %esi
    call puts
    jmp poweroff
msg: .asciz "lkvm test guest: virtio device started\r\n"
