/* Sets a VF's MAC from its PF's side, as `ip link set <pf> vf <n> mac <mac>` does, for the VFIO
 * lab test (busybox's `ip` has no `vf`): one RTM_SETLINK on the PF's netdev with
 * IFLA_VFINFO_LIST { IFLA_VF_INFO { IFLA_VF_MAC { vf, mac } } }. The PF's driver then answers
 * the VF's reset with that MAC and refuses any other the VF asks for.
 *
 *   vf-mac eth0 2 02:aa:00:00:00:01
 */
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static struct rtattr *attr(struct nlmsghdr *n, unsigned short type, const void *data, int len) {
    struct rtattr *a = (struct rtattr *)((char *)n + NLMSG_ALIGN(n->nlmsg_len));
    a->rta_type = type;
    a->rta_len = RTA_LENGTH(len);
    if (data) memcpy(RTA_DATA(a), data, len);
    n->nlmsg_len = NLMSG_ALIGN(n->nlmsg_len) + RTA_ALIGN(a->rta_len);
    return a;
}

static void close_nest(struct nlmsghdr *n, struct rtattr *nest) {
    nest->rta_len = (char *)n + n->nlmsg_len - (char *)nest;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: vf-mac <pf-netdev> <vf> <mac>\n");
        return 2;
    }
    struct ifla_vf_mac vf_mac;
    memset(&vf_mac, 0, sizeof vf_mac);
    unsigned m[6];
    if (sscanf(argv[3], "%x:%x:%x:%x:%x:%x", &m[0], &m[1], &m[2], &m[3], &m[4], &m[5]) != 6) {
        fprintf(stderr, "vf-mac: %s is not a MAC\n", argv[3]);
        return 2;
    }
    for (int i = 0; i < 6; i++) vf_mac.mac[i] = (unsigned char)m[i];
    vf_mac.vf = (unsigned)atoi(argv[2]);
    static char buf[1024] __attribute__((aligned(NLMSG_ALIGNTO)));
    struct nlmsghdr *n = (struct nlmsghdr *)buf;
    struct ifinfomsg *ifi = (struct ifinfomsg *)NLMSG_DATA(n);
    n->nlmsg_len = NLMSG_LENGTH(sizeof(struct ifinfomsg));
    n->nlmsg_type = RTM_SETLINK;
    n->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
    ifi->ifi_family = AF_UNSPEC;
    ifi->ifi_index = (int)if_nametoindex(argv[1]);
    if (ifi->ifi_index == 0) {
        fprintf(stderr, "vf-mac: no interface %s\n", argv[1]);
        return 1;
    }
    struct rtattr *list = attr(n, IFLA_VFINFO_LIST, NULL, 0);
    struct rtattr *info = attr(n, IFLA_VF_INFO, NULL, 0);
    attr(n, IFLA_VF_MAC, &vf_mac, sizeof vf_mac);
    close_nest(n, info);
    close_nest(n, list);
    int fd = socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE);
    if (fd < 0 || send(fd, buf, n->nlmsg_len, 0) < 0) {
        perror("vf-mac: netlink");
        return 1;
    }
    char reply[1024];
    int len = (int)recv(fd, reply, sizeof reply, 0);
    struct nlmsghdr *r = (struct nlmsghdr *)reply;
    if (len < (int)sizeof *r || r->nlmsg_type != NLMSG_ERROR) {
        fprintf(stderr, "vf-mac: no answer from the kernel\n");
        return 1;
    }
    int err = ((struct nlmsgerr *)NLMSG_DATA(r))->error;
    if (err) {
        fprintf(stderr, "vf-mac: %s vf %s mac %s: %s\n", argv[1], argv[2], argv[3], strerror(-err));
        return 1;
    }
    printf("%s: vf %u mac %s\n", argv[1], vf_mac.vf, argv[3]);
    close(fd);
    return 0;
}
