//! An 82576 / I350 VF opened through VFIO: its own container (one IOMMU domain per VF, so
//! every VF can use the same IOVAs), BAR0 mapped for register access, PCI memory decoding and
//! bus mastering switched on, and the driver's DMA region mapped at [`IGBVF_IOVA`].

use std::os::fd::AsRawFd;
use std::sync::Arc;

use vfio_ioctls::{VfioContainer, VfioDevice, VfioOps};

use super::regs::{BAR0_BYTES, ids};
use super::{DmaLayout, IgbVf, IgbVfConfig, IgbVfError};
use crate::abi::regs::RegisterSpace;
use crate::device::{DmaWindow, Iova};
use crate::ring::SharedRegion;
use crate::vfio::LabRoots;

/// Where the driver's DMA region sits in the VF's I/O address space.
pub const IGBVF_IOVA: u64 = 0x2000_0000;

/// VFIO's region index of PCI config space (linux/vfio.h).
const CONFIG_REGION: u32 = 7;
/// PCI command register: memory space, bus master.
const PCI_COMMAND: u64 = 0x04;
const PCI_COMMAND_MEMORY: u16 = 1 << 1;
const PCI_COMMAND_MASTER: u16 = 1 << 2;
/// VFIO_REGION_INFO_FLAG_MMAP.
const REGION_MMAP: u32 = 1 << 2;

/// A VF's BAR0 mapped through VFIO, and what must outlive the mapping: the device, its
/// container and the DMA region mapped into it (unmapped when this goes).
pub struct VfioBar {
    ptr: *mut u8,
    len: usize,
    _device: VfioDevice,
    container: Arc<VfioContainer>,
    dma: Option<(u64, usize, Arc<SharedRegion>)>,
}

impl std::fmt::Debug for VfioBar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VfioBar")
            .field("len", &self.len)
            .field("dma", &self.dma.as_ref().map(|d| (d.0, d.1)))
            .finish_non_exhaustive()
    }
}

impl RegisterSpace for VfioBar {
    fn read32(&mut self, offset: u32) -> u32 {
        let off = offset as usize;
        if !off.is_multiple_of(4) || off + 4 > self.len {
            // What a read of nothing returns on PCI (a master abort).
            return u32::MAX;
        }
        // SAFETY: `off + 4` lies inside the BAR mapping (checked), which lives as long as
        // `self`, and is 4-byte aligned; device registers are read with volatile 32-bit loads.
        unsafe { std::ptr::read_volatile(self.ptr.add(off).cast::<u32>()) }
    }

    fn write32(&mut self, offset: u32, value: u32) {
        let off = offset as usize;
        if !off.is_multiple_of(4) || off + 4 > self.len {
            return;
        }
        // SAFETY: as for `read32`: in bounds, aligned, mapped for writing.
        unsafe { std::ptr::write_volatile(self.ptr.add(off).cast::<u32>(), value) }
    }
}

impl Drop for VfioBar {
    fn drop(&mut self) {
        if let Some((iova, len, _region)) = self.dma.take() {
            let _ = self.container.vfio_dma_unmap(iova, len);
        }
        // SAFETY: unmaps exactly the mapping made in `open`; nothing refers to it afterwards.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
        // The device and its container close after this, as the fields drop.
    }
}

/// Opens the VF `bdf` (bound to vfio-pci) and brings it up with `config`.
pub fn open(
    roots: &LabRoots,
    bdf: &str,
    config: IgbVfConfig,
) -> Result<IgbVf<VfioBar>, IgbVfError> {
    let lab = |e: crate::vfio::LabError| IgbVfError::Vfio(e.to_string());
    let vfio = |e: vfio_ioctls::VfioError| IgbVfError::Vfio(format!("{bdf}: VFIO: {e}"));
    let dev = roots.device(bdf).map_err(lab)?;
    let known = [ids::DEVICE_82576_VF, ids::DEVICE_I350_VF];
    if dev.vendor != ids::VENDOR_INTEL || !known.contains(&dev.device) {
        return Err(IgbVfError::Vfio(format!(
            "{bdf} is {:04x}:{:04x} ({}), not an 82576 (8086:10ca) or I350 (8086:1520) virtual function",
            dev.vendor,
            dev.device,
            dev.model()
        )));
    }
    if dev.driver.as_deref() != Some("vfio-pci") {
        return Err(IgbVfError::Vfio(format!(
            "{bdf} is bound to {}, not vfio-pci: run `vnic-lab lab bind {bdf}` first",
            dev.driver.as_deref().unwrap_or("no driver")
        )));
    }
    roots.check_usable(bdf).map_err(lab)?;
    let layout = DmaLayout::new(config.depth)?;
    let container = Arc::new(VfioContainer::new(None).map_err(vfio)?);
    let ops: Arc<dyn VfioOps> = container.clone();
    let device = VfioDevice::new(&roots.device_dir(bdf), ops, false).map_err(vfio)?;
    let size = device.get_region_size(0);
    if size < BAR0_BYTES {
        return Err(IgbVfError::SmallBar(size));
    }
    if device.get_region_flags(0) & REGION_MMAP == 0 {
        return Err(IgbVfError::Vfio(format!("{bdf}: VFIO does not let BAR0 be mapped")));
    }
    let len = size as usize;
    // SAFETY: maps BAR0 of the device fd we hold, at the offset VFIO gave for it, shared and
    // read-write; the result is checked before use and unmapped when the VfioBar goes.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            device.as_raw_fd(),
            device.get_region_offset(0) as libc::off_t,
        )
    };
    if ptr == libc::MAP_FAILED {
        let e = std::io::Error::last_os_error();
        return Err(IgbVfError::Vfio(format!("{bdf}: mapping BAR0: {e}")));
    }
    let mut command = [0u8; 2];
    device.region_read(CONFIG_REGION, &mut command, PCI_COMMAND);
    let enabled = u16::from_le_bytes(command) | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER;
    device.region_write(CONFIG_REGION, &enabled.to_le_bytes(), PCI_COMMAND);
    let mut bar = VfioBar { ptr: ptr.cast(), len, _device: device, container, dma: None };
    let region = Arc::new(
        SharedRegion::anonymous(layout.bytes)
            .map_err(|e| IgbVfError::Vfio(format!("DMA region: {e}")))?,
    );
    // SAFETY: the region stays mapped while the device may use it: the VfioBar holds it and
    // unmaps it from the container before letting it go; no Rust reference into it is held
    // across device accesses (the driver copies through DmaWindow).
    unsafe { bar.container.vfio_dma_map(IGBVF_IOVA, layout.bytes, region.as_ptr()) }
        .map_err(vfio)?;
    bar.dma = Some((IGBVF_IOVA, layout.bytes, region.clone()));
    IgbVf::open(bar, DmaWindow::new(region, Iova(IGBVF_IOVA)), config)
}
