//! A VF's DMA window: the guest memory the device may touch, and nothing else.
//!
//! A window is a [`SharedRegion`] seen at a base I/O virtual address ([`Iova`]), as an IOMMU maps
//! a VM's memory for its passthrough device. Every address a guest hands the device (ring bases,
//! buffer addresses) is checked here with overflow-safe arithmetic before any byte moves, so a
//! hostile descriptor can name any 64-bit address and length and still never reach outside the
//! window: another VF's memory, the host's, or past the end.

use std::sync::Arc;

use crate::ring::SharedRegion;

/// An I/O virtual address: what a guest writes into a descriptor. Never a host pointer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Iova(pub u64);

/// An address range outside the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("DMA to {iova:#x}+{len} is outside the window {base:#x}+{size}")]
pub struct DmaError {
    /// Requested address.
    pub iova: u64,
    /// Requested length.
    pub len: u64,
    /// Window base.
    pub base: u64,
    /// Window size.
    pub size: u64,
}

/// Guest memory at a base IOVA.
#[derive(Debug, Clone)]
pub struct DmaWindow {
    region: Arc<SharedRegion>,
    base: u64,
}

impl DmaWindow {
    /// `region` seen at `base`.
    pub fn new(region: Arc<SharedRegion>, base: Iova) -> Self {
        Self { region, base: base.0 }
    }

    /// The base IOVA.
    pub fn base(&self) -> Iova {
        Iova(self.base)
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.region.len() as u64
    }

    /// The backing region.
    pub fn region(&self) -> &Arc<SharedRegion> {
        &self.region
    }

    /// Whether `other` is this window: the same region at the same base.
    pub fn same(&self, other: &DmaWindow) -> bool {
        Arc::ptr_eq(&self.region, &other.region) && self.base == other.base
    }

    /// The IOVA of byte `offset` of the region.
    pub fn iova(&self, offset: usize) -> Iova {
        Iova(self.base.wrapping_add(offset as u64))
    }

    /// The region offset of `[iova, iova + len)`, if the range lies inside the window.
    #[inline]
    pub fn offset(&self, iova: u64, len: u64) -> Result<usize, DmaError> {
        let err = DmaError { iova, len, base: self.base, size: self.size() };
        let off = iova.checked_sub(self.base).ok_or(err)?;
        let end = off.checked_add(len).ok_or(err)?;
        if end > self.size() {
            return Err(err);
        }
        Ok(off as usize)
    }

