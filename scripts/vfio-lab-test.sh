#!/usr/bin/env bash
# The VFIO lab against a real kernel, in two QEMU (TCG) guests with an emulated Intel IOMMU:
#
# 1. NVMe: an SR-IOV capable NVMe controller; the static `vnic-lab` runs `lab list`, `lab
#    enable`, `lab bind` a VF, `lab probe` it (BAR0 read, a ring region DMA-mapped), `lab
#    unbind`, `lab disable`.
# 2. igb: two Intel 82576 NICs (QEMU's `igb`, 8 VFs each) whose wires meet in a QEMU hub, the
#    wire captured as pcap. The guest's igb PF driver runs the VFs' mailbox; `vnic-lab lab
#    traffic` drives VFs bound to vfio-pci with `vnic::igbvf`: frames of 60–1514 bytes from a VF
#    to another VF on the same NIC, to a VF across the hub, to the PF's netdev, each checked byte
#    for byte, and the wire capture checked afterwards on the host (`lab check-capture`); a VF
#    whose MAC an administrator fixed on the PF (`vf-mac.c`) takes it; then the errors a lab user
#    meets (a VF not bound to vfio-pci, the PF refusing another MAC, the PF's interface down).
#
# Installs what it needs (Debian packages; QEMU 10 from bookworm-backports, since bookworm's 7.2
# has no igb), builds the static binary and the initramfs itself, and fails loudly when anything
# is missing. Recipe: ../shared/notes/vfio-lab-qemu.md. About two minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."

