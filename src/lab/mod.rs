//! `vnic-lab lab`: real SR-IOV virtual functions through sysfs — list what the machine has,
//! enable and disable VFs, hand a function to vfio-pci and back, probe it — and frames through
//! them (`lab traffic`, [`traffic`]: Intel 82576 / I350 VFs driven by `vnic::igbvf`, or a netdev
//! through [`packet`]'s AF_PACKET socket). Every subcommand takes `--sysfs-root` and
//! `--dev-root` (for fixtures and chroots).

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::{Args, Subcommand};

mod packet;
pub mod traffic;
use vnic::vfio::{Inventory, LabRoots};

/// `lab` and its options.
#[derive(Debug, Args)]
pub struct LabArgs {
    /// Where sysfs is mounted.
    #[arg(long, default_value = "/sys", global = true)]
    sysfs_root: PathBuf,
    /// Where the device nodes are.
    #[arg(long, default_value = "/dev", global = true)]
    dev_root: PathBuf,
    #[command(subcommand)]
    command: LabCommand,
}

#[derive(Debug, Subcommand)]
enum LabCommand {
    /// SR-IOV capable devices and their VFs: address, vendor:device, driver, VFs, IOMMU group
    /// and whether it is viable, /dev/vfio, IOMMU on or off.
    List {
        /// Every PCI device, not only SR-IOV PFs and VFs.
        #[arg(long)]
        all: bool,
    },
    /// Enable N VFs on a PF (sriov_drivers_autoprobe off first).
    Enable {
        /// The PF's address, e.g. 0000:01:00.0.
        pf: String,
        /// VFs to enable.
        n: u16,
    },
    /// Disable a PF's VFs.
    Disable {
        /// The PF's address.
        pf: String,
    },
    /// Bind a function to vfio-pci (driver_override, unbind, drivers_probe); undone if it fails.
    Bind {
        /// The function's address.
        bdf: String,
    },
    /// Give a function back to its own driver.
    Unbind {
        /// The function's address.
        bdf: String,
    },
    /// Open a function bound to vfio-pci through VFIO: regions, BAR0's first registers (ENA's
    /// decoded), and a DMA map and unmap of a ring region.
    Probe {
        /// The function's address.
        bdf: String,
    },
    /// Frames through real VFs (Intel 82576 / I350, bound to vfio-pci) or a netdev: from one
    /// end to the other, paced or flooding, checked byte for byte; frames, Mpps, Gbps, loss,
    /// reordering, one-way latency.
    Traffic(traffic::TrafficArgs),
    /// Checks `lab traffic`'s frames in a capture of the wire (pcap).
    CheckCapture(traffic::CheckCaptureArgs),
}

/// Runs a `lab` subcommand; returns what to print.
pub fn run(args: &LabArgs) -> Result<String, String> {
    let roots = LabRoots { sysfs: args.sysfs_root.clone(), dev: args.dev_root.clone() };
    let err = |e: vnic::vfio::LabError| e.to_string();
    match &args.command {
        LabCommand::List { all } => {
            let devices = roots.sysfs.join("bus/pci/devices");
            Ok(list(&roots.inventory().map_err(err)?, *all, &devices))
        }
        LabCommand::Enable { pf, n } => {
            roots.enable_vfs(pf, *n).map_err(err)?;
            Ok(format!("{pf}: {n} VFs enabled (sriov_drivers_autoprobe 0)\n"))
        }
        LabCommand::Disable { pf } => {
            roots.disable_vfs(pf).map_err(err)?;
            Ok(format!("{pf}: VFs disabled\n"))
        }
        LabCommand::Bind { bdf } => {
            let previous = roots.bind_vfio(bdf).map_err(err)?;
            let group = roots.check_usable(bdf).map(|g| format!(", /dev/vfio/{g}"));
            Ok(format!(
                "{bdf}: bound to vfio-pci (was {}){}\n",
                previous.as_deref().unwrap_or("unbound"),
                group.unwrap_or_else(|e| format!("; not usable yet: {e}"))
            ))
        }
        LabCommand::Probe { bdf } => {
            let r = roots.probe(bdf).map_err(err)?;
            let mut out = format!("{bdf}: IOMMU group {}, opened through VFIO\n", r.group);
            for reg in &r.regions {
                let _ = writeln!(
                    out,
                    "  region {}: {} bytes at offset {:#x}, flags {:#x}",
                    reg.index, reg.size, reg.offset, reg.flags
                );
            }
            let words: Vec<String> = r.bar0.iter().map(|w| format!("{w:08x}")).collect();
            let how = if r.bar0_mmapped { "mmap" } else { "pread" };
            let _ = writeln!(out, "  BAR0 ({how}): {}", words.join(" "));
            if let Some(ena) = r.ena {
                let _ = writeln!(
                    out,
                    "  ENA: version {:#x}, controller version {:#x}, caps {:#x} (DMA width {} bits)",
                    ena.version,
                    ena.controller_version,
                    ena.caps,
                    ena.dma_addr_width()
                );
            }
            let _ = writeln!(
                out,
                "  DMA: a 1024-entry TX ring ({} bytes) mapped at IOVA {:#x} and unmapped",
                r.dma_mapped.1, r.dma_mapped.0
            );
            Ok(out)
        }
        LabCommand::Traffic(t) => traffic::traffic(&roots, t),
        LabCommand::CheckCapture(c) => traffic::check_capture_command(c),
        LabCommand::Unbind { bdf } => {
            roots.unbind_vfio(bdf).map_err(err)?;
            let now = roots.device(bdf).map_err(err)?.driver;
            Ok(format!("{bdf}: released (driver now {})\n", now.as_deref().unwrap_or("none")))
        }
    }
}

