//! Provisioning: giving an ENI a device (a VF from the host's pool, or a port of the host's
//! emulated NIC model), programming it (MAC, MTU, DMA window, queue pairs, address check,
//! shaper), and taking it away again. Whatever a failed step took is given back by a
//! [`Reserved`] guard, not by hand-written undo in each branch.

use super::*;

impl Cloud {
    /// Provisions every ENI attached to a VM that has no device yet.
    pub(super) fn provision_all(&mut self, vm: VmId) -> Result<(), CloudError> {
        let enis: Vec<(EniId, u8)> = self
            .registry
            .enis_of(vm)
            .iter()
            .filter_map(|e| e.attachment.map(|a| (e.id, a.device_index)))
            .collect();
        for (eni, index) in enis {
            if self.vm(vm)?.nics.iter().any(|n| n.eni == eni) {
                continue;
            }
            let nic = self.provision(vm, eni, index)?;
            if let Some(record) = self.vms.get_mut(&vm) {
                record.pending.push(nic);
            }
        }
        Ok(())
    }

    /// Gives ENI `eni` (device index `index`) of `vm` a device; returns the guest's NIC.
    pub(super) fn provision(
        &mut self,
        vm: VmId,
        eni: EniId,
        index: u8,
    ) -> Result<GuestNic, CloudError> {
        let e = self.registry.eni(eni)?.clone();
        let path = self.eni_paths.get(&eni).copied().unwrap_or(IoPath::SrIov);
        let record = self.vm(vm)?;
        let spec = record.spec.clone();
        let window = DmaWindow::new(record.memory.clone(), Iova(GUEST_MEMORY_BASE));
        let slot = usize::from(index) % MAX_NICS_PER_VM;
        let layouts = nic_layouts(&spec, slot);
        // The guest's driver lays its rings out first; the device attaches to them.
        let mut drivers = Vec::new();
        for layout in &layouts {
            if spec.shared_file {
                QueuePairDriver::reinit_rings(&window, layout)?;
            } else {
                drivers.push(QueuePairDriver::recreate(window.clone(), *layout)?);
            }
        }
        let specs: Vec<QueuePairSpec> = layouts.iter().map(|l| l.spec(&window)).collect();
        // Under a simulation a busy-polling guest is told of every completion at once (its
        // poll loop would find it; the scheduler charges what the poll costs).
        let rx_notification = match spec.rx_notification {
            Notification::BusyPoll if self.clock.is_some() => {
                Notification::Moderated { delay_us: 0, packets: 1 }
            }
            other => other,
        };
        let rx_line =
            if rx_notification != Notification::BusyPoll { Some(self.line(vm.0)?) } else { None };
        let addresses: Vec<Ipv4Addr> =
            std::iter::once(e.primary_ip).chain(e.secondary_ips.iter().copied()).collect();
        let check = e.src_dst_check.then(|| addresses.clone());
        let config = shaper_config(&spec);
        let policy = self.flow_policy(spec.host, spec.cluster_group.clone(), &spec.instance_type);
        let setup = DeviceSetup {
            mac: e.mac,
            mtu: spec.mtu,
            window,
            specs,
            check,
            shaper: (config, policy),
            rx_line: rx_line.clone(),
            rx_notification,
        };
        let host_name = self.hosts[spec.host].spec.name.clone();
        let device_err = |source| CloudError::Device { host: host_name.clone(), source };
        let (device, counters, doorbell, endpoint, engine_bell) = match path {
            IoPath::SrIov | IoPath::Efa => {
                let host = &mut self.hosts[spec.host];
                let (vf, engine) = take_vf(host)?;
                let taken = vf.item();
                let counters =
                    engine.call(move |pf| setup.apply(pf, taken.vf))?.map_err(device_err)?;
                (
                    NicDevice::Vf(vf.keep()),
                    counters,
                    None,
                    engine.endpoint(),
                    Some(engine.doorbell()),
                )
            }
            IoPath::Emulated => {
                self.ensure_emulated(spec.host)?;
                let host = &mut self.hosts[spec.host];
                let no_port = CloudError::NoFreePort(host.spec.name.clone());
                let Some(em) = host.emulated.as_mut() else { return Err(no_port) };
                let (backend, mac, device) = (em.backend, e.mac, &em.device);
                let engine = &host.pfs[backend.pf];
                let Some(mut port) = Reserved::take(&mut em.free_ports) else {
                    return Err(no_port);
                };
                engine.call(move |pf| pf.add_mac_filter(backend.vf, mac))?.map_err(device_err)?;
                port.on_undo(move |_| {
                    let _ = engine.call(move |pf| pf.remove_mac_filter(backend.vf, mac));
                });
                port.on_undo(move |p| {
                    let _ = device.call(move |pf| pf.release(p));
                });
                let p = port.item();
                let counters = match device.call(move |pf| setup.apply(pf, p)) {
                    Some(applied) => applied.map_err(device_err)?,
                    None => return Err(no_port),
                };
                (
                    NicDevice::SoftPort(port.keep()),
                    counters,
                    Some(device.doorbell()),
                    engine.endpoint(),
                    None,
                )
            }
        };
        self.fabric.route(e.mac, endpoint);
        if let Ok(mut dir) = self.directory.write() {
            for ip in &addresses {
                dir.insert(
                    *ip,
                    Peer { host: spec.host, cluster_group: spec.cluster_group.clone() },
                );
            }
        }
        if let Some(record) = self.vms.get_mut(&vm) {
            record.nics.push(ProvisionedNic { eni, mac: e.mac, device, layouts, counters });
        }
        let signals = NicSignals { trap: doorbell, rx_line, engine: engine_bell };
        Ok(GuestNic::new(eni, (e.mac, e.primary_ip), path, drivers, signals))
    }

