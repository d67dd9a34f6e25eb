//! Low-latency queues on the device: a VF's LLQ BAR and the TX rings placed in it.
//!
//! Each VF has an LLQ BAR of [`LLQ_QUEUES`] slots, one TX ring each: up to 1024 entries of
//! 128 bytes (or 512 of 192 or 256 bytes, ENA's large-header option), with the ring's index
//! block in the [`crate::ring::INDEX_BLOCK_BYTES`] before entry 0. `CREATE_SQ` with device placement lays a
//! ring out in a free slot (the memory is the device's, so whatever a driver left there is
//! overwritten) and answers with entry 0's offset in the BAR; the driver maps the BAR
//! ([`PhysicalFunction::llq_bar`], as it would map BAR2 through VFIO) and writes whole entries,
//! descriptors and header together, then publishes its tail.

use std::sync::Arc;

use super::{DeviceError, PhysicalFunction};
use crate::abi::io::TxDesc;
use crate::abi::llq::{Entry128, Entry192, Entry256, LlqEntry};
use crate::ring::{RingError, SharedRegion, SubmissionConsumer, SubmissionRing, ring_bytes};

/// Low-latency queues a VF may have.
pub const LLQ_QUEUES: usize = 8;
/// Largest LLQ depth in 128-byte entries (ENA's `max_llq_depth`); 256-byte entries halve it.
pub const LLQ_MAX_DEPTH: u32 = 1024;
/// Bytes of one slot of the LLQ BAR: the index block and 1024 × 128 bytes.
pub const LLQ_SLOT_BYTES: usize = ring_bytes(LLQ_MAX_DEPTH, 128);

/// Where a queue pair's TX submission ring is and what its entries are.
#[derive(Debug)]
pub(crate) enum TxRing {
    /// 16-byte descriptors in guest memory.
    Host(SubmissionConsumer<TxDesc>),
    /// 128-byte LLQ entries in slot `slot` of the LLQ BAR.
    Llq128 { ring: SubmissionConsumer<Entry128>, slot: usize },
    /// 192-byte LLQ entries.
    Llq192 { ring: SubmissionConsumer<Entry192>, slot: usize },
    /// 256-byte LLQ entries.
    Llq256 { ring: SubmissionConsumer<Entry256>, slot: usize },
}

impl TxRing {
    pub(crate) fn is_empty(&mut self) -> bool {
        match self {
            Self::Host(r) => r.is_empty(),
            Self::Llq128 { ring, .. } => ring.is_empty(),
            Self::Llq192 { ring, .. } => ring.is_empty(),
            Self::Llq256 { ring, .. } => ring.is_empty(),
        }
    }

    pub(crate) fn llq_slot(&self) -> Option<usize> {
        match self {
            Self::Host(_) => None,
            Self::Llq128 { slot, .. } | Self::Llq192 { slot, .. } | Self::Llq256 { slot, .. } => {
                Some(*slot)
            }
        }
    }

    /// Takes every posted entry and marks the request id of each chain it starts in flight
    /// (a reset hands those buffers back).
    pub(crate) fn drain_into(&mut self, in_flight: &mut [bool]) {
        fn mark(first: TxDesc, in_flight: &mut [bool]) {
            if first.is_first()
                && let Some(flag) = in_flight.get_mut(usize::from(first.req_id()))
            {
                *flag = true;
            }
        }
        fn drain<T: bytemuck::Pod>(
            ring: &mut SubmissionConsumer<T>,
            first: impl Fn(&T) -> TxDesc,
            in_flight: &mut [bool],
        ) {
            let mut one = [T::zeroed()];
            for _ in 0..ring.depth() {
                if ring.pop_burst(&mut one) == 0 {
                    break;
                }
                mark(first(&one[0]), in_flight);
            }
        }
        match self {
            Self::Host(r) => drain(r, |d| *d, in_flight),
            Self::Llq128 { ring, .. } => drain(ring, |e| e.desc(0), in_flight),
            Self::Llq192 { ring, .. } => drain(ring, |e| e.desc(0), in_flight),
            Self::Llq256 { ring, .. } => drain(ring, |e| e.desc(0), in_flight),
        }
    }
}

/// The LLQ layout a VF's driver chose (`SET_FEATURE LLQ`): entries of 128, 192 or 256 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LlqChoice {
    pub(crate) entry_bytes: usize,
}

impl Default for LlqChoice {
    fn default() -> Self {
        Self { entry_bytes: Entry128::BYTES }
    }
}

impl LlqChoice {
    /// The deepest power-of-two ring of these entries in a slot's 1024 × 128 bytes.
    pub(crate) fn max_depth(self) -> u32 {
        let fits = (LLQ_MAX_DEPTH as usize * 128 / self.entry_bytes) as u32;
        1 << fits.ilog2()
    }
}

impl PhysicalFunction {
    /// VF `vf`'s LLQ BAR, the device memory its driver writes low-latency queues into (made on
    /// first use).
    pub fn llq_bar(&mut self, vf: u16) -> Result<Arc<SharedRegion>, DeviceError> {
        let i = self.check(vf)?;
        if let Some(bar) = &self.vfs[i].llq_bar {
            return Ok(bar.clone());
        }
        let bar = SharedRegion::anonymous(LLQ_QUEUES * LLQ_SLOT_BYTES)
            .map_err(|e| DeviceError::Ring { iova: 0, source: RingError::Region(e) })?;
        let bar = Arc::new(bar);
        self.vfs[i].llq_bar = Some(bar.clone());
        Ok(bar)
    }

    /// Lays out an LLQ ring of `depth` entries in a free slot of VF `i`'s BAR (`busy` slots are
    /// taken by queues being assembled); returns the slot.
    pub(crate) fn lay_out_llq(
        &mut self,
        vf: u16,
        depth: u32,
        busy: Option<usize>,
    ) -> Result<usize, DeviceError> {
        let bar = self.llq_bar(vf)?;
        let i = usize::from(vf);
        let v = &self.vfs[i];
        let used: Vec<usize> =
            v.queues.iter().filter_map(|q| q.tx.llq_slot()).chain(busy).collect();
        let slot =
            (0..LLQ_QUEUES).find(|s| !used.contains(s)).ok_or(DeviceError::TooManyQueues { vf })?;
        let at = slot * LLQ_SLOT_BYTES;
        let laid = match v.llq.entry_bytes {
            Entry256::BYTES => SubmissionRing::<Entry256>::reinit(&bar, at, depth),
            Entry192::BYTES => SubmissionRing::<Entry192>::reinit(&bar, at, depth),
            _ => SubmissionRing::<Entry128>::reinit(&bar, at, depth),
        };
        laid.map_err(|source| DeviceError::Ring { iova: at as u64, source })?;
        Ok(slot)
    }

    /// The device's end of the LLQ ring in `slot`.
    pub(crate) fn attach_llq(&mut self, vf: u16, slot: usize) -> Result<TxRing, DeviceError> {
        let bar = self.llq_bar(vf)?;
        let at = slot * LLQ_SLOT_BYTES;
        let err = |source| DeviceError::Ring { iova: at as u64, source };
        Ok(match self.vfs[usize::from(vf)].llq.entry_bytes {
            Entry256::BYTES => {
                TxRing::Llq256 { ring: SubmissionConsumer::attach(bar, at).map_err(err)?, slot }
            }
            Entry192::BYTES => {
                TxRing::Llq192 { ring: SubmissionConsumer::attach(bar, at).map_err(err)?, slot }
            }
            _ => TxRing::Llq128 { ring: SubmissionConsumer::attach(bar, at).map_err(err)?, slot },
        })
    }
}