fn list(inv: &Inventory, all: bool, devices: &std::path::Path) -> String {
    let mut out = String::new();
    let yes = |b: bool| if b { "yes" } else { "no" };
    let _ = writeln!(
        out,
        "IOMMU: {}   vfio-pci loaded: {}   /dev/vfio/vfio: {}",
        if inv.iommu { "on".to_string() } else { format!("off (boot with {})", boot_hint()) },
        yes(inv.vfio_pci),
        yes(inv.dev_vfio)
    );
    let _ = writeln!(
        out,
        "{:<14} {:<11} {:<12} {:>9} {:>6}  {:<22} model",
        "address", "id", "driver", "VFs", "group", "group viable"
    );
    let mut rows = 0;
    for d in &inv.devices {
        let sriov = d.total_vfs.is_some() || d.physfn.is_some();
        if !all && !sriov {
            continue;
        }
        rows += 1;
        let vfs = match (d.num_vfs, d.total_vfs, &d.physfn) {
            (Some(n), Some(t), _) => format!("{n}/{t}"),
            (_, _, Some(pf)) => format!("VF of {}", pf.get(5..).unwrap_or(pf)),
            _ => "-".into(),
        };
        let (group, viable) = match d.iommu_group.and_then(|g| inv.group(g)) {
            Some(g) if g.viable() => (
                g.id.to_string(),
                if g.dev_node { "yes".to_string() } else { "yes (no /dev node)".into() },
            ),
            Some(g) => (
                g.id.to_string(),
                format!(
                    "no: {}",
                    g.blockers()
                        .iter()
                        .map(|(b, d)| format!("{b}={d}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
            ),
            None => ("-".into(), "-".into()),
        };
        let _ = writeln!(
            out,
            "{:<14} {:04x}:{:04x}   {:<12} {:>9} {:>6}  {:<22} {}",
            d.bdf,
            d.vendor,
            d.device,
            d.driver.as_deref().unwrap_or("-"),
            vfs,
            group,
            viable,
            d.model()
        );
    }
    if rows == 0 {
        let what = if all { "no PCI devices" } else { "no SR-IOV capable devices (PFs or VFs)" };
        let more = if all { "" } else { "; `lab list --all` shows every PCI device" };
        let _ = writeln!(out, "{what} under {}{more}", devices.display());
    }
    out
}

/// The kernel parameters that turn this machine's IOMMU on.
fn boot_hint() -> &'static str {
    vnic::vfio::iommu_boot_hint(&std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_list_says_so_and_how_to_see_more() {
        let inv = Inventory {
            iommu: true,
            vfio_pci: true,
            dev_vfio: true,
            devices: vec![],
            groups: vec![],
        };
        let dir = std::path::Path::new("/sys/bus/pci/devices");
        let text = list(&inv, false, dir);
        assert!(text.contains("no SR-IOV capable devices (PFs or VFs) under /sys/bus/pci/devices"));
        assert!(text.contains("`lab list --all`"), "{text}");
        assert!(list(&inv, true, dir).contains("no PCI devices under"));
        let off = Inventory { iommu: false, ..inv };
        assert!(list(&off, false, dir).contains("iommu=pt"), "the boot hint");
    }
}
