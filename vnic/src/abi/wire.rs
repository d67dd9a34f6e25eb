//! Little-endian field access at byte offsets, the one place the ABI's encoders touch bytes.

/// Mask of the 48 bits an ENA address carries.
pub(crate) const ADDR_MASK: u64 = (1 << 48) - 1;

pub(crate) fn put_u8(b: &mut [u8], at: usize, v: u8) {
    b[at] = v;
}

pub(crate) fn put_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Writes `addr` as `ena_common_mem_addr` (8 bytes: low 32 bits, high 16 bits, 16 reserved;
/// masked to 48 bits, reserved half zero).
pub(crate) fn put_addr(b: &mut [u8], at: usize, addr: u64) {
    let addr = addr & ADDR_MASK;
    put_u32(b, at, addr as u32);
    put_u16(b, at + 4, (addr >> 32) as u16);
    put_u16(b, at + 6, 0);
}

pub(crate) fn u8_at(b: &[u8], at: usize) -> u8 {
    b[at]
}

pub(crate) fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from(u32_at(b, at)) | u64::from(u32_at(b, at + 4)) << 32
}

/// Reads an `ena_common_mem_addr` (the reserved half is ignored, as ENA's must-be-zero fields
/// are).
pub(crate) fn addr_at(b: &[u8], at: usize) -> u64 {
    u64::from(u32_at(b, at)) | u64::from(u16_at(b, at + 4)) << 32
}
