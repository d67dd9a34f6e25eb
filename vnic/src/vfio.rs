//! The VFIO lab's plumbing for real SR-IOV hardware: what sysfs says about PCI devices, their
//! virtual functions and IOMMU groups, and the writes that enable VFs and hand them to vfio-pci.
//!
//! Every path is taken relative to a sysfs root (default `/sys`) and a device root (default
//! `/dev`), so the same code runs against a fixture tree in tests. The rules a lab user meets:
//!
//! * VFs are enabled by writing `sriov_numvfs` (at most `sriov_totalvfs`; 0 → N → 0, never
//!   N → M), with `sriov_drivers_autoprobe` set to 0 first so no host driver grabs them.
//! * A device goes to vfio-pci by writing `vfio-pci` to its `driver_override`, unbinding its
//!   driver and writing its address to `/sys/bus/pci/drivers_probe`; vfio-pci refuses a PF whose
//!   VFs are enabled. A bind that does not end with vfio-pci as the driver is undone (override
//!   cleared, the device probed again), so nothing is left half bound.
//! * A device is usable through VFIO only if its IOMMU group is *viable* — every member bound to
//!   vfio-pci or to no driver — and `/dev/vfio/<group>` exists; both need the IOMMU on
//!   (`/sys/kernel/iommu_groups` not empty) and the vfio-pci module loaded.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Where sysfs and the device nodes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabRoots {
    /// `/sys`, or a fixture.
    pub sysfs: PathBuf,
    /// `/dev`, or a fixture.
    pub dev: PathBuf,
}

impl Default for LabRoots {
    fn default() -> Self {
        Self { sysfs: PathBuf::from("/sys"), dev: PathBuf::from("/dev") }
    }
}

/// What the lab refuses, each with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// Not a PCI address.
    #[error(
        "`{0}` is not a PCI address: expected domain:bus:device.function in hex, e.g. \
         0000:01:00.0 (see `vnic-lab lab list`)"
    )]
    BadAddress(String),
    /// No such PCI device.
    #[error("no PCI device {0} (see `vnic-lab lab list`)")]
    NoSuchDevice(String),
    /// Not SR-IOV capable.
    #[error("{0} is not SR-IOV capable: it has no sriov_totalvfs (pick a PF from `lab list`)")]
    NotSriov(String),
    /// More VFs than the device offers.
    #[error("{bdf} offers at most {total} VFs (sriov_totalvfs), not {requested}")]
    TooManyVfs {
        /// The PF.
        bdf: String,
        /// Asked for.
        requested: u16,
        /// Its maximum.
        total: u16,
    },
    /// N → M without going through 0.
    #[error(
        "{bdf} has {current} VFs enabled: disable them first (`lab disable {bdf}`), then enable {requested}"
    )]
    VfsEnabled {
        /// The PF.
        bdf: String,
        /// Enabled now.
        current: u16,
        /// Asked for.
        requested: u16,
    },
    /// A PF with VFs enabled, which vfio-pci refuses.
    #[error(
        "{bdf} has {vfs} VFs enabled and vfio-pci will not bind a PF with SR-IOV enabled: run `lab disable {bdf}` first, or bind its VFs instead"
    )]
    PfWithVfs {
        /// The PF.
        bdf: String,
        /// Its VFs.
        vfs: u16,
    },
    /// The IOMMU is off.
    #[error(
        "the IOMMU is off ({0} is empty or missing): enable VT-d / AMD-Vi in the firmware and boot with `intel_iommu=on iommu=pt` (or `amd_iommu=on`)"
    )]
    NoIommu(String),
    /// The vfio-pci module is not loaded.
    #[error("vfio-pci is not loaded ({0} is missing): `modprobe vfio-pci`")]
    NoVfioPci(String),
    /// A group that is not viable.
    #[error("IOMMU group {group} is not viable: {} — bind every member to vfio-pci or unbind it", blockers.iter().map(|(b, d)| format!("{b} is bound to {d}")).collect::<Vec<_>>().join(", "))]
    GroupNotViable {
        /// The group.
        group: u32,
        /// Members bound to host drivers: (address, driver).
        blockers: Vec<(String, String)>,
    },
    /// A write refused for want of privilege.
    #[error("writing {0}: permission denied (run as root)")]
    NotRoot(String),
    /// The bind did not take.
    #[error("{bdf} is bound to {now} after the bind, not vfio-pci; its driver was restored")]
    BindFailed {
        /// The device.
        bdf: String,
        /// The driver it ended up with.
        now: String,
    },
    /// VFIO refused (container, group or device).
    #[error("VFIO: {0}")]
    Vfio(String),
    /// Any other file error.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// Checks that `bdf` is a PCI address as sysfs names devices, `DDDD:BB:DD.F` (hex domain, bus
