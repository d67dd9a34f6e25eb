//! Interrupts and their moderation: how a driver learns of completions without spinning.
//!
//! Per queue and direction the driver chooses busy polling (the device never signals) or
//! moderated interrupts: the device raises the queue's [`InterruptLine`] once `packets`
//! completions are pending or the oldest pending one has waited `delay_us`, whichever comes first
//! (ENA's defaults: 64 µs for TX, 20 µs to start with for RX). A line is an eventfd: the device
//! writes it, the driver blocks on it (`poll(2)` with a timeout), as a VM's vCPU waits for an MSI-X
//! interrupt injected through KVM's irqfd, which is an eventfd too.
//!
//! Under a discrete-event simulation a line is a flag instead ([`InterruptLine::flag`]): the
//! device raises it as it would an eventfd, and the scheduler, not a blocked thread, takes it
//! ([`InterruptLine::take`]) and delivers the interrupt at the modelled time. Moderation reads
//! the device's clock, so its delays are virtual time there and wall time in a live run.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How a queue notifies its driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notification {
    /// No interrupts: the driver polls.
    BusyPoll,
    /// An interrupt after `packets` completions or `delay_us` µs, whichever is first.
    Moderated {
        /// Longest a completion waits, µs.
        delay_us: u32,
        /// Completions that trigger an interrupt at once.
        packets: u32,
    },
}

impl Notification {
    /// ENA's TX default: 64 µs.
    pub const ENA_TX: Self = Self::Moderated { delay_us: 64, packets: 64 };
    /// ENA's RX starting point: 20 µs.
    pub const ENA_RX: Self = Self::Moderated { delay_us: 20, packets: 32 };
}

/// An interrupt line: an eventfd a thread can block on, or a flag a simulation's scheduler takes.
#[derive(Debug)]
pub struct InterruptLine {
    kind: LineKind,
}

#[derive(Debug)]
enum LineKind {
    Eventfd(OwnedFd),
    Flag(AtomicBool),
}

impl InterruptLine {
    /// A new line, not raised.
    pub fn new() -> io::Result<Self> {
        // SAFETY: eventfd takes no pointers; flags are constants.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just returned by eventfd and is owned by nobody else.
        Ok(Self { kind: LineKind::Eventfd(unsafe { OwnedFd::from_raw_fd(fd) }) })
    }

    /// A line for virtual time: raising sets a flag, [`InterruptLine::take`] clears it, and
    /// nothing ever blocks.
    pub fn flag() -> Self {
        Self { kind: LineKind::Flag(AtomicBool::new(false)) }
    }

    /// Raises the line (the device's side).
    pub fn raise(&self) {
        match &self.kind {
            LineKind::Eventfd(fd) => {
                let one = 1u64.to_ne_bytes();
                // SAFETY: writes 8 bytes from a live buffer to our own eventfd. A full counter
                // (EAGAIN) means the line is raised already, which is all a raise has to
                // achieve.
                let _ = unsafe { libc::write(fd.as_raw_fd(), one.as_ptr().cast(), one.len()) };
            }
            LineKind::Flag(flag) => flag.store(true, Ordering::Release),
        }
    }

    /// Lowers the line without waiting; true if it was raised.
    pub fn take(&self) -> bool {
        match &self.kind {
            LineKind::Eventfd(_) => self.wait(Duration::ZERO),
            // A load first: most looks find the line low, and a load costs no exclusive line.
            LineKind::Flag(flag) => {
                flag.load(Ordering::Relaxed) && flag.swap(false, Ordering::Acquire)
            }
        }
    }

    /// Waits until the line is raised or `timeout` passes, and lowers it; true if it was raised
    /// (the driver's side). A flag line never blocks: it answers at once.
    pub fn wait(&self, timeout: Duration) -> bool {
        let fd = match &self.kind {
            LineKind::Eventfd(fd) => fd,
            LineKind::Flag(flag) => return flag.swap(false, Ordering::Acquire),
        };
        let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // ppoll, not poll: a moderated interrupt is tens of microseconds away, below poll's
        // millisecond resolution.
        let ts = libc::timespec {
            tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
            tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
        };
        // SAFETY: one valid pollfd, count 1, a live timespec, no signal mask.
        let ready = unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
        if ready <= 0 {
            return false;
        }
        let mut count = [0u8; 8];
        // SAFETY: reads 8 bytes into a live buffer from our own eventfd.
        let n = unsafe { libc::read(fd.as_raw_fd(), count.as_mut_ptr().cast(), count.len()) };
        n == 8
    }
}

/// The device's per-queue, per-direction moderation state.
#[derive(Debug)]
pub(crate) struct Moderator {
    mode: Notification,
    line: Option<std::sync::Arc<InterruptLine>>,
    pending: u32,
    /// When the oldest pending completion was published, ns on the device's clock.
    since: Option<u64>,
    /// Sum of the publication times of the pending completions, ns.
    pending_at_sum: u64,
    /// Completion-ns that completions have waited for their interrupt, in all.
    pub(crate) waited_ns: u64,
    pub(crate) raised: u64,
}

