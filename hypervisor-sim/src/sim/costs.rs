//! The cost model: what each piece of work costs in virtual time.
//!
//! The device code moves every byte for real; this table says how long each step takes on the
//! system being modelled (an EC2-class host with an ENA-style NIC on PCIe), so a simulated run
//! reports the model and not the machine the simulator runs on. Every default is an order of
//! magnitude a published measurement gives; a scenario overrides any of them (`[costs]`).
//!
//! | cost | default | what it is | source |
//! | --- | ---: | --- | --- |
//! | `guest_tx_packet_ns` | 1,000 | guest kernel send path per packet (socket, UDP/IP, qdisc, `ena_start_xmit`) | ~1 Mpps per core through the Linux UDP send path (Cloudflare, "How to receive a million packets per second", 2015; XDP paper, Høiland-Jørgensen et al., CoNEXT 2018, Fig. 3) |
//! | `guest_tx_byte_ps` | 100 | copy from the application into the TX buffer, per byte | ~10 GB/s single-core `memcpy` |
//! | `guest_rx_packet_ns` | 1,500 | NAPI poll, IP/UDP receive, socket wake-up and `recvmsg` per packet | same sources: the receive path is the costlier one |
//! | `guest_rx_byte_ps` | 100 | copy to the application, per byte | ~10 GB/s |
//! | `doorbell_ns` | 200 | the guest's MMIO write of the TX tail to the VF's BAR (posted, uncached) | posted MMIO writes, 100–250 ns of CPU (Neugebauer et al., "Understanding PCIe performance for end host networking", SIGCOMM 2018) |
//! | `dma_read_ns` | 500 | one PCIe read round trip (the descriptor, then the buffer: two per frame) | 400–900 ns DMA read latency (Neugebauer et al. 2018) |
//! | `dma_write_ns` | 250 | a posted PCIe write landing in host memory (RX data and completion, the MSI-X message) | about half a read round trip (same) |
//! | `pcie_byte_ps` | 80 | PCIe payload per byte (Gen3 x16, ~12.5 GB/s effective) | PCIe 3.0 x16 = 15.75 GB/s raw less TLP overhead |
//! | `device_packet_ns` | 50 | the NIC pipeline per packet (parse, switch, RSS, shaper) | 20 Mpps per queue, the order of a 100 Gbps NIC |
//! | `interrupt_ns` | 2,000 | MSI-X to the guest's vCPU (posted interrupt) and the handler scheduling NAPI | 1–3 µs interrupt delivery in a VM (Gordon et al., "ELI", ASPLOS 2012) |
//! | `vm_exit_ns` | 1,500 | emulated path: the doorbell's MMIO write exits to KVM, signals the ioeventfd, re-enters | ~1–2 µs per MMIO exit round trip on KVM |
//! | `hypervisor_wake_ns` | 5,000 | emulated path: waking the hypervisor's worker thread (trap or backend interrupt) | Linux wake-up latency of a sleeping thread, a few µs |
//! | `hypervisor_packet_ns` | 1,000 | emulated path: per frame through the software switch (vhost-style worker) | ~1 Mpps per vhost worker |
//! | `hypervisor_byte_ps` | 100 | emulated path: the hypervisor's extra copy, per byte | ~10 GB/s |
//! | `efa_post_ns` | 100 | EFA: the application (libfabric, rdma-core) writes a send WQE in user space | verbs post in the order of 100 ns (Kalia et al., "Design Guidelines for High Performance RDMA Systems", USENIX ATC 2016) |
//! | `efa_poll_ns` | 100 | EFA: the application takes one completion from its CQ in user space | same |
//!
//! Not in the table because they come from elsewhere: interrupt moderation (the device's own
//! moderator, ENA's 20 µs RX default, on the virtual clock), the wire (the fabric: one-way latency
//! of the network class and serialisation at the link rate) and the instance's bandwidth,
//! PPS and per-flow caps (the device's shaper).
//!
//! Work occupies a resource: guest stack work a vCPU of the VM, the NIC's per-packet and
//! per-byte work the PF's engine, the hypervisor's work one host CPU. Costs are integers (ns, and
//! ps per byte) so that a run is exact and the same on every machine.