/// and device up to 1f, function 0 to 7), before it becomes part of a sysfs path.
pub fn check_bdf(bdf: &str) -> Result<(), LabError> {
    let bad = || LabError::BadAddress(bdf.to_string());
    let hex = |s: &str, digits: usize| {
        (s.len() == digits && s.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| u32::from_str_radix(s, 16).ok())
            .flatten()
    };
    let (domain, rest) = bdf.split_once(':').ok_or_else(bad)?;
    let (bus, rest) = rest.split_once(':').ok_or_else(bad)?;
    let (device, function) = rest.split_once('.').ok_or_else(bad)?;
    match (hex(domain, 4), hex(bus, 2), hex(device, 2), hex(function, 1)) {
        (Some(_), Some(_), Some(d), Some(f)) if d <= 0x1f && f <= 7 => Ok(()),
        _ => Err(bad()),
    }
}

/// The kernel parameters that turn the IOMMU on for the CPU `cpuinfo` (the text of
/// `/proc/cpuinfo`) describes.
pub fn iommu_boot_hint(cpuinfo: &str) -> &'static str {
    if cpuinfo.contains("AuthenticAMD") {
        "amd_iommu=on iommu=pt"
    } else if cpuinfo.contains("GenuineIntel") {
        "intel_iommu=on iommu=pt"
    } else {
        "intel_iommu=on or amd_iommu=on, and iommu=pt"
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> LabError + '_ {
    move |source| {
        if source.kind() == io::ErrorKind::PermissionDenied {
            LabError::NotRoot(path.display().to_string())
        } else {
            LabError::Io { path: path.display().to_string(), source }
        }
    }
}

/// A PCI device as sysfs shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciDevice {
    /// Its address, `0000:01:00.0`.
    pub bdf: String,
    /// Vendor id.
    pub vendor: u16,
    /// Device id.
    pub device: u16,
    /// The bound driver, if any.
    pub driver: Option<String>,
    /// `sriov_totalvfs` (SR-IOV capable PFs only).
    pub total_vfs: Option<u16>,
    /// `sriov_numvfs`.
    pub num_vfs: Option<u16>,
    /// Its PF, if it is a VF.
    pub physfn: Option<String>,
    /// Its VFs, if it is a PF with VFs enabled.
    pub vfs: Vec<String>,
    /// Its IOMMU group.
    pub iommu_group: Option<u32>,
}

impl PciDevice {
    /// A name for the vendor:device pair where the lab knows it.
    pub fn model(&self) -> &'static str {
        match (self.vendor, self.device) {
            (0x1d0f, 0xec20 | 0xec21) => "Amazon ENA VF",
            (0x1d0f, 0xefa0..=0xefa3) => "Amazon EFA",
            (0x8086, 0x10fb) => "Intel 82599 (ixgbe) PF",
            (0x8086, 0x10ed) => "Intel 82599 VF",
            (0x8086, 0x1572 | 0x1583) => "Intel X710 (i40e) PF",
            (0x8086, 0x154c) => "Intel X710 VF",
            (0x8086, 0x1592 | 0x159b) => "Intel E810 (ice) PF",
            (0x8086, 0x1889) => "Intel E810 VF",
            (0x15b3, _) => "Mellanox ConnectX",
            (0x1b36, 0x0010) => "QEMU NVMe",
            (0x8086, 0x10d3) => "Intel 82574 (e1000e)",
            _ => "",
        }
    }
}

/// An IOMMU group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IommuGroup {
    /// Its number.
    pub id: u32,
    /// Members and their drivers.
    pub members: Vec<(String, Option<String>)>,
    /// `/dev/vfio/<id>` exists.
    pub dev_node: bool,
}

impl IommuGroup {
    /// Every member bound to vfio-pci or to nothing.
    pub fn viable(&self) -> bool {
        self.blockers().is_empty()
    }

    /// Members bound to host drivers.
    pub fn blockers(&self) -> Vec<(String, String)> {
        self.members
            .iter()
            .filter_map(|(bdf, d)| {
                d.as_ref().filter(|d| *d != "vfio-pci").map(|d| (bdf.clone(), d.clone()))
            })
            .collect()
    }
}

/// What the lab sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inventory {
    /// IOMMU on (`/sys/kernel/iommu_groups` has groups).
    pub iommu: bool,
    /// vfio-pci loaded.
    pub vfio_pci: bool,
    /// `/dev/vfio/vfio` exists.
    pub dev_vfio: bool,
    /// Every PCI device.
    pub devices: Vec<PciDevice>,
    /// Every IOMMU group.
    pub groups: Vec<IommuGroup>,
}