    /// Hints the CPU to start loading the first cache lines of `[iova, iova + len)` (at most
    /// 256 bytes) if the range lies inside the window. The engine issues these for a whole burst
    /// before touching any buffer, so the cache misses on buffers another core wrote overlap
    /// instead of queueing one after another.
    #[inline]
    pub fn prefetch(&self, iova: u64, len: u64) {
        let Ok(off) = self.offset(iova, len) else { return };
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            let lines = len.clamp(1, 256).div_ceil(64) as usize;
            for line in 0..lines {
                // SAFETY: the address lies inside the mapping (checked above: off + len is in
                // bounds, and line * 64 < len); a prefetch never faults and changes no state
                // the program can observe.
                unsafe {
                    let p = self.region.as_ptr().add(off + line * 64);
                    _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>());
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = off;
    }

    /// A read-only view of `[iova, iova + len)`, without copying.
    ///
    /// # Safety
    /// Nothing may write the range while the view lives: for a guest, the buffer must be its own
    /// (completed by the device and not posted again).
    #[inline]
    pub unsafe fn view(&self, iova: u64, len: usize) -> Result<&[u8], DmaError> {
        let off = self.offset(iova, len as u64)?;
        // SAFETY: the range lies inside the mapping, which lives as long as `self`; the caller
        // guarantees that nothing writes it meanwhile.
        Ok(unsafe { std::slice::from_raw_parts(self.region.as_ptr().add(off), len) })
    }

    /// Copies `dst.len()` bytes from guest memory at `iova`.
    #[inline]
    pub fn read(&self, iova: u64, dst: &mut [u8]) -> Result<(), DmaError> {
        let off = self.offset(iova, dst.len() as u64)?;
        // SAFETY: [off, off + dst.len()) lies inside the mapping (checked above), which the Arc
        // keeps alive; `dst` is caller memory, so the ranges do not overlap. The guest may write
        // the same bytes concurrently, as a device's DMA can race a CPU: the copy then holds some
        // mix of old and new bytes, which the caller validates as untrusted input.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.region.as_ptr().add(off),
                dst.as_mut_ptr(),
                dst.len(),
            )
        };
        Ok(())
    }

    /// Copies the `N` bytes at `iova` into `dst`, `N` a constant: the compiler moves them with
    /// a few fixed-width loads and stores inline, where [`read`](Self::read) of a length known
    /// only at run time calls `memmove`. The engine reads a short frame's buffer so, 128 bytes
    /// at a time (bytes past the frame are copied and ignored): 1.04–1.06× on the one-thread VF
    /// path at 64 B. (Reading 64 bytes for frames of one line measured slower.)
    #[inline]
    pub fn read_array<const N: usize>(&self, iova: u64, dst: &mut [u8; N]) -> Result<(), DmaError> {
        let off = self.offset(iova, N as u64)?;
        // SAFETY: as for `read`: [off, off + N) is inside the mapping, which the Arc keeps
        // alive, and `dst` is caller memory, so the ranges do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(self.region.as_ptr().add(off), dst.as_mut_ptr(), N)
        };
        Ok(())
    }

    /// Copies `[iova, iova + len)` of this window to `[dst_iova, dst_iova + len)` of `dst`,
    /// memory to memory with no bounce buffer: a device moving a frame from one guest's buffer
    /// into another's. Both ranges are checked first; they may overlap (a guest can point a TX
    /// and an RX buffer at the same bytes, and two VFs may share a region).
    pub fn copy_to(
        &self,
        iova: u64,
        dst: &DmaWindow,
        dst_iova: u64,
        len: usize,
    ) -> Result<(), DmaError> {
        let from = self.offset(iova, len as u64)?;
        let to = dst.offset(dst_iova, len as u64)?;
        // SAFETY: both ranges lie inside their mappings (checked above), which the Arcs keep
        // alive; `ptr::copy` allows them to overlap. Guests may write either range meanwhile,
        // as DMA races a CPU: the bytes are then some mix, which nobody downstream trusts.
        unsafe { std::ptr::copy(self.region.as_ptr().add(from), dst.region.as_ptr().add(to), len) };
        Ok(())
    }

    /// Loads the aligned 32-bit little-endian word at `iova` with acquire ordering: the status
    /// word a device writes last, after which the rest of its descriptor may be read.
    pub fn load_u32_acquire(&self, iova: u64) -> Result<u32, DmaError> {
        let off = self.offset(iova, 4)?;
        // SAFETY: the word lies inside the mapping (checked above), which the Arc keeps alive;
        // the pointer is 4-byte aligned (checked here: the mapping is page aligned), so it may
        // be viewed as an AtomicU32, which any other writer of it (a device's DMA) races safely.
        let ptr = unsafe { self.region.as_ptr().add(off) };
        if !(ptr as usize).is_multiple_of(4) {
            return Err(DmaError { iova, len: 4, base: self.base, size: self.size() });
        }
        // SAFETY: as above: in bounds, aligned, alive for the borrow.
        let word = unsafe { std::sync::atomic::AtomicU32::from_ptr(ptr.cast::<u32>()) };
        Ok(u32::from_le(word.load(std::sync::atomic::Ordering::Acquire)))
    }

    /// Copies `src` into guest memory at `iova`.
    #[inline]
    pub fn write(&self, iova: u64, src: &[u8]) -> Result<(), DmaError> {
        let off = self.offset(iova, src.len() as u64)?;
        // SAFETY: as for `read`, in the other direction: the range is inside the mapping and
        // does not overlap `src`.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.region.as_ptr().add(off), src.len())
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_range_is_checked_without_overflow() {
        let w = DmaWindow::new(Arc::new(SharedRegion::anonymous(4096).unwrap()), Iova(0x1_0000));
        assert_eq!(w.offset(0x1_0000, 4096), Ok(0));
        assert_eq!(w.offset(0x1_0ff0, 16), Ok(0xff0));
        assert!(w.offset(0x1_0ff0, 17).is_err());
        assert!(w.offset(0xffff, 1).is_err(), "below the base");
        assert!(w.offset(u64::MAX, 2).is_err(), "wraps");
        assert!(w.offset(0x1_0001, u64::MAX).is_err(), "huge length");
        w.write(0x1_0100, b"hello").unwrap();
        let mut buf = [0u8; 5];
        w.read(0x1_0100, &mut buf).unwrap();
        assert_eq!(&buf, b"hello");
        assert!(w.write(0x1_0ffe, b"abc").is_err());
        assert_eq!(w.iova(16), Iova(0x1_0010));
    }
}
