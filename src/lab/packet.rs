//! A kernel netdev as a queue pair: an `AF_PACKET` raw socket bound to one interface, so the
//! lab's traffic can have a PF's (or any) netdev at one end. Frames the interface itself
//! sends are skipped on receive; the socket's buffer is 4 MiB.

use std::ffi::CString;
use std::io;

use vnic::frame::MacAddr;
use vnic::nic::QueuePair;

/// Frames a sender may have in flight towards the netdev. Not the socket's buffer (4 MiB holds
/// thousands) but the NIC's RX ring under it, which the kernel drains 64 frames per NAPI poll:
/// with 512 in flight, 231 of 3,000 frames from a VF were lost at a PF's 256-entry igb ring on a
/// loaded machine (`scripts/vfio-lab-test.sh`); 64 keeps a default ring from ever filling.
const RX_CAPACITY: usize = 64;
/// The largest frame sent: a 1500-byte MTU.
const MAX_FRAME: usize = 1514;

/// An `AF_PACKET` socket on one interface.
#[derive(Debug)]
pub struct PacketSocket {
    fd: libc::c_int,
    ifname: String,
    buf: Vec<u8>,
    /// Frames `send` refused (socket buffer full).
    pub tx_refused: u64,
}

/// What opening the socket refused.
#[derive(Debug, thiserror::Error)]
pub enum PacketError {
    /// No such interface.
    #[error(
        "no network interface `{0}` (see `ip link`; a PF's is under /sys/bus/pci/devices/<pf>/net)"
    )]
    NoInterface(String),
    /// The interface is down.
    #[error(
        "interface `{0}` is down: `ip link set {0} up` (a PF's driver answers its VFs only while it is up)"
    )]
    Down(String),
    /// The socket calls.
    #[error("{what} on `{ifname}`: {source} (AF_PACKET needs root or CAP_NET_RAW)")]
    Socket {
        /// The call.
        what: &'static str,
        /// The interface.
        ifname: String,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// The interface's MAC, from sysfs.
pub fn interface_mac(sysfs: &std::path::Path, ifname: &str) -> Result<MacAddr, PacketError> {
    let path = sysfs.join("class/net").join(ifname).join("address");
    let text =
        std::fs::read_to_string(&path).map_err(|_| PacketError::NoInterface(ifname.to_string()))?;
    parse_mac(text.trim()).ok_or_else(|| PacketError::NoInterface(ifname.to_string()))
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<MacAddr> {
    let mut m = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut m {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(MacAddr(m))
}

impl PacketSocket {
    /// Opens a raw socket on `ifname`, which must be up.
    pub fn open(sysfs: &std::path::Path, ifname: &str) -> Result<Self, PacketError> {
        let name = CString::new(ifname).map_err(|_| PacketError::NoInterface(ifname.into()))?;
        // SAFETY: `name` is a valid NUL-terminated string for the call's duration.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if index == 0 {
            return Err(PacketError::NoInterface(ifname.to_string()));
        }
        let flags = std::fs::read_to_string(sysfs.join("class/net").join(ifname).join("flags"))
            .ok()
            .and_then(|f| u32::from_str_radix(f.trim().trim_start_matches("0x"), 16).ok())
            .unwrap_or(0);
        if flags & libc::IFF_UP as u32 == 0 {
            return Err(PacketError::Down(ifname.to_string()));
        }
        let err = |what| {
            let source = io::Error::last_os_error();
            PacketError::Socket { what, ifname: ifname.to_string(), source }
        };
        let all = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: a plain socket(2) call; the result is checked.
        let fd = unsafe {
            libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_NONBLOCK, i32::from(all))
        };
        if fd < 0 {
            return Err(err("socket(AF_PACKET)"));
        }
        let sock = Self { fd, ifname: ifname.to_string(), buf: vec![0; 65536], tx_refused: 0 };
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value to fill in.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = all;
        addr.sll_ifindex = index as i32;
        // SAFETY: `addr` is a valid sockaddr_ll of the length passed.
        let rc = unsafe {
            libc::bind(
                fd,
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(err("bind"));
        }
        let size: libc::c_int = 4 << 20;
        // SAFETY: `size` is a c_int of the length passed; failure only leaves the default.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&raw const size).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        Ok(sock)
    }

    /// The interface.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }
}

impl Drop for PacketSocket {
    fn drop(&mut self) {
        // SAFETY: closes the descriptor this socket owns, once.
        unsafe { libc::close(self.fd) };
    }
}

impl QueuePair for PacketSocket {
    fn send_burst(&mut self, frames: &[&[u8]]) -> usize {
        let mut sent = 0;
        for f in frames {
            // SAFETY: `f` is valid for `f.len()` bytes; the socket is bound to one interface.
            let rc = unsafe { libc::send(self.fd, f.as_ptr().cast(), f.len(), 0) };
            if rc < 0 {
                self.tx_refused += (frames.len() - sent) as u64;
                break;
            }
            sent += 1;
        }
        sent
    }

    fn reap_tx(&mut self) -> usize {
        0
    }

    fn recv_each(&mut self, each: &mut dyn FnMut(&[u8])) -> usize {
        let mut n = 0;
        loop {
            // SAFETY: sockaddr_ll is plain data.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut from_len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: `buf` is valid for its length, `from` for `from_len` bytes.
            let rc = unsafe {
                libc::recvfrom(
                    self.fd,
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    libc::MSG_DONTWAIT,
                    (&raw mut from).cast(),
                    &mut from_len,
                )
            };
            if rc <= 0 {
                return n;
            }
            if from.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            let len = (rc as usize).min(self.buf.len());
            each(&self.buf[..len]);
            n += 1;
        }
    }

    fn refill_rx(&mut self) -> usize {
        0
    }

    fn rx_capacity(&self) -> usize {
        RX_CAPACITY
    }

    fn max_frame(&self) -> usize {
        MAX_FRAME
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse_strictly() {
        assert_eq!(parse_mac("52:54:00:00:00:0a"), Some(MacAddr([0x52, 0x54, 0, 0, 0, 0x0a])));
        assert_eq!(parse_mac("52:54:00:00:00"), None);
        assert_eq!(parse_mac("52:54:00:00:00:0a:01"), None);
        assert_eq!(parse_mac("zz:54:00:00:00:0a"), None);
    }
}
