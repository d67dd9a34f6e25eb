//! CPU affinity for the threads of a measurement: which CPUs the process may run on, and
//! pinning the calling thread to one, as DPDK's `-l` pins its lcores. Used where a figure is
//! compared with a pinned peer (`vnic-lab vf-demo --cpus`, `benches/ring_cycles.rs`).

/// The CPUs this process may run on (its affinity mask, as `sched_getaffinity` gives it).
pub fn allowed_cpus() -> std::io::Result<Vec<usize>> {
    // SAFETY: a zeroed cpu_set_t is the empty set; sched_getaffinity writes at most its size
    // into it, for this thread (pid 0); CPU_ISSET only reads it, for indices below its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok((0..libc::CPU_SETSIZE as usize).filter(|&c| libc::CPU_ISSET(c, &set)).collect())
    }
}

/// Pins the calling thread to `cpu`; an error (`EINVAL`) for a CPU past the set's size or
/// one the process may not run on.
pub fn pin_current_thread(cpu: usize) -> std::io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: a zeroed cpu_set_t is the empty set; `cpu` is below CPU_SETSIZE (checked above),
    // so CPU_SET stays inside it; sched_setaffinity only reads it, for this thread (pid 0).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_pins_to_an_allowed_cpu_and_not_past_the_set() {
        let allowed = allowed_cpus().unwrap();
        assert!(!allowed.is_empty());
        let cpu = allowed[allowed.len() - 1];
        // In a thread of its own: pinning is the calling thread's.
        let pinned = std::thread::spawn(move || {
            pin_current_thread(cpu).unwrap();
            allowed_cpus().unwrap()
        });
        assert_eq!(pinned.join().unwrap(), vec![cpu]);
        assert!(pin_current_thread(libc::CPU_SETSIZE as usize).is_err());
    }
}