/// Virtual-time costs (see the module docs for each default's source).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CostModel {
    /// Guest kernel send path per packet, ns.
    pub guest_tx_packet_ns: u64,
    /// Guest copy into the TX buffer, ps per byte.
    pub guest_tx_byte_ps: u64,
    /// Guest kernel receive path per packet, ns.
    pub guest_rx_packet_ns: u64,
    /// Guest copy to the application, ps per byte.
    pub guest_rx_byte_ps: u64,
    /// MMIO doorbell write, ns.
    pub doorbell_ns: u64,
    /// PCIe read round trip, ns.
    pub dma_read_ns: u64,
    /// Posted PCIe write, ns.
    pub dma_write_ns: u64,
    /// PCIe payload, ps per byte.
    pub pcie_byte_ps: u64,
    /// NIC pipeline per packet, ns.
    pub device_packet_ns: u64,
    /// Interrupt delivery into the guest, ns.
    pub interrupt_ns: u64,
    /// VM exit round trip for an emulated doorbell, ns.
    pub vm_exit_ns: u64,
    /// Waking the hypervisor's worker, ns.
    pub hypervisor_wake_ns: u64,
    /// Hypervisor work per frame, ns.
    pub hypervisor_packet_ns: u64,
    /// Hypervisor copy, ps per byte.
    pub hypervisor_byte_ps: u64,
    /// EFA work request posted from user space, ns.
    pub efa_post_ns: u64,
    /// EFA completion polled from user space, ns.
    pub efa_poll_ns: u64,
}

impl Default for CostModel {
    fn default() -> Self {
        Self {
            guest_tx_packet_ns: 1_000,
            guest_tx_byte_ps: 100,
            guest_rx_packet_ns: 1_500,
            guest_rx_byte_ps: 100,
            doorbell_ns: 200,
            dma_read_ns: 500,
            dma_write_ns: 250,
            pcie_byte_ps: 80,
            device_packet_ns: 50,
            interrupt_ns: 2_000,
            vm_exit_ns: 1_500,
            hypervisor_wake_ns: 5_000,
            hypervisor_packet_ns: 1_000,
            hypervisor_byte_ps: 100,
            efa_post_ns: 100,
            efa_poll_ns: 100,
        }
    }
}

/// `bytes` at `ps_per_byte`, in whole ns (rounded up: work never takes less than it costs).
#[inline]
pub fn bytes_ns(bytes: u64, ps_per_byte: u64) -> u64 {
    (bytes * ps_per_byte).div_ceil(1000)
}