impl Moderator {
    pub(crate) fn busy_poll() -> Self {
        Self {
            mode: Notification::BusyPoll,
            line: None,
            pending: 0,
            since: None,
            pending_at_sum: 0,
            waited_ns: 0,
            raised: 0,
        }
    }

    pub(crate) fn set(&mut self, mode: Notification, line: Option<std::sync::Arc<InterruptLine>>) {
        self.mode = mode;
        self.line = line;
        self.pending = 0;
        self.since = None;
        self.pending_at_sum = 0;
    }

    /// Changes the delay of a moderated queue (ENA's SET_FEATURE INTERRUPT_MODERATION).
    pub(crate) fn set_delay(&mut self, us: u32) {
        if let Notification::Moderated { delay_us, .. } = &mut self.mode {
            *delay_us = us;
        }
    }

    /// True while completions wait for an interrupt (the engine then checks the clock).
    #[inline(always)]
    pub(crate) fn armed(&self) -> bool {
        self.pending > 0
    }

    /// `n` completions were published; `now_ns` reads the device's clock (moderated queues
    /// only).
    #[inline]
    pub(crate) fn completed(&mut self, n: usize, now_ns: impl FnOnce() -> u64) {
        let Notification::Moderated { packets, .. } = self.mode else { return };
        if n == 0 || self.line.is_none() {
            return;
        }
        let now = now_ns();
        if self.pending == 0 {
            self.since = Some(now);
        }
        self.pending = self.pending.saturating_add(n as u32);
        self.pending_at_sum = self.pending_at_sum.saturating_add(n as u64 * now);
        if self.pending >= packets {
            self.fire(now);
        }
    }

    /// Raises the interrupt if the oldest pending completion has waited long enough.
    pub(crate) fn tick(&mut self, now_ns: u64) {
        if self.deadline_ns().is_some_and(|due| now_ns >= due) {
            self.fire(now_ns);
        }
    }

    /// When the pending completions' interrupt falls due, ns on the device's clock.
    pub(crate) fn deadline_ns(&self) -> Option<u64> {
        let Notification::Moderated { delay_us, .. } = self.mode else { return None };
        self.since.map(|t| t + u64::from(delay_us) * 1_000)
    }

    fn fire(&mut self, now_ns: u64) {
        if let Some(line) = &self.line {
            line.raise();
            self.raised += 1;
        }
        let waited = (u64::from(self.pending) * now_ns).saturating_sub(self.pending_at_sum);
        self.waited_ns = self.waited_ns.saturating_add(waited);
        self.pending = 0;
        self.since = None;
        self.pending_at_sum = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_wakes_its_waiter_once() {
        let line = InterruptLine::new().unwrap();
        assert!(!line.wait(Duration::from_millis(1)));
        line.raise();
        line.raise();
        assert!(line.wait(Duration::from_millis(100)));
        assert!(!line.wait(Duration::from_millis(1)), "two raises, one wake-up");
    }

    #[test]
    fn moderation_fires_on_count_or_delay() {
        let line = std::sync::Arc::new(InterruptLine::new().unwrap());
        let mut m = Moderator::busy_poll();
        m.completed(100, || 0);
        assert_eq!(m.raised, 0, "busy polling never signals");
        m.set(Notification::Moderated { delay_us: 50, packets: 8 }, Some(line.clone()));
        m.completed(3, || 1_000);
        assert!(m.armed() && m.raised == 0);
        m.completed(5, || 2_000);
        assert_eq!(m.raised, 1, "the 8th completion fires");
        m.completed(1, || 10_000);
        assert_eq!(m.deadline_ns(), Some(10_000 + 50_000), "50 µs after the first pending one");
        m.tick(59_999);
        assert_eq!(m.raised, 1, "not yet 50 µs");
        m.tick(60_000);
        assert_eq!(m.raised, 2);
        // Completions waited: 3 from 1 µs and 5 from 2 µs until the 8th fired at 2 µs, then one
        // from 10 µs until 60 µs.
        assert_eq!(m.waited_ns, 3 * 1_000 + 50_000);
        assert!(!m.armed());
        assert_eq!(m.deadline_ns(), None);
        assert!(line.wait(Duration::from_millis(10)));
    }

    #[test]
    fn a_flag_line_is_taken_once_and_never_blocks() {
        let line = InterruptLine::flag();
        assert!(!line.take());
        assert!(!line.wait(Duration::from_secs(3600)), "answers at once");
        line.raise();
        line.raise();
        assert!(line.take());
        assert!(!line.take(), "two raises, one interrupt");
    }
}