    /// Starts the host's emulated NIC model if it has none: a backend VF from the pool with
    /// hypervisor memory, and the hypervisor thread.
    pub(super) fn ensure_emulated(&mut self, h: usize) -> Result<(), CloudError> {
        if self.hosts[h].emulated.is_some() {
            return Ok(());
        }
        let line = self.line(0)?;
        let clock = self.clock.clone();
        let host = &mut self.hosts[h];
        let name = host.spec.name.clone();
        let device_err = |source| CloudError::Device { host: name.clone(), source };
        let (vf, engine) = take_vf(host)?;
        let taken = vf.item();
        let layout = QueuePairLayout::with_buffers(0, 1024, 9216, 2048);
        let memory = Arc::new(SharedRegion::anonymous(layout.end)?);
        let window = DmaWindow::new(memory.clone(), Iova(0x7f_0000_0000));
        let backend = QueuePairDriver::create(window.clone(), layout)?;
        let spec = layout.spec(&window);
        let rx_line = line.clone();
        engine
            .call(move |pf| -> Result<(), DeviceError> {
                pf.set_mtu(taken.vf, 9001)?;
                pf.assign(taken.vf, window)?;
                let q = pf.create_queue_pair(taken.vf, spec)?;
                let rx = (Notification::Moderated { delay_us: 0, packets: 1 }, Some(rx_line));
                pf.set_notification(taken.vf, q, (Notification::BusyPoll, None), rx)
            })?
            .map_err(device_err)?;
        let mut soft = PhysicalFunction::new(64).map_err(device_err)?;
        soft.set_num_vfs(64).map_err(device_err)?;
        // Every frame goes through the PF, even between two emulated NICs of this host: the
        // PF relays it back to the backend VF.
        soft.set_vepa(true);
        let device = match clock {
            Some(clock) => {
                soft.set_clock(DeviceClock::Virtual(clock));
                EmulatedDevice::inline(soft, backend, line, engine.doorbell())
            }
            None => EmulatedDevice::spawn(&name, soft, backend, line, engine.doorbell())
                .map_err(|source| CloudError::Spawn { vm: 0, source })?,
        };
        let backend = vf.keep();
        host.emulated = Some(EmulatedHost {
            device,
            backend,
            free_ports: (0..64).rev().collect(),
            _memory: memory,
        });
        Ok(())
    }