qemu_major() { qemu-system-x86_64 --version 2>/dev/null | awk '/version/ { split($4, v, "."); print v[1]; exit }'; }
need=()
[ -x /bin/busybox ] && dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
ls /boot/vmlinuz-* >/dev/null 2>&1 || need+=(linux-image-amd64)
command -v cpio >/dev/null || need+=(cpio)
command -v modprobe >/dev/null || need+=(kmod)
[ -f /usr/include/linux/nvme_ioctl.h ] || need+=(linux-libc-dev)
command -v gcc >/dev/null || need+=(gcc libc6-dev)
if [ ${#need[@]} -gt 0 ] || [ "$(qemu_major)" = "" ] || [ "$(qemu_major)" -lt 8 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "vfio-lab-test: FAIL: packages missing (${need[*]} QEMU>=8) and not root to install them" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    if [ "$(qemu_major)" = "" ] || [ "$(qemu_major)" -lt 8 ]; then
        # QEMU 8.0 brought the igb model; bookworm-backports has 10.x.
        echo "vfio-lab-test: installing qemu-system-x86 from bookworm-backports"
        cat > /etc/apt/sources.list.d/vnic-lab-backports.sources <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    fi
    apt-get update -qq
    if [ ${#need[@]} -gt 0 ]; then
        echo "vfio-lab-test: installing ${need[*]}"
        apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    fi
    if [ "$(qemu_major)" = "" ] || [ "$(qemu_major)" -lt 8 ]; then
        apt-get install -y -qq -t bookworm-backports --no-install-recommends qemu-system-x86 >/dev/null
    fi
fi
[ "$(qemu_major)" -ge 8 ] || { echo "vfio-lab-test: FAIL: QEMU $(qemu_major) has no igb (need 8.0+)" >&2; exit 1; }
# Captured, then searched: under pipefail, `| grep -q` fails when grep exits before the
# writer is done (SIGPIPE), which made a present marker look missing in CI.
qemu_devices=$(qemu-system-x86_64 -device help 2>/dev/null || true)
grep -q '"igb"' <<<"$qemu_devices" || { echo "vfio-lab-test: FAIL: this QEMU has no igb device" >&2; exit 1; }
busybox_bin=/bin/busybox
kernel=$(ls /boot/vmlinuz-* | sort -V | tail -1)
kver=${kernel#/boot/vmlinuz-}
[ -d "/lib/modules/$kver" ] || { echo "vfio-lab-test: FAIL: no modules for $kver" >&2; exit 1; }

echo "vfio-lab-test: building the static binary"
RUSTFLAGS='-C target-feature=+crt-static' CARGO_TARGET_DIR=target/static \
    cargo build --release --locked --target x86_64-unknown-linux-gnu --bin vnic-lab -q
bin=target/static/x86_64-unknown-linux-gnu/release/vnic-lab
host_bin=target/static/x86_64-unknown-linux-gnu/release/vnic-lab

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
gcc -static -O2 -o "$work/nvme-vf-online" scripts/nvme-vf-online.c
gcc -static -O2 -o "$work/vf-mac" scripts/vf-mac.c

# initramfs NAME INIT MODULE...: a busybox root with vnic-lab, the modules (in insmod order,
# listed in /modules) and INIT as /init, packed as $work/NAME.cpio.gz.
initramfs() {
    local name=$1 init=$2
    shift 2
    local root=$work/$name
    mkdir -p "$root"/{bin,proc,sys,dev,tmp}
    cp "$busybox_bin" "$root/bin/busybox"
    for tool in sh mount insmod echo cat readlink basename poweroff sleep ls ip grep; do
        ln -s busybox "$root/bin/$tool"
    done
    cp "$bin" "$root/vnic-lab"
    cp "$work/nvme-vf-online" "$work/vf-mac" "$root/"
    : > "$root/modules"
    for m in "$@"; do
        modprobe --show-depends -S "$kver" "$m" | awk '$1 == "insmod" { print $2 }'
    done | awk '!seen[$0]++' | while read -r ko; do
        mkdir -p "$root$(dirname "$ko")"
        cp "$ko" "$root$ko"
        echo "$ko" >> "$root/modules"
    done
    cp "$init" "$root/init"
    chmod +x "$root/init"
    (cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) > "$work/$name.cpio.gz"
}

# boot NAME QEMU-ARGS...: boots the kernel with $work/NAME.cpio.gz; the serial log is
# $work/NAME.log, and $work/NAME.txt is it without carriage returns (what the checks grep: a
# file, never a pipe into `grep -q`, which pipefail turns into a failure when grep stops
# reading early and the writer gets SIGPIPE).
boot() {
    local name=$1
    shift
    echo "vfio-lab-test: booting $kver under QEMU (TCG): $name"
    timeout 300 qemu-system-x86_64 -accel tcg -cpu max -smp 1 -m 1024 \
        -machine q35,kernel-irqchip=split \
        -device intel-iommu,intremap=on,caching-mode=on \
        -nographic -no-reboot -kernel "$kernel" -initrd "$work/$name.cpio.gz" \
        -append 'console=ttyS0 intel_iommu=on iommu=pt panic=-1 quiet loglevel=4' \
        "$@" > "$work/$name.log" 2>&1 || true
    tr -d '\r' < "$work/$name.log" > "$work/$name.txt"
    grep -v '^$' "$work/$name.txt" | tail -250
}

fail=0
# expect NAME MARKER...: every "VNIC-LAB: MARKER" must be in NAME's serial log.
expect() {
    local name=$1
    shift
    for s in "$@"; do
        if ! grep -qF "VNIC-LAB: $s" "$work/$name.txt"; then
            echo "vfio-lab-test: FAIL: $name: missing 'VNIC-LAB: $s'" >&2
            fail=1
        fi
    done
}

# VFIO_LAB_ONLY=igb skips the NVMe guest (for work on the NIC driver).
if [ "${VFIO_LAB_ONLY:-}" != igb ]; then
cat > "$work/nvme-init" <<'INIT'
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
while read -r ko; do
    case "$ko" in
        */vfio-pci.ko*) insmod "$ko" enable_sriov=1 ;;
        *) insmod "$ko" ;;
    esac
done < /modules
sleep 1
echo "VNIC-LAB: booted"
pf=""
for d in /sys/bus/pci/devices/*; do
    if [ -f "$d/sriov_totalvfs" ] && [ "$(cat "$d/sriov_totalvfs")" -gt 0 ]; then pf=$(basename "$d"); fi
done
echo "VNIC-LAB: pf $pf"
step() { name=$1; shift; if "$@"; then echo "VNIC-LAB: $name ok"; else echo "VNIC-LAB: $name FAILED"; fi; }
# QEMU's NVMe VFs start offline: free the primary's flexible resources and reset it first.
step nvme-prepare /nvme-vf-online /dev/nvme0 prepare
echo 1 > "/sys/bus/pci/devices/$pf/reset"
sleep 1
step list /vnic-lab lab list --all
step enable /vnic-lab lab enable "$pf" 2
step nvme-online /nvme-vf-online /dev/nvme0 online
vf=$(basename "$(readlink "/sys/bus/pci/devices/$pf/virtfn0")")
echo "VNIC-LAB: vf $vf"
step bind /vnic-lab lab bind "$vf"
step probe /vnic-lab lab probe "$vf"
step unbind /vnic-lab lab unbind "$vf"
step disable /vnic-lab lab disable "$pf"
step refused /vnic-lab lab enable "$pf" 9
echo "VNIC-LAB: done"
poweroff -f
INIT
initramfs nvme "$work/nvme-init" vfio vfio_iommu_type1 vfio-pci nvme
boot nvme \
    -device pcie-root-port,id=rp1,chassis=1,slot=1 \
    -device nvme-subsys,id=subsys0 \
    -device nvme,serial=deadbeef,id=nvme0,subsys=subsys0,bus=rp1,sriov_max_vfs=2,sriov_vq_flexible=8,sriov_vi_flexible=4,max_ioqpairs=12,msix_qsize=8
expect nvme booted "nvme-prepare ok" "list ok" "enable ok" "nvme-online ok" "bind ok" "probe ok" \
    "unbind ok" "disable ok" "refused FAILED" done
grep -q "DMA: a 1024-entry TX ring" "$work/nvme.txt" || { echo "vfio-lab-test: FAIL: no DMA map" >&2; fail=1; }
# The VF is online: its BAR0 (NVMe CAP, VS, ...) reads live values, not zeros.
bar0=$(grep -m1 -o 'BAR0 (mmap): [0-9a-f ]*' "$work/nvme.txt" || true)
echo "vfio-lab-test: $bar0"
case "$bar0" in
    "BAR0 (mmap): 00000000 00000000 00000000"*|"") echo "vfio-lab-test: FAIL: BAR0 reads zeros" >&2; fail=1 ;;
esac
fi

# The igb guest. Frame sizes cover the smallest and largest Ethernet frames and odd lengths.
sizes=60,61,127,128,511,1024,1513,1514
frames=3000
cat > "$work/igb-init" <<INIT
#!/bin/sh
sizes=$sizes
frames=$frames
INIT
cat >> "$work/igb-init" <<'INIT'
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
while read -r ko; do insmod "$ko"; done < /modules
echo "VNIC-LAB: booted"
step() { name=$1; shift; if "$@"; then echo "VNIC-LAB: $name ok"; else echo "VNIC-LAB: $name FAILED"; fi; }
pfs=""
for d in /sys/bus/pci/devices/*; do
    [ "$(cat "$d/vendor")" = 0x8086 ] && [ "$(cat "$d/device")" = 0x10c9 ] && pfs="$pfs $(basename "$d")"
done
set -- $pfs
pf0=$1 pf1=$2
if0=$(ls "/sys/bus/pci/devices/$pf0/net") if1=$(ls "/sys/bus/pci/devices/$pf1/net")
echo "VNIC-LAB: pfs $pf0 ($if0) $pf1 ($if1)"
ip link set "$if0" up
ip link set "$if1" up
step enable0 /vnic-lab lab enable "$pf0" 3
step enable1 /vnic-lab lab enable "$pf1" 1
vf() { basename "$(readlink "/sys/bus/pci/devices/$1/virtfn$2")"; }
a=$(vf "$pf0" 0) b=$(vf "$pf0" 1) unbound=$(vf "$pf0" 2) c=$(vf "$pf1" 0)
echo "VNIC-LAB: vfs a=$a b=$b c=$c unbound=$unbound"
step bind-a /vnic-lab lab bind "$a"
step bind-b /vnic-lab lab bind "$b"
step bind-c /vnic-lab lab bind "$c"
sleep 2
/vnic-lab lab list
t() { /vnic-lab lab traffic --sizes "$sizes" --frames "$frames" --exact "$@"; }
step same-nic t --from "$a" --to "$b"
step across-hub t --from "$a" --to "$c"
step to-pf-netdev t --from "$a" --to "netdev:$if0"
step paced-json /vnic-lab lab traffic --from "$c" --to "$b" --sizes 60,1514 --duration 0.2 --rate 2000 --json --exact --hgrm /tmp/lat.hgrm
step hgrm grep -q Percentile /tmp/lat.hgrm
# What a lab user gets wrong, each refused with what to do.
/vnic-lab lab traffic --from "$unbound" --to "$b" --frames 10 2>&1 | grep -q "lab bind" && echo "VNIC-LAB: refused-unbound ok"
# An administrator fixes that VF's MAC on the PF: the VF takes it, and may not take another.
step bind-d /vnic-lab lab bind "$unbound"
step admin-mac /vf-mac "$if0" 2 02:aa:00:00:00:02
t --from "$unbound" --to "$b" | tee /tmp/assigned.txt
grep -q "MAC 02:aa:00:00:00:02 chosen by the PF" /tmp/assigned.txt && echo "VNIC-LAB: pf-assigned-mac ok"
/vnic-lab lab traffic --from "$unbound" --from-mac 02:76:00:01:10:04 --to "$b" --frames 10 2>&1 | tee /tmp/refused.txt
grep -q "the PF refused MAC 02:76:00:01:10:04" /tmp/refused.txt && echo "VNIC-LAB: refused-mac ok"
ip link set "$if1" down
/vnic-lab lab traffic --from "$c" --to "$b" --frames 10 2>&1 | tee /tmp/down.txt
grep -q "ip link set <pf-netdev> up" /tmp/down.txt && echo "VNIC-LAB: refused-pf-down ok"
echo "VNIC-LAB: done"
poweroff -f
INIT
initramfs igb "$work/igb-init" igb vfio vfio_iommu_type1 vfio-pci
boot igb \
    -netdev hubport,id=h0,hubid=0 -device pcie-root-port,id=rp1,chassis=1,slot=1 \
    -device igb,netdev=h0,bus=rp1,mac=52:54:00:00:00:0a,romfile= \
    -netdev hubport,id=h1,hubid=0 -device pcie-root-port,id=rp2,chassis=2,slot=2 \
    -device igb,netdev=h1,bus=rp2,mac=52:54:00:00:00:0b,romfile= \
    -object filter-dump,id=fd0,netdev=h0,file="$work/wire.pcap"
expect igb booted "enable0 ok" "enable1 ok" "bind-a ok" "bind-b ok" "bind-c ok" "same-nic ok" \
    "across-hub ok" "to-pf-netdev ok" "paced-json ok" "hgrm ok" "refused-unbound ok" \
    "bind-d ok" "admin-mac ok" "pf-assigned-mac ok" "refused-mac ok" "refused-pf-down ok" done
# The frames across the hub, as the wire saw them.
vfs=$(grep -m1 -o 'VNIC-LAB: vfs a=[^ ]* b=[^ ]* c=[^ ]*' "$work/igb.txt" || true)
a=$(echo "$vfs" | sed 's/.* a=\([^ ]*\) .*/\1/')
c=$(echo "$vfs" | sed 's/.* c=\([^ ]*\)$/\1/')
mac() { echo "$1" | sed -E 's/^..(..):(..):(..)\.(.)$/02:76:\1:\2:\3:0\4/'; }
if [ -n "$a" ] && [ -n "$c" ] && [ -f "$work/wire.pcap" ]; then
    if "$host_bin" lab check-capture "$work/wire.pcap" --from-mac "$(mac "$a")" --to-mac "$(mac "$c")" \
        --sizes "$sizes" --frames "$frames" --exact; then
        echo "vfio-lab-test: the wire carried every frame across the hub, byte for byte"
    else
        echo "vfio-lab-test: FAIL: the wire capture does not hold the frames across the hub" >&2
        fail=1
    fi
else
    echo "vfio-lab-test: FAIL: no VF addresses or no wire capture" >&2
    fail=1
fi
[ $fail = 0 ] && echo "vfio-lab-test: ok"
exit $fail
