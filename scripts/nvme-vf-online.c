/* Brings a QEMU NVMe VF online for the VFIO lab test: QEMU's NVMe secondary controllers start
 * offline (BAR0 reads as zeros) until NVMe Virtualization Management (admin opcode 0x1c) gives
 * them flexible resources and sets them online.
 *
 *   nvme-vf-online /dev/nvme0 prepare   before enabling VFs: take the primary's flexible
 *                                       VQ and VI resources away (then reset the PF)
 *   nvme-vf-online /dev/nvme0 online    after enabling VFs: secondary controller 1 gets one VI
 *                                       and two VQs and goes online
 * cdw10 = action | resource type << 8 | controller id << 16, cdw11 = count; resource type 0 is
 * VQ, 1 is VI; action 1 allocates to the primary, 8 to a secondary, 9 sets a secondary online.
 */
#include <fcntl.h>
#include <linux/nvme_ioctl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>

static int virt_mgmt(int fd, unsigned action, unsigned type, unsigned cntl, unsigned count) {
    struct nvme_admin_cmd cmd;
    memset(&cmd, 0, sizeof cmd);
    cmd.opcode = 0x1c;
    cmd.cdw10 = action | type << 8 | cntl << 16;
    cmd.cdw11 = count;
    int r = ioctl(fd, NVME_IOCTL_ADMIN_CMD, &cmd);
    printf("nvme virt-mgmt action %u type %u controller %u count %u: %d\n", action, type, cntl,
           count, r);
    return r;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s /dev/nvmeN prepare|online\n", argv[0]);
        return 2;
    }
    int fd = open(argv[1], O_RDWR);
    if (fd < 0) {
        perror(argv[1]);
        return 1;
    }
    int r = 0;
    if (strcmp(argv[2], "prepare") == 0) {
        r |= virt_mgmt(fd, 1, 1, 0, 0);
        r |= virt_mgmt(fd, 1, 0, 0, 0);
    } else {
        r |= virt_mgmt(fd, 8, 1, 1, 1);
        r |= virt_mgmt(fd, 8, 0, 1, 2);
        r |= virt_mgmt(fd, 9, 0, 1, 0);
    }
    return r != 0;
}