    /// Takes a provisioned ENI's device away: queues reset, VF back in the pool (or the
    /// emulated port freed), routes removed. Its allowance counters are kept for the ENI.
    pub(super) fn deprovision(&mut self, vm: VmId, eni: EniId) -> Result<(), CloudError> {
        let Some(record) = self.vms.get_mut(&vm) else { return Ok(()) };
        let Some(k) = record.nics.iter().position(|n| n.eni == eni) else { return Ok(()) };
        let nic = record.nics.remove(k);
        record.pending.retain(|n| n.eni != eni);
        let host = &mut self.hosts[record.spec.host];
        let retired = self.retired.entry(eni).or_default();
        if let Some(c) = &nic.counters {
            retired.allowance += c.snapshot();
        }
        self.fabric.unroute(nic.mac);
        if let Ok(e) = self.registry.eni(eni)
            && let Ok(mut dir) = self.directory.write()
        {
            dir.remove(&e.primary_ip);
            for ip in &e.secondary_ips {
                dir.remove(ip);
            }
        }
        match nic.device {
            NicDevice::Vf(vf) => {
                let (totals, released) = host.pfs[vf.pf].call(move |pf| {
                    let totals = pf.vf(vf.vf).map(|v| v.totals());
                    (totals, pf.release(vf.vf))
                })?;
                host.free_vfs.push(vf);
                if let Ok((queues, port)) = totals {
                    retired.queues += queues;
                    retired.port += port;
                }
                released.map_err(|source| CloudError::Device {
                    host: host.spec.name.clone(),
                    source,
                })?;
            }
            NicDevice::SoftPort(port) => {
                if let Some(em) = host.emulated.as_mut() {
                    let totals = em.device.call(move |pf| {
                        let totals = pf.vf(port).map(|v| v.totals());
                        let _ = pf.release(port);
                        totals
                    });
                    if let Some(Ok((queues, port))) = totals {
                        retired.queues += queues;
                        retired.port += port;
                    }
                    em.free_ports.push(port);
                    let (backend, mac) = (em.backend, nic.mac);
                    host.pfs[backend.pf]
                        .call(move |pf| pf.remove_mac_filter(backend.vf, mac))?
                        .ok();
                }
            }
        }
        Ok(())
    }

    pub(super) fn deprovision_all(&mut self, vm: VmId) -> Result<(), CloudError> {
        let enis: Vec<EniId> = self.vm(vm)?.nics.iter().map(|n| n.eni).collect();
        for eni in enis {
            self.deprovision(vm, eni)?;
        }
        Ok(())
    }

    /// Turns an ENI's source/destination check on or off, on its device too.
    pub fn set_src_dst_check(&mut self, eni: EniId, on: bool) -> Result<(), CloudError> {
        self.registry.set_src_dst_check(eni, on)?;
        let e = self.registry.eni(eni)?.clone();
        let addresses: Vec<Ipv4Addr> =
            std::iter::once(e.primary_ip).chain(e.secondary_ips.iter().copied()).collect();
        let Some(a) = e.attachment else { return Ok(()) };
        let Some(record) = self.vms.get(&a.vm) else { return Ok(()) };
        let Some(nic) = record.nics.iter().find(|n| n.eni == eni) else { return Ok(()) };
        let host = &self.hosts[record.spec.host];
        let check = on.then_some(addresses);
        let result = match nic.device {
            NicDevice::Vf(vf) => {
                host.pfs[vf.pf].call(move |pf| pf.set_address_check(vf.vf, check.as_deref()))?
            }
            NicDevice::SoftPort(port) => match host.emulated.as_ref() {
                Some(em) => em
                    .device
                    .call(move |pf| pf.set_address_check(port, check.as_deref()))
                    .unwrap_or(Ok(())),
                None => Ok(()),
            },
        };
        result.map_err(|source| CloudError::Device { host: host.spec.name.clone(), source })
    }
}

impl Cloud {
    /// Puts an ENI's device behind its security groups and its subnet's NACL (`None`: no
    /// filter), on its VF or its emulated NIC's port: every frame it sends or receives is
    /// decided there, in the device, before the shaper.
    pub fn set_eni_policy(
        &mut self,
        eni: EniId,
        policy: Option<vnic::device::VfPolicy>,
    ) -> Result<(), CloudError> {
        let e = self.registry.eni(eni)?.clone();
        let Some(a) = e.attachment else { return Ok(()) };
        let Some(record) = self.vms.get(&a.vm) else { return Ok(()) };
        let Some(nic) = record.nics.iter().find(|n| n.eni == eni) else { return Ok(()) };
        let host = &self.hosts[record.spec.host];
        let result = match nic.device {
            NicDevice::Vf(vf) => host.pfs[vf.pf].call(move |pf| pf.set_policy(vf.vf, policy))?,
            NicDevice::SoftPort(port) => match host.emulated.as_ref() {
                Some(em) => em.device.call(move |pf| pf.set_policy(port, policy)).unwrap_or(Ok(())),
                None => Ok(()),
            },
        };
        result.map_err(|source| CloudError::Device { host: host.spec.name.clone(), source })
    }
}

