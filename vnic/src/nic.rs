//! A NIC queue pair as a workload drives it, whatever NIC is behind it.
//!
//! The same four verbs run every polled network driver: post a burst of frames for transmit,
//! reap what the device has finished sending, take what it has received, and give the device
//! buffers to receive into again. [`QueuePair`] names them once, so the paced-flow workload
//! (sequence numbers, timestamps, latency histograms) drives the simulated ENA-style VF
//! ([`crate::driver::QueuePairDriver`]), a real Intel 82576 / I350 virtual function through
//! VFIO ([`crate::igbvf::IgbVf`]) or a kernel netdev through a packet socket without knowing
//! which.

/// A transmit and receive queue pair, polled.
pub trait QueuePair {
    /// Copies as many of `frames` as there is room for into transmit buffers and posts them with
    /// one doorbell; returns how many were taken (a prefix of `frames`).
    fn send_burst(&mut self, frames: &[&[u8]]) -> usize;

    /// Reaps transmit completions, freeing their buffers; returns how many.
    fn reap_tx(&mut self) -> usize;

    /// Takes the frames received so far, calling `each` once per whole frame, and reposts their
    /// buffers; returns how many frames were taken.
    fn recv_each(&mut self, each: &mut dyn FnMut(&[u8])) -> usize;

    /// Posts every receive buffer not posted yet; returns how many.
    fn refill_rx(&mut self) -> usize;

    /// Frames the receive side can hold before it drops: a sender on the same clock keeps at
    /// most this many in flight towards it.
    fn rx_capacity(&self) -> usize;

    /// The largest frame [`QueuePair::send_burst`] takes, in bytes.
    fn max_frame(&self) -> usize;
}

impl QueuePair for crate::driver::QueuePairDriver {
    fn send_burst(&mut self, frames: &[&[u8]]) -> usize {
        crate::driver::QueuePairDriver::send_burst(self, frames)
    }

    fn reap_tx(&mut self) -> usize {
        crate::driver::QueuePairDriver::reap_tx(self)
    }

    fn recv_each(&mut self, each: &mut dyn FnMut(&[u8])) -> usize {
        self.recv(|frame, _hash| each(frame))
    }

    fn refill_rx(&mut self) -> usize {
        crate::driver::QueuePairDriver::refill_rx(self)
    }

    fn rx_capacity(&self) -> usize {
        // One slot of a ring stays empty.
        self.layout().depth as usize - 1
    }

    fn max_frame(&self) -> usize {
        self.layout().tx_buf
    }
}