impl CostModel {
    /// Every cost by its scenario name, in table order (for `[costs]` and reports).
    pub fn fields(&self) -> [(&'static str, u64); 16] {
        [
            ("guest_tx_packet_ns", self.guest_tx_packet_ns),
            ("guest_tx_byte_ps", self.guest_tx_byte_ps),
            ("guest_rx_packet_ns", self.guest_rx_packet_ns),
            ("guest_rx_byte_ps", self.guest_rx_byte_ps),
            ("doorbell_ns", self.doorbell_ns),
            ("dma_read_ns", self.dma_read_ns),
            ("dma_write_ns", self.dma_write_ns),
            ("pcie_byte_ps", self.pcie_byte_ps),
            ("device_packet_ns", self.device_packet_ns),
            ("interrupt_ns", self.interrupt_ns),
            ("vm_exit_ns", self.vm_exit_ns),
            ("hypervisor_wake_ns", self.hypervisor_wake_ns),
            ("hypervisor_packet_ns", self.hypervisor_packet_ns),
            ("hypervisor_byte_ps", self.hypervisor_byte_ps),
            ("efa_post_ns", self.efa_post_ns),
            ("efa_poll_ns", self.efa_poll_ns),
        ]
    }

    /// Sets the cost named `name`; false if there is no such cost.
    pub fn set(&mut self, name: &str, value: u64) -> bool {
        let slot = match name {
            "guest_tx_packet_ns" => &mut self.guest_tx_packet_ns,
            "guest_tx_byte_ps" => &mut self.guest_tx_byte_ps,
            "guest_rx_packet_ns" => &mut self.guest_rx_packet_ns,
            "guest_rx_byte_ps" => &mut self.guest_rx_byte_ps,
            "doorbell_ns" => &mut self.doorbell_ns,
            "dma_read_ns" => &mut self.dma_read_ns,
            "dma_write_ns" => &mut self.dma_write_ns,
            "pcie_byte_ps" => &mut self.pcie_byte_ps,
            "device_packet_ns" => &mut self.device_packet_ns,
            "interrupt_ns" => &mut self.interrupt_ns,
            "vm_exit_ns" => &mut self.vm_exit_ns,
            "hypervisor_wake_ns" => &mut self.hypervisor_wake_ns,
            "hypervisor_packet_ns" => &mut self.hypervisor_packet_ns,
            "hypervisor_byte_ps" => &mut self.hypervisor_byte_ps,
            "efa_post_ns" => &mut self.efa_post_ns,
            "efa_poll_ns" => &mut self.efa_poll_ns,
            _ => return false,
        };
        *slot = value;
        true
    }

    /// Guest send-path work for one frame of `len` bytes, ns (stack and copy).
    pub fn guest_tx_ns(&self, len: usize) -> u64 {
        self.guest_tx_packet_ns + bytes_ns(len as u64, self.guest_tx_byte_ps)
    }

    /// Guest receive-path work for one frame of `len` bytes, ns.
    pub fn guest_rx_ns(&self, len: usize) -> u64 {
        self.guest_rx_packet_ns + bytes_ns(len as u64, self.guest_rx_byte_ps)
    }

    /// From the doorbell to the engine's handling of a burst of `frames` frames, `bytes` in
    /// all, on an idle engine: the descriptor fetch, the payload fetch, the pipeline.
    pub fn device_tx_ns(&self, frames: u64, bytes: u64) -> u64 {
        2 * self.dma_read_ns + self.device_occupancy_ns(frames, bytes)
    }

    /// How long a burst keeps the engine busy (the DMA latencies overlap with other work; the
    /// bytes and the per-packet pipeline do not).
    pub fn device_occupancy_ns(&self, frames: u64, bytes: u64) -> u64 {
        bytes_ns(bytes, self.pcie_byte_ps) + frames * self.device_packet_ns
    }

    /// Hypervisor work for `frames` frames and `bytes` copied, ns.
    pub fn hypervisor_ns(&self, frames: u64, bytes: u64) -> u64 {
        frames * self.hypervisor_packet_ns + bytes_ns(bytes, self.hypervisor_byte_ps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cost_is_named_and_settable_and_bytes_round_up() {
        let mut c = CostModel::default();
        for (i, (name, _)) in CostModel::default().fields().iter().enumerate() {
            assert!(c.set(name, 7_000 + i as u64), "{name}");
        }
        assert!(c.fields().iter().enumerate().all(|(i, (_, v))| *v == 7_000 + i as u64));
        assert!(!c.set("no_such_cost", 1));
        assert_eq!(bytes_ns(1500, 100), 150);
        assert_eq!(bytes_ns(1, 80), 1, "a fraction of a ns is a whole ns");
        assert_eq!(bytes_ns(0, 80), 0);
        let d = CostModel::default();
        assert_eq!(d.guest_tx_ns(1500), 1_000 + 150);
        assert_eq!(d.device_tx_ns(1, 1500), 2 * 500 + 120 + 50);
    }
}