impl Cloud {
    /// New rules for an ENI whose device filters it ([`Cloud::set_eni_policy`]): its groups'
    /// and its subnet's NACL, its tracked connections kept. False if its device has no filter.
    pub fn update_eni_rules(
        &mut self,
        eni: EniId,
        groups: vnic::policy::sg::CompiledGroups,
        nacl: Arc<vnic::policy::nacl::Nacl>,
    ) -> Result<bool, CloudError> {
        let e = self.registry.eni(eni)?.clone();
        let Some(a) = e.attachment else { return Ok(false) };
        let Some(record) = self.vms.get(&a.vm) else { return Ok(false) };
        let Some(nic) = record.nics.iter().find(|n| n.eni == eni) else { return Ok(false) };
        let host = &self.hosts[record.spec.host];
        let result = match nic.device {
            NicDevice::Vf(vf) => {
                host.pfs[vf.pf].call(move |pf| pf.update_policy_rules(vf.vf, groups, nacl))?
            }
            NicDevice::SoftPort(port) => match host.emulated.as_ref() {
                Some(em) => em
                    .device
                    .call(move |pf| pf.update_policy_rules(port, groups, nacl))
                    .unwrap_or(Ok(false)),
                None => Ok(false),
            },
        };
        result.map_err(|source| CloudError::Device { host: host.spec.name.clone(), source })
    }

    /// Ends an ENI's flow log at `end_ns` and returns its records (`None`: it has none).
    pub fn take_flow_log(
        &mut self,
        eni: EniId,
        end_ns: u64,
    ) -> Result<Option<Vec<String>>, CloudError> {
        let e = self.registry.eni(eni)?.clone();
        let Some(a) = e.attachment else { return Ok(None) };
        let Some(record) = self.vms.get(&a.vm) else { return Ok(None) };
        let Some(nic) = record.nics.iter().find(|n| n.eni == eni) else { return Ok(None) };
        let host = &self.hosts[record.spec.host];
        let result = match nic.device {
            NicDevice::Vf(vf) => host.pfs[vf.pf].call(move |pf| pf.take_flow_log(vf.vf, end_ns))?,
            NicDevice::SoftPort(port) => match host.emulated.as_ref() {
                Some(em) => {
                    em.device.call(move |pf| pf.take_flow_log(port, end_ns)).unwrap_or(Ok(None))
                }
                None => Ok(None),
            },
        };
        result.map_err(|source| CloudError::Device { host: host.spec.name.clone(), source })
    }
}

/// What the hypervisor programs into a VF (or a software port) for one ENI.
pub(super) struct DeviceSetup {
    mac: MacAddr,
    mtu: u16,
    window: DmaWindow,
    specs: Vec<QueuePairSpec>,
    check: Option<Vec<Ipv4Addr>>,
    shaper: (ShaperConfig, FlowCapPolicy),
    rx_line: Option<Arc<InterruptLine>>,
    rx_notification: Notification,
}

impl DeviceSetup {
    pub(super) fn apply(
        self,
        pf: &mut PhysicalFunction,
        vf: u16,
    ) -> Result<Option<Arc<AllowanceCounters>>, DeviceError> {
        pf.set_port(vf, VfPort { mac: self.mac, vlan: None, spoof_check: true })?;
        pf.set_mtu(vf, self.mtu)?;
        pf.assign(vf, self.window)?;
        for spec in self.specs {
            let q = pf.create_queue_pair(vf, spec)?;
            if let Some(line) = &self.rx_line {
                let rx = (self.rx_notification, Some(line.clone()));
                pf.set_notification(vf, q, (Notification::BusyPoll, None), rx)?;
            }
        }
        pf.set_address_check(vf, self.check.as_deref())?;
        pf.set_engine_weight(vf, vnic::device::engine_weight(&self.shaper.0))?;
        pf.set_shaper(vf, Some(self.shaper))
    }
}

/// TX and RX buffer sizes for an MTU: 2 KiB up to a 1500-byte MTU, else 9 KiB, so that a jumbo
/// frame is one buffer each way (chained 2 KiB RX buffers cost the driver a copy to gather).
pub(super) fn buffers(mtu: u16) -> (usize, usize) {
    if mtu <= 1500 { (2048, 2048) } else { (9216, 9216) }
}

