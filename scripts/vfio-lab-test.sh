#!/usr/bin/env bash
# The VFIO lab against a real kernel: boots a Linux guest under QEMU (TCG) with an emulated Intel
# IOMMU and an SR-IOV capable NVMe controller, and runs the static `vnic-lab` inside it:
# `lab list`, `lab enable`, `lab bind` a VF, `lab probe` it (BAR0 read, a ring region
# DMA-mapped), `lab unbind`, `lab disable`. Installs what it needs (Debian packages), builds the
# static binary and the initramfs itself, and fails loudly when anything is missing.
# Recipe: ../shared/notes/vfio-lab-qemu.md. About a minute on 2 cores once packages are there.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
[ -x /bin/busybox ] && dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
ls /boot/vmlinuz-* >/dev/null 2>&1 || need+=(linux-image-amd64)
command -v cpio >/dev/null || need+=(cpio)
command -v modprobe >/dev/null || need+=(kmod)
[ -f /usr/include/linux/nvme_ioctl.h ] || need+=(linux-libc-dev)
command -v gcc >/dev/null || need+=(gcc libc6-dev)
if [ ${#need[@]} -gt 0 ]; then
    echo "vfio-lab-test: installing ${need[*]}"
    if [ "$(id -u)" != 0 ]; then
        echo "vfio-lab-test: FAIL: packages missing (${need[*]}) and not root to install them" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
busybox_bin=/bin/busybox
kernel=$(ls /boot/vmlinuz-* | sort -V | tail -1)
kver=${kernel#/boot/vmlinuz-}
[ -d "/lib/modules/$kver" ] || { echo "vfio-lab-test: FAIL: no modules for $kver" >&2; exit 1; }

echo "vfio-lab-test: building the static binary"
RUSTFLAGS='-C target-feature=+crt-static' CARGO_TARGET_DIR=target/static \
    cargo build --release --locked --target x86_64-unknown-linux-gnu --bin vnic-lab -q
bin=target/static/x86_64-unknown-linux-gnu/release/vnic-lab

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root"/{bin,proc,sys,dev,tmp}
cp "$busybox_bin" "$root/bin/busybox"
for tool in sh mount insmod echo cat readlink basename poweroff sleep ls; do
    ln -s busybox "$root/bin/$tool"
done
cp "$bin" "$root/vnic-lab"
gcc -static -O2 -o "$root/nvme-vf-online" scripts/nvme-vf-online.c
# The modules and the order to load them in.
: > "$root/modules"
for m in vfio vfio_iommu_type1 vfio-pci nvme; do
    modprobe --show-depends -S "$kver" "$m" | awk '$1 == "insmod" { print $2 }'
done | awk '!seen[$0]++' | while read -r ko; do
    mkdir -p "$root$(dirname "$ko")"
    cp "$ko" "$root$ko"
    echo "$ko" >> "$root/modules"
done
cat > "$root/init" <<'INIT'
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
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) > "$work/initramfs.cpio.gz"

echo "vfio-lab-test: booting $kver under QEMU (TCG)"
log=$work/serial.log
timeout 300 qemu-system-x86_64 -accel tcg -cpu max -smp 1 -m 1024 \
    -machine q35,kernel-irqchip=split \
    -device intel-iommu,intremap=on,caching-mode=on \
    -nographic -no-reboot -kernel "$kernel" -initrd "$work/initramfs.cpio.gz" \
    -append 'console=ttyS0 intel_iommu=on iommu=pt panic=-1 quiet loglevel=4' \
    -device pcie-root-port,id=rp1,chassis=1,slot=1 \
    -device nvme-subsys,id=subsys0 \
    -device nvme,serial=deadbeef,id=nvme0,subsys=subsys0,bus=rp1,sriov_max_vfs=2,sriov_vq_flexible=8,sriov_vi_flexible=4,max_ioqpairs=12,msix_qsize=8 \
    > "$log" 2>&1 || true
cat "$log" | tr -d '\r' | grep -v '^$' | tail -60
fail=0
for s in booted "nvme-prepare ok" "list ok" "enable ok" "nvme-online ok" "bind ok" "probe ok" "unbind ok" "disable ok" "refused FAILED" done; do
    if ! tr -d '\r' < "$log" | grep -q "VNIC-LAB: $s"; then
        echo "vfio-lab-test: FAIL: missing 'VNIC-LAB: $s'" >&2
        fail=1
    fi
done
tr -d '\r' < "$log" | grep -q "DMA: a 1024-entry TX ring" || { echo "vfio-lab-test: FAIL: no DMA map" >&2; fail=1; }
# The VF is online: its BAR0 (NVMe CAP, VS, ...) reads live values, not zeros.
bar0=$(tr -d '\r' < "$log" | grep -o 'BAR0 (mmap): [0-9a-f ]*' | head -1)
echo "vfio-lab-test: $bar0"
case "$bar0" in
    "BAR0 (mmap): 00000000 00000000 00000000"*|"") echo "vfio-lab-test: FAIL: BAR0 reads zeros" >&2; fail=1 ;;
esac
[ $fail = 0 ] && echo "vfio-lab-test: ok"
exit $fail