impl Inventory {
    /// A device by address.
    pub fn device(&self, bdf: &str) -> Option<&PciDevice> {
        self.devices.iter().find(|d| d.bdf == bdf)
    }

    /// A group by number.
    pub fn group(&self, id: u32) -> Option<&IommuGroup> {
        self.groups.iter().find(|g| g.id == id)
    }
}

fn read_trim(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

fn read_hex(path: &Path) -> Option<u16> {
    let s = read_trim(path)?;
    u16::from_str_radix(s.trim_start_matches("0x"), 16).ok()
}

fn link_name(path: &Path) -> Option<String> {
    fs::read_link(path).ok()?.file_name().map(|n| n.to_string_lossy().into_owned())
}

impl LabRoots {
    fn devices_dir(&self) -> PathBuf {
        self.sysfs.join("bus/pci/devices")
    }

    pub(crate) fn device_dir(&self, bdf: &str) -> PathBuf {
        self.devices_dir().join(bdf)
    }

    /// Reads one device.
    pub fn device(&self, bdf: &str) -> Result<PciDevice, LabError> {
        check_bdf(bdf)?;
        let dir = self.device_dir(bdf);
        if !dir.exists() {
            return Err(LabError::NoSuchDevice(bdf.to_string()));
        }
        let mut vfs: Vec<(u32, String)> = fs::read_dir(&dir)
            .map_err(io_err(&dir))?
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let n: u32 = name.strip_prefix("virtfn")?.parse().ok()?;
                Some((n, link_name(&e.path())?))
            })
            .collect();
        vfs.sort();
        Ok(PciDevice {
            bdf: bdf.to_string(),
            vendor: read_hex(&dir.join("vendor")).unwrap_or(0),
            device: read_hex(&dir.join("device")).unwrap_or(0),
            driver: link_name(&dir.join("driver")),
            total_vfs: read_trim(&dir.join("sriov_totalvfs")).and_then(|s| s.parse().ok()),
            num_vfs: read_trim(&dir.join("sriov_numvfs")).and_then(|s| s.parse().ok()),
            physfn: link_name(&dir.join("physfn")),
            vfs: vfs.into_iter().map(|(_, b)| b).collect(),
            iommu_group: link_name(&dir.join("iommu_group")).and_then(|g| g.parse().ok()),
        })
    }

    /// Everything the lab needs to know.
    pub fn inventory(&self) -> Result<Inventory, LabError> {
        let dir = self.devices_dir();
        let mut names: Vec<String> = fs::read_dir(&dir)
            .map_err(io_err(&dir))?
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let devices = names.iter().map(|b| self.device(b)).collect::<Result<Vec<_>, _>>()?;
        let groups_dir = self.sysfs.join("kernel/iommu_groups");
        let mut ids: Vec<u32> = fs::read_dir(&groups_dir)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        ids.sort_unstable();
        let groups = ids
            .iter()
            .map(|&id| {
                let members_dir = groups_dir.join(id.to_string()).join("devices");
                let mut members: Vec<(String, Option<String>)> = fs::read_dir(&members_dir)
                    .map(|rd| {
                        rd.filter_map(Result::ok)
                            .map(|e| {
                                let bdf = e.file_name().to_string_lossy().into_owned();
                                let driver = link_name(&self.device_dir(&bdf).join("driver"));
                                (bdf, driver)
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                members.sort();
                IommuGroup {
                    id,
                    members,
                    dev_node: self.dev.join("vfio").join(id.to_string()).exists(),
                }
            })
            .collect();
        Ok(Inventory {
            iommu: !ids.is_empty(),
            vfio_pci: self.sysfs.join("bus/pci/drivers/vfio-pci").exists(),
            dev_vfio: self.dev.join("vfio/vfio").exists(),
            devices,
            groups,
        })
    }

    fn write(&self, path: &Path, value: &str) -> Result<(), LabError> {
        fs::write(path, value).map_err(io_err(path))
    }

    /// Enables `n` VFs on PF `bdf` (autoprobe off first, so no host driver takes them).
    pub fn enable_vfs(&self, bdf: &str, n: u16) -> Result<(), LabError> {
        check_bdf(bdf)?;
        let dev = self.device(bdf)?;
        let Some(total) = dev.total_vfs else { return Err(LabError::NotSriov(bdf.into())) };
        if n > total {
            return Err(LabError::TooManyVfs { bdf: bdf.into(), requested: n, total });
        }
        let current = dev.num_vfs.unwrap_or(0);
        if current == n {
            return Ok(());
        }
        if current != 0 && n != 0 {
            return Err(LabError::VfsEnabled { bdf: bdf.into(), current, requested: n });
        }
        let dir = self.device_dir(bdf);
        self.write(&dir.join("sriov_drivers_autoprobe"), "0")?;
        self.write(&dir.join("sriov_numvfs"), &n.to_string())
    }

    /// Disables PF `bdf`'s VFs.
    pub fn disable_vfs(&self, bdf: &str) -> Result<(), LabError> {
        check_bdf(bdf)?;
        let dev = self.device(bdf)?;
        if dev.total_vfs.is_none() {
            return Err(LabError::NotSriov(bdf.into()));
        }
        self.write(&self.device_dir(bdf).join("sriov_numvfs"), "0")
    }

    /// Hands `bdf` to vfio-pci; returns the driver it had. Undone if it does not take.
    pub fn bind_vfio(&self, bdf: &str) -> Result<Option<String>, LabError> {
        check_bdf(bdf)?;
        let inventory = self.inventory()?;
        if !inventory.iommu {
            let at = self.sysfs.join("kernel/iommu_groups");
            return Err(LabError::NoIommu(at.display().to_string()));
        }
        let drivers = self.sysfs.join("bus/pci/drivers");
        if !inventory.vfio_pci {
            return Err(LabError::NoVfioPci(drivers.join("vfio-pci").display().to_string()));
        }
        let dev = inventory.device(bdf).ok_or_else(|| LabError::NoSuchDevice(bdf.into()))?;
        if let Some(vfs) = dev.num_vfs.filter(|&n| n > 0) {
            return Err(LabError::PfWithVfs { bdf: bdf.into(), vfs });
        }
        let previous = dev.driver.clone();
        if previous.as_deref() == Some("vfio-pci") {
            return Ok(previous);
        }
        let dir = self.device_dir(bdf);
        let result = (|| {
            self.write(&dir.join("driver_override"), "vfio-pci")?;
            if let Some(driver) = &previous {
                self.write(&drivers.join(driver).join("unbind"), bdf)?;
            }
            self.write(&self.sysfs.join("bus/pci/drivers_probe"), bdf)?;
            match link_name(&dir.join("driver")) {
                Some(d) if d == "vfio-pci" => Ok(()),
                other => Err(LabError::BindFailed {
                    bdf: bdf.into(),
                    now: other.unwrap_or_else(|| "no driver".into()),
                }),
            }
        })();
        if let Err(e) = result {
            // Leave it as it was: no override, probed again for its own driver.
            let _ = self.write(&dir.join("driver_override"), "\n");
            let _ = self.write(&self.sysfs.join("bus/pci/drivers_probe"), bdf);
            return Err(e);
        }
        Ok(previous)
    }

    /// Takes `bdf` back from vfio-pci and lets the kernel probe its own driver again.
    pub fn unbind_vfio(&self, bdf: &str) -> Result<(), LabError> {
        check_bdf(bdf)?;
        let dev = self.device(bdf)?;
        let dir = self.device_dir(bdf);
        self.write(&dir.join("driver_override"), "\n")?;
        if dev.driver.as_deref() == Some("vfio-pci") {
            let unbind = self.sysfs.join("bus/pci/drivers/vfio-pci/unbind");
            self.write(&unbind, bdf)?;
        }
        self.write(&self.sysfs.join("bus/pci/drivers_probe"), bdf)
    }

    /// Why `bdf` cannot be opened through VFIO now, if it cannot.
    pub fn check_usable(&self, bdf: &str) -> Result<u32, LabError> {
        check_bdf(bdf)?;
        let inventory = self.inventory()?;
        if !inventory.iommu {
            let at = self.sysfs.join("kernel/iommu_groups");
            return Err(LabError::NoIommu(at.display().to_string()));
        }
        let dev = inventory.device(bdf).ok_or_else(|| LabError::NoSuchDevice(bdf.into()))?;
        let id = dev.iommu_group.ok_or_else(|| {
            LabError::NoIommu(self.device_dir(bdf).join("iommu_group").display().to_string())
        })?;
        if let Some(group) = inventory.group(id) {
            let blockers = group.blockers();
            if !blockers.is_empty() {
                return Err(LabError::GroupNotViable { group: id, blockers });
            }
        }
        let node = self.dev.join("vfio").join(id.to_string());
        if !node.exists() {
            return Err(LabError::Io {
                path: node.display().to_string(),
                source: io::Error::new(
                    io::ErrorKind::NotFound,
                    "missing: bind the device to vfio-pci (`lab bind`) and check that vfio-pci is loaded",
                ),
            });
        }
        Ok(id)
    }
}

/// ENA's first registers (BAR0 offsets 0x0, 0x4, 0x8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnaIdentity {
    /// VERSION: major in bits 15:8, minor in 7:0.
    pub version: u32,
    /// CONTROLLER_VERSION: major 31:24, minor 23:16, sub-minor 15:8, implementation id 7:0.
    pub controller_version: u32,
    /// CAPS: bit 0 contiguous queue memory required, bits 5:1 reset timeout (× 100 ms), bits
    /// 15:8 DMA address width, bits 19:16 admin command timeout.
    pub caps: u32,
}

impl EnaIdentity {
    /// DMA address width in bits.
    pub fn dma_addr_width(&self) -> u32 {
        (self.caps >> 8) & 0xff
    }
}

/// A region of a VFIO device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionInfo {
    /// VFIO's region index (0–5 the BARs, 7 config space).
    pub index: u32,
    /// Bytes.
    pub size: u64,
    /// Offset into the device file.
    pub offset: u64,
    /// VFIO region flags (read 1, write 2, mmap 4).
    pub flags: u32,
}

/// What `lab probe` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReport {
    /// The device.
    pub bdf: String,
    /// Its IOMMU group.
    pub group: u32,
    /// Its regions with a size.
    pub regions: Vec<RegionInfo>,
    /// The first 16 32-bit registers of BAR0, read through an mmap (or `pread` if BAR0 cannot
    /// be mapped).
    pub bar0: Vec<u32>,
    /// Whether BAR0 was read through an mmap.
    pub bar0_mmapped: bool,
    /// ENA's identity registers, for an Amazon device.
    pub ena: Option<EnaIdentity>,
    /// The ring region DMA-mapped and unmapped again: (IOVA, bytes).
    pub dma_mapped: (u64, usize),
}