pub(super) fn qp_bytes(spec: &VmSpec) -> usize {
    let (tx, rx) = buffers(spec.mtu);
    QueuePairLayout::with_buffers(0, spec.ring_depth, tx, rx).end.next_multiple_of(4096)
}

pub(super) fn nic_slot_bytes(spec: &VmSpec) -> usize {
    usize::from(spec.queues) * qp_bytes(spec)
}

pub(super) fn nic_layouts(spec: &VmSpec, slot: usize) -> Vec<QueuePairLayout> {
    let (tx, rx) = buffers(spec.mtu);
    let base = slot * nic_slot_bytes(spec);
    (0..usize::from(spec.queues))
        .map(|q| QueuePairLayout::with_buffers(base + q * qp_bytes(spec), spec.ring_depth, tx, rx))
        .collect()
}

pub(super) fn shaper_config(spec: &VmSpec) -> ShaperConfig {
    let ty = &spec.instance_type;
    let bw = BandwidthAllowance::burstable(
        gbps(ty.baseline_gbps),
        gbps(ty.burst_gbps),
        spec.burst_duration,
    );
    ShaperConfig {
        bw_out: bw,
        bw_in: bw,
        pps: spec.pps,
        conntrack_max: spec.conntrack_max,
        ..ShaperConfig::default()
    }
}

/// Takes a VF from the host's pool, with its release on its PF as the undo, and that PF's
/// engine; an empty pool is EC2's capacity error naming the host.
fn take_vf(host: &mut Host) -> Result<(Reserved<'_, VfRef>, &PfEngine), CloudError> {
    let no_vf = CloudError::NoFreeVf {
        host: host.spec.name.clone(),
        total: host.pfs.iter().map(|p| usize::from(p.total_vfs())).sum(),
        pfs: host.pfs.len(),
    };
    let Host { free_vfs, pfs, .. } = host;
    let mut vf = Reserved::take(free_vfs).ok_or(no_vf)?;
    let engine = &pfs[vf.item().pf];
    vf.on_undo(move |v| {
        let _ = engine.call(move |pf| pf.release(v.vf));
    });
    Ok((vf, engine))
}

/// An item taken from a free list (a VF, an emulated NIC's port) with the undo of what has been
/// done with it so far. Dropped before [`Reserved::keep`] — any `?` on the way — it runs the
/// undo steps, latest first, and puts the item back on its list.
pub(super) struct Reserved<'a, T: Copy> {
    pool: &'a mut Vec<T>,
    item: T,
    kept: bool,
    undo: Vec<Box<dyn FnOnce(T) + 'a>>,
}

impl<'a, T: Copy> Reserved<'a, T> {
    /// Takes the last free item, if any.
    pub(super) fn take(pool: &'a mut Vec<T>) -> Option<Self> {
        let item = pool.pop()?;
        Some(Self { pool, item, kept: false, undo: Vec::new() })
    }

    /// The item.
    pub(super) fn item(&self) -> T {
        self.item
    }

    /// Adds a step to undo if the reservation is given up.
    pub(super) fn on_undo(&mut self, step: impl FnOnce(T) + 'a) {
        self.undo.push(Box::new(step));
    }

    /// Keeps the item: nothing is undone.
    pub(super) fn keep(mut self) -> T {
        self.kept = true;
        self.undo.clear();
        self.item
    }
}

impl<T: Copy> Drop for Reserved<'_, T> {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        while let Some(step) = self.undo.pop() {
            step(self.item);
        }
        self.pool.push(self.item);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reservation_given_up_undoes_its_steps_latest_first_and_returns_the_item() {
        let log = std::cell::RefCell::new(Vec::new());
        let mut pool = vec![1, 2, 3];
        {
            let mut r = Reserved::take(&mut pool).unwrap();
            assert_eq!(r.item(), 3);
            r.on_undo(|i| log.borrow_mut().push(format!("first {i}")));
            r.on_undo(|i| log.borrow_mut().push(format!("second {i}")));
        }
        assert_eq!(pool, vec![1, 2, 3], "back on the list");
        assert_eq!(*log.borrow(), ["second 3", "first 3"]);
        let r = Reserved::take(&mut pool).unwrap();
        assert_eq!(r.keep(), 3);
        assert_eq!(pool, vec![1, 2], "kept");
        let mut empty: Vec<u8> = Vec::new();
        assert!(Reserved::take(&mut empty).is_none());
    }
}