/// The IOVA `probe` maps its test ring at.
pub const PROBE_IOVA: u64 = 0x1000_0000;

impl LabRoots {
    /// Opens `bdf` through VFIO (container, group, device), lists its regions, maps BAR0 and
    /// reads its first registers (decoding ENA's for an Amazon device), then DMA-maps a ring
    /// region laid out by `vnic::ring` at [`PROBE_IOVA`] and unmaps it.
    pub fn probe(&self, bdf: &str) -> Result<ProbeReport, LabError> {
        check_bdf(bdf)?;
        use std::os::fd::AsRawFd;
        use std::sync::Arc;
        use vfio_ioctls::{VfioContainer, VfioDevice, VfioOps};

        let group = self.check_usable(bdf)?;
        let dev = self.device(bdf)?;
        let vfio = |e: vfio_ioctls::VfioError| LabError::Vfio(e.to_string());
        let container = Arc::new(VfioContainer::new(None).map_err(vfio)?);
        let ops: Arc<dyn VfioOps> = container.clone();
        let device = VfioDevice::new(&self.device_dir(bdf), ops, false).map_err(vfio)?;
        let regions: Vec<RegionInfo> = (0..9)
            .map(|index| RegionInfo {
                index,
                size: device.get_region_size(index),
                offset: device.get_region_offset(index),
                flags: device.get_region_flags(index),
            })
            .filter(|r| r.size > 0)
            .collect();
        let bar0 = regions
            .iter()
            .find(|r| r.index == 0)
            .copied()
            .ok_or_else(|| LabError::Vfio(format!("{bdf} has no BAR0 region")))?;
        let words = (bar0.size / 4).min(16) as usize;
        let mut registers = vec![0u32; words];
        // VFIO_REGION_INFO_FLAG_MMAP (linux/vfio.h).
        let mmappable = bar0.flags & (1 << 2) != 0;
        let mut mmapped = false;
        if mmappable {
            let len = bar0.size as usize;
            // SAFETY: maps BAR0 of a device fd we hold, at the offset VFIO gave for it, shared;
            // the result is checked before use and unmapped below.
            let ptr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ,
                    libc::MAP_SHARED,
                    device.as_raw_fd(),
                    bar0.offset as libc::off_t,
                )
            };
            if ptr != libc::MAP_FAILED {
                for (i, r) in registers.iter_mut().enumerate() {
                    // SAFETY: `i` < 16 and the mapping is at least `words` * 4 bytes long;
                    // device registers are read with volatile 32-bit loads.
                    *r = unsafe { std::ptr::read_volatile(ptr.cast::<u32>().add(i)) };
                }
                // SAFETY: unmaps exactly the mapping made above.
                unsafe { libc::munmap(ptr, len) };
                mmapped = true;
            }
        }
        if !mmapped {
            for (i, r) in registers.iter_mut().enumerate() {
                let mut b = [0u8; 4];
                device.region_read(0, &mut b, (i * 4) as u64);
                *r = u32::from_le_bytes(b);
            }
        }
        let ena = (dev.vendor == 0x1d0f && registers.len() >= 3).then(|| EnaIdentity {
            version: registers[0],
            controller_version: registers[1],
            caps: registers[2],
        });
        // A TX submission ring of 1024, laid out as the guest driver would, DMA-mapped.
        let depth = 1024;
        let bytes = crate::ring::SubmissionRing::<crate::abi::io::TxDesc>::bytes(depth)
            .next_multiple_of(4096);
        let region = crate::ring::SharedRegion::anonymous(bytes)
            .map_err(|e| LabError::Vfio(format!("ring region: {e}")))?;
        let region = Arc::new(region);
        crate::ring::SubmissionRing::<crate::abi::io::TxDesc>::init(&region, 0, depth)
            .map_err(|e| LabError::Vfio(format!("ring: {e}")))?;
        // SAFETY: the region stays mapped (we hold it) until the unmap below, and no Rust
        // reference into it is live while the device may access it.
        unsafe { container.vfio_dma_map(PROBE_IOVA, bytes, region.as_ptr()) }.map_err(vfio)?;
        container.vfio_dma_unmap(PROBE_IOVA, bytes).map_err(vfio)?;
        Ok(ProbeReport {
            bdf: bdf.to_string(),
            group,
            regions,
            bar0: registers,
            bar0_mmapped: mmapped,
            ena,
            dma_mapped: (PROBE_IOVA, bytes),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A fixture sysfs: `devices` as (bdf, vendor, device, driver, total VFs, IOMMU group).
    struct Fixture {
        root: PathBuf,
        roots: LabRoots,
    }

    impl Fixture {
        fn new(name: &str, iommu: bool) -> Self {
            let root =
                std::env::temp_dir().join(format!("vnic-lab-sysfs-{}-{name}", std::process::id()));
            let _ = fs::remove_dir_all(&root);
            let roots = LabRoots { sysfs: root.join("sys"), dev: root.join("dev") };
            fs::create_dir_all(roots.sysfs.join("bus/pci/devices")).unwrap();
            fs::create_dir_all(roots.sysfs.join("bus/pci/drivers/vfio-pci")).unwrap();
            fs::write(roots.sysfs.join("bus/pci/drivers_probe"), "").unwrap();
            fs::write(roots.sysfs.join("bus/pci/drivers/vfio-pci/unbind"), "").unwrap();
            fs::create_dir_all(roots.sysfs.join("kernel/iommu_groups")).unwrap();
            fs::create_dir_all(roots.dev.join("vfio")).unwrap();
            if iommu {
                fs::write(roots.dev.join("vfio/vfio"), "").unwrap();
            }
            Self { root, roots }
        }

        fn add(
            &self,
            bdf: &str,
            ids: (u16, u16),
            driver: Option<&str>,
            total_vfs: Option<u16>,
            group: Option<u32>,
        ) {
            let s = &self.roots.sysfs;
            let dir = s.join("bus/pci/devices").join(bdf);
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("vendor"), format!("0x{:04x}\n", ids.0)).unwrap();
            fs::write(dir.join("device"), format!("0x{:04x}\n", ids.1)).unwrap();
            fs::write(dir.join("driver_override"), "(null)\n").unwrap();
            if let Some(d) = driver {
                let ddir = s.join("bus/pci/drivers").join(d);
                fs::create_dir_all(&ddir).unwrap();
                fs::write(ddir.join("unbind"), "").unwrap();
                symlink(&ddir, dir.join("driver")).unwrap();
            }
            if let Some(t) = total_vfs {
                fs::write(dir.join("sriov_totalvfs"), format!("{t}\n")).unwrap();
                fs::write(dir.join("sriov_numvfs"), "0\n").unwrap();
                fs::write(dir.join("sriov_drivers_autoprobe"), "1\n").unwrap();
            }
            if let Some(g) = group {
                let gdir = s.join("kernel/iommu_groups").join(g.to_string());
                fs::create_dir_all(gdir.join("devices")).unwrap();
                symlink(&dir, gdir.join("devices").join(bdf)).unwrap();
                symlink(&gdir, dir.join("iommu_group")).unwrap();
            }
        }

        fn vf_of(&self, pf: &str, n: u32, vf: &str) {
            let s = &self.roots.sysfs;
            let (pdir, vdir) =
                (s.join("bus/pci/devices").join(pf), s.join("bus/pci/devices").join(vf));
            symlink(&vdir, pdir.join(format!("virtfn{n}"))).unwrap();
            symlink(&pdir, vdir.join("physfn")).unwrap();
        }

        fn read(&self, rel: &str) -> String {
            fs::read_to_string(self.roots.sysfs.join(rel)).unwrap()
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.root);
        }
    }

    #[test]
    fn an_82599_with_vfs_an_ena_device_and_a_group_that_is_not_viable() {
        let f = Fixture::new("inventory", true);
        f.add("0000:01:00.0", (0x8086, 0x10fb), Some("ixgbe"), Some(63), Some(10));
        f.add("0000:01:00.1", (0x8086, 0x10fb), Some("ixgbe"), Some(63), Some(10));
        f.add("0000:02:10.0", (0x8086, 0x10ed), Some("vfio-pci"), None, Some(20));
        f.add("0000:02:10.2", (0x8086, 0x10ed), None, None, Some(21));
        f.vf_of("0000:01:00.0", 0, "0000:02:10.0");
        f.vf_of("0000:01:00.0", 1, "0000:02:10.2");
        fs::write(f.roots.sysfs.join("bus/pci/devices/0000:01:00.0/sriov_numvfs"), "2\n").unwrap();
        f.add("0000:00:05.0", (0x1d0f, 0xec20), Some("ena"), None, Some(3));
        fs::write(f.roots.dev.join("vfio/20"), "").unwrap();
        let inv = f.roots.inventory().unwrap();
        assert!(inv.iommu && inv.vfio_pci && inv.dev_vfio);
        let pf = inv.device("0000:01:00.0").unwrap();
        assert_eq!(
            (pf.total_vfs, pf.num_vfs, pf.model()),
            (Some(63), Some(2), "Intel 82599 (ixgbe) PF")
        );
        assert_eq!(pf.vfs, ["0000:02:10.0", "0000:02:10.2"]);
        let vf = inv.device("0000:02:10.0").unwrap();
        assert_eq!(
            (vf.physfn.as_deref(), vf.driver.as_deref()),
            (Some("0000:01:00.0"), Some("vfio-pci"))
        );
        assert_eq!(inv.device("0000:00:05.0").unwrap().model(), "Amazon ENA VF");
        assert!(inv.group(20).unwrap().viable() && inv.group(20).unwrap().dev_node);
        assert!(inv.group(21).unwrap().viable(), "a member with no driver is fine");
        let g10 = inv.group(10).unwrap();
        assert!(!g10.viable());
        assert_eq!(f.roots.check_usable("0000:02:10.0").unwrap(), 20);
        let e = f.roots.check_usable("0000:01:00.1").unwrap_err().to_string();
        assert!(
            e.contains("IOMMU group 10 is not viable")
                && e.contains("0000:01:00.0 is bound to ixgbe"),
            "{e}"
        );
        let e = f.roots.check_usable("0000:02:10.2").unwrap_err().to_string();
        assert!(e.contains("/dev/vfio/21") || e.contains("vfio/21"), "{e}");
    }

    #[test]
    fn enabling_vfs_follows_the_kernels_rules() {
        let f = Fixture::new("enable", true);
        f.add("0000:01:00.0", (0x8086, 0x10fb), Some("ixgbe"), Some(8), Some(1));
        f.add("0000:00:1f.6", (0x8086, 0x15bb), Some("e1000e"), None, Some(2));
        f.roots.enable_vfs("0000:01:00.0", 4).unwrap();
        assert_eq!(f.read("bus/pci/devices/0000:01:00.0/sriov_drivers_autoprobe"), "0");
        assert_eq!(f.read("bus/pci/devices/0000:01:00.0/sriov_numvfs"), "4");
        let e = f.roots.enable_vfs("0000:01:00.0", 2).unwrap_err();
        assert!(matches!(e, LabError::VfsEnabled { current: 4, requested: 2, .. }), "{e}");
        assert!(matches!(
            f.roots.enable_vfs("0000:01:00.0", 9),
            Err(LabError::TooManyVfs { total: 8, .. })
        ));
        assert!(matches!(f.roots.enable_vfs("0000:00:1f.6", 1), Err(LabError::NotSriov(_))));
        assert!(matches!(f.roots.enable_vfs("0000:09:00.0", 1), Err(LabError::NoSuchDevice(_))));
        // vfio-pci refuses a PF with VFs enabled.
        let e = f.roots.bind_vfio("0000:01:00.0").unwrap_err().to_string();
        assert!(e.contains("lab disable 0000:01:00.0"), "{e}");
        f.roots.disable_vfs("0000:01:00.0").unwrap();
        assert_eq!(f.read("bus/pci/devices/0000:01:00.0/sriov_numvfs"), "0");
    }

    #[test]
    fn a_bind_that_does_not_take_is_undone_and_unbind_restores() {
        let f = Fixture::new("bind", true);
        f.add("0000:02:10.0", (0x8086, 0x10ed), Some("ixgbevf"), None, Some(20));
        // The fixture has no kernel: the driver link never changes, so the bind must fail and
        // undo itself.
        let e = f.roots.bind_vfio("0000:02:10.0").unwrap_err();
        assert!(matches!(e, LabError::BindFailed { ref now, .. } if now == "ixgbevf"), "{e}");
        assert_eq!(f.read("bus/pci/drivers/ixgbevf/unbind"), "0000:02:10.0", "it was unbound");
        assert_eq!(
            f.read("bus/pci/devices/0000:02:10.0/driver_override"),
            "\n",
            "override cleared"
        );
        assert_eq!(f.read("bus/pci/drivers_probe"), "0000:02:10.0", "probed again");
        f.roots.unbind_vfio("0000:02:10.0").unwrap();
        // Already on vfio-pci: nothing to do.
        f.add("0000:02:10.4", (0x8086, 0x10ed), Some("vfio-pci"), None, Some(22));
        assert_eq!(f.roots.bind_vfio("0000:02:10.4").unwrap().as_deref(), Some("vfio-pci"));
    }

    #[test]
    fn addresses_are_checked_before_they_become_paths_or_anything_else_is_asked() {
        for good in ["0000:01:00.0", "0000:af:1f.7", "ffff:FF:00.1"] {
            assert!(check_bdf(good).is_ok(), "{good}");
        }
        for bad in [
            "notabdf",
            "0000:01:00",
            "01:00.0",
            "0000:01:20.0",
            "0000:01:00.8",
            "000:01:00.0",
            "0000:01:00.0/../../x",
            "../../../kernel",
            "",
        ] {
            assert!(matches!(check_bdf(bad), Err(LabError::BadAddress(_))), "{bad}");
        }
        // With the IOMMU off, a bad address is still reported as the address, not the IOMMU.
        let f = Fixture::new("badbdf", false);
        for op in [
            f.roots.bind_vfio("notabdf").map(drop),
            f.roots.unbind_vfio("notabdf"),
            f.roots.enable_vfs("../x", 1),
            f.roots.disable_vfs("notabdf"),
            f.roots.device("notabdf").map(drop),
            f.roots.check_usable("notabdf").map(drop),
            f.roots.probe("notabdf").map(drop),
        ] {
            let e = op.unwrap_err();
            assert!(matches!(e, LabError::BadAddress(_)), "{e}");
            assert!(e.to_string().contains("e.g. 0000:01:00.0"), "{e}");
        }
        assert_eq!(iommu_boot_hint("vendor_id\t: AuthenticAMD\n"), "amd_iommu=on iommu=pt");
        assert_eq!(iommu_boot_hint("vendor_id\t: GenuineIntel\n"), "intel_iommu=on iommu=pt");
        assert!(iommu_boot_hint("").contains("amd_iommu=on"));
        let _ = fs::remove_dir_all(&f.root);
    }

    #[test]
    fn no_iommu_and_no_vfio_pci_say_what_to_do() {
        let f = Fixture::new("noiommu", false);
        f.add("0000:02:10.0", (0x8086, 0x10ed), Some("ixgbevf"), None, None);
        let inv = f.roots.inventory().unwrap();
        assert!(!inv.iommu && !inv.dev_vfio);
        let e = f.roots.bind_vfio("0000:02:10.0").unwrap_err().to_string();
        assert!(e.contains("intel_iommu=on"), "{e}");
        let e = f.roots.check_usable("0000:02:10.0").unwrap_err().to_string();
        assert!(e.contains("IOMMU is off"), "{e}");
        let g = Fixture::new("novfio", true);
        g.add("0000:02:10.0", (0x8086, 0x10ed), Some("ixgbevf"), None, Some(4));
        fs::remove_dir_all(g.roots.sysfs.join("bus/pci/drivers/vfio-pci")).unwrap();
        let e = g.roots.bind_vfio("0000:02:10.0").unwrap_err().to_string();
        assert!(e.contains("modprobe vfio-pci"), "{e}");
    }
}
