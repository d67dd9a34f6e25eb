//! A VM's life: launch, workloads (a thread, a process, or a simulation's scheduler), reaping
//! crashed ones, stop / start / terminate, and ENI attach and detach, with EC2's rules.

use super::*;

impl Cloud {
    /// Creates a detached ENI that will use `path` wherever it is attached.
    pub fn create_eni(&mut self, spec: &EniSpec, path: IoPath) -> Result<EniId, CloudError> {
        let id = self.registry.create_eni(spec)?;
        self.eni_paths.insert(id, path);
        Ok(id)
    }

    /// Launches a VM: vCPUs, primary ENI, secondary ENIs (cold), guest memory, a device for
    /// every ENI. Nothing is left behind if any step fails.
    pub fn launch(&mut self, spec: VmSpec) -> Result<VmId, CloudError> {
        let host = self.host(spec.host)?;
        check_spec(&spec)?;
        let free = host.spec.cpus - host.used_cpus;
        if spec.instance_type.vcpus > free {
            return Err(CloudError::NoCapacity {
                host: host.spec.name.clone(),
                free,
                ty: spec.instance_type.name.clone(),
                need: spec.instance_type.vcpus,
            });
        }
        let az = host.spec.az.clone();
        let (vm, primary) = self.registry.launch(&az, &spec.primary, &spec.secondary)?;
        self.eni_paths.insert(primary, spec.path);
        let bytes = MAX_NICS_PER_VM * nic_slot_bytes(&spec);
        let (memory, memory_file) = if spec.shared_file {
            let path = std::env::temp_dir().join(format!(
                "vnic-lab-{}-vm{}.mem",
                std::process::id(),
                vm.0
            ));
            match SharedRegion::create(&path, bytes) {
                Ok(region) => (Arc::new(region), Some(path)),
                Err(e) => {
                    let _ = self.registry.set_state(vm, VmState::Terminated);
                    return Err(e.into());
                }
            }
        } else {
            match SharedRegion::anonymous(bytes) {
                Ok(region) => (Arc::new(region), None),
                Err(e) => {
                    let _ = self.registry.set_state(vm, VmState::Terminated);
                    return Err(e.into());
                }
            }
        };
        self.hosts[spec.host].used_cpus += spec.instance_type.vcpus;
        let record = Vm {
            name: spec.name.clone(),
            spec,
            memory,
            memory_file,
            nics: Vec::new(),
            pending: Vec::new(),
            running: None,
        };
        self.vms.insert(vm, record);
        if let Err(e) = self.provision_all(vm) {
            let _ = self.terminate(vm);
            return Err(e);
        }
        Ok(vm)
    }

    /// Runs `workload` as the VM on its own thread, with its NICs.
    pub fn run(
        &mut self,
        vm: VmId,
        workload: impl FnOnce(&mut GuestCtx) + Send + 'static,
    ) -> Result<(), CloudError> {
        let record = self.vms.get_mut(&vm).ok_or(CloudError::NoSuchVm(vm.0))?;
        if record.running.is_some() {
            return Err(CloudError::State { vm: vm.0, state: "already running a workload" });
        }
        if record.spec.shared_file {
            return Err(CloudError::State { vm: vm.0, state: "set up for process mode" });
        }
        if self.registry.vm_state(vm)? != VmState::Running {
            return Err(CloudError::State { vm: vm.0, state: "stopped" });
        }
        let nics = std::mem::take(&mut record.pending);
        let stop = Arc::new(AtomicBool::new(false));
        let (hotplug, events) = mpsc::channel();
        let mut ctx = GuestCtx::new(vm, nics, stop.clone(), events);
        let thread = std::thread::Builder::new()
            .name(format!("vm {}", record.name))
            .spawn(move || workload(&mut ctx))
            .map_err(|source| CloudError::Spawn { vm: vm.0, source })?;
        record.running = Some(Running { stop, hotplug, workload: Workload::Thread(thread) });
        Ok(())
    }

    /// Hands the VM's NICs to the caller, who drives them on its own thread (a simulation's
    /// scheduler); [`Cloud::stop`] and the rest of the lifecycle work as for a thread.
    pub fn attach_guest(&mut self, vm: VmId) -> Result<GuestCtx, CloudError> {
        let record = self.vms.get_mut(&vm).ok_or(CloudError::NoSuchVm(vm.0))?;
        if record.running.is_some() {
            return Err(CloudError::State { vm: vm.0, state: "already running a workload" });
        }
        if self.registry.vm_state(vm)? != VmState::Running {
            return Err(CloudError::State { vm: vm.0, state: "stopped" });
        }
        let nics = std::mem::take(&mut record.pending);
        let stop = Arc::new(AtomicBool::new(false));
        let (hotplug, events) = mpsc::channel();
        let ctx = GuestCtx::new(vm, nics, stop.clone(), events);
        record.running = Some(Running { stop, hotplug, workload: Workload::Inline });
        Ok(ctx)
    }

    /// Runs a built-in workload as the VM in its own OS process, attached to the VM's guest
    /// memory (the VM must have been launched with `shared_file`).
    pub fn run_process(&mut self, vm: VmId, workload: ProcessWorkload) -> Result<(), CloudError> {
        let launcher = self.launcher.clone().ok_or(CloudError::Spec(
            "no process launcher set (Cloud::set_process_launcher)".into(),
        ))?;
        let enis: Vec<(EniId, Ipv4Addr)> =
            self.registry.enis_of(vm).iter().map(|e| (e.id, e.primary_ip)).collect();
        let record = self.vms.get_mut(&vm).ok_or(CloudError::NoSuchVm(vm.0))?;
        if record.running.is_some() {
            return Err(CloudError::State { vm: vm.0, state: "already running a workload" });
        }
        let Some(memory) = record.memory_file.clone() else {
            return Err(CloudError::State { vm: vm.0, state: "not set up for process mode" });
        };
        let nics = record
            .nics
            .iter()
            .map(|n| NicLayout {
                mac: n.mac.0,
                ip: enis.iter().find(|e| e.0 == n.eni).map_or(Ipv4Addr::UNSPECIFIED, |e| e.1),
                queues: n.layouts.iter().map(|l| (l.tx_sq, l.depth, l.tx_buf, l.rx_buf)).collect(),
            })
            .collect();
        let spec = GuestProcessSpec { memory, base: GUEST_MEMORY_BASE, nics, workload };
        let child =
            launcher.spawn(&spec).map_err(|source| CloudError::Spawn { vm: vm.0, source })?;
        record.pending.clear();
        let (hotplug, _) = mpsc::channel();
        record.running = Some(Running {
            stop: Arc::new(AtomicBool::new(false)),
            hotplug,
            workload: Workload::Process(child),
        });
        Ok(())
    }

    /// Looks at every running workload; those that ended are reaped. A crashed VM (a panic, a
    /// killed process) has its devices reset and returned to the pool and is stopped; the
    /// others carry on. Returns what ended.
    pub fn reap(&mut self) -> Vec<(VmId, VmExit)> {
        let mut ended = Vec::new();
        for (&id, vm) in &mut self.vms {
            let Some(running) = vm.running.as_mut() else { continue };
            let exit = match &mut running.workload {
                Workload::Thread(t) if t.is_finished() => Some(None),
                Workload::Thread(_) | Workload::Inline => None,
                Workload::Process(child) => match child.try_wait() {
                    Ok(Some(status)) if status.success() => Some(Some(VmExit::Finished)),
                    Ok(Some(status)) => Some(Some(VmExit::Crashed(format!("process {status}")))),
                    Ok(None) => None,
                    Err(e) => Some(Some(VmExit::Crashed(format!("process lost: {e}")))),
                },
            };
            let Some(exit) = exit else { continue };
            let exit = match (exit, vm.running.take()) {
                (Some(exit), _) => exit,
                (None, Some(Running { workload: Workload::Thread(t), .. })) => match t.join() {
                    Ok(()) => VmExit::Finished,
                    Err(panic) => VmExit::Crashed(panic_message(&panic)),
                },
                _ => VmExit::Finished,
            };
            vm.running = None;
            ended.push((id, exit));
        }
        for (vm, exit) in &ended {
            // The guest's drivers are gone with it: its devices are reset either way, so the
            // VM's next run starts from fresh rings.
            let _ = self.deprovision_all(*vm);
            if matches!(exit, VmExit::Crashed(_)) {
                let _ = self.registry.set_state(*vm, VmState::Stopped);
            } else {
                let _ = self.provision_all(*vm);
            }
        }
        ended
    }

    /// Kills a VM's process (process mode) or marks its thread for stopping (thread mode);
    /// [`Cloud::reap`] then cleans up.
    pub fn kill(&mut self, vm: VmId) -> Result<(), CloudError> {
        let record = self.vms.get_mut(&vm).ok_or(CloudError::NoSuchVm(vm.0))?;
        match record.running.as_mut() {
            Some(Running { workload: Workload::Process(child), .. }) => {
                let _ = child.kill();
            }
            Some(running) => running.stop.store(true, Ordering::Relaxed),
            None => {}
        }
        Ok(())
    }

    /// Stops a VM: its workload is asked to return (and waited for, up to 10 s), its devices
    /// are reset and returned, its ENIs stay attached.
    pub fn stop(&mut self, vm: VmId) -> Result<(), CloudError> {
        self.halt(vm)?;
        self.deprovision_all(vm)?;
        self.registry.set_state(vm, VmState::Stopped)?;
        Ok(())
    }

    pub(super) fn halt(&mut self, vm: VmId) -> Result<(), CloudError> {
        let record = self.vms.get_mut(&vm).ok_or(CloudError::NoSuchVm(vm.0))?;
        let Some(running) = record.running.take() else { return Ok(()) };
        running.stop.store(true, Ordering::Relaxed);
        match running.workload {
            Workload::Thread(t) => {
                let start = Instant::now();
                while !t.is_finished() {
                    if start.elapsed() > Duration::from_secs(10) {
                        return Err(CloudError::StopTimeout(vm.0));
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                let _ = t.join();
            }
            Workload::Process(mut child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Workload::Inline => {}
        }
        Ok(())
    }

    /// Starts a stopped VM: devices for each attached ENI again.
    pub fn start(&mut self, vm: VmId) -> Result<(), CloudError> {
        if self.registry.vm_state(vm)? == VmState::Running {
            return Ok(());
        }
        self.vm(vm)?;
        self.registry.set_state(vm, VmState::Running)?;
        if let Err(e) = self.provision_all(vm) {
            let _ = self.deprovision_all(vm);
            let _ = self.registry.set_state(vm, VmState::Stopped);
            return Err(e);
        }
        Ok(())
    }

    /// Terminates a VM: its primary ENI is deleted, the others detached and kept.
    pub fn terminate(&mut self, vm: VmId) -> Result<(), CloudError> {
        self.halt(vm)?;
        self.deprovision_all(vm)?;
        self.registry.set_state(vm, VmState::Terminated)?;
        if let Some(record) = self.vms.remove(&vm) {
            let host = &mut self.hosts[record.spec.host];
            host.used_cpus = host.used_cpus.saturating_sub(record.spec.instance_type.vcpus);
            if let Some(path) = record.memory_file {
                let _ = std::fs::remove_file(path);
            }
        }
        Ok(())
    }

    /// Attaches ENI `eni` to `vm` at `device_index`: hot (the running guest gets a
    /// [`Hotplug::Added`] NIC) or warm (a device at the next start).
    pub fn attach_eni(
        &mut self,
        eni: EniId,
        vm: VmId,
        device_index: u8,
    ) -> Result<AttachKind, CloudError> {
        self.vm(vm)?;
        let efa = self.eni_paths.get(&eni) == Some(&IoPath::Efa);
        if efa && self.registry.vm_state(vm)? == VmState::Running {
            self.registry.eni(eni)?;
            return Err(CloudError::EfaHotAttach { eni: eni.0, vm: vm.0 });
        }
        let kind = self.registry.attach(eni, vm, device_index)?;
        if kind == AttachKind::Hot {
            match self.provision(vm, eni, device_index) {
                Ok(nic) => {
                    if let Some(record) = self.vms.get_mut(&vm) {
                        match &record.running {
                            Some(running) => {
                                let _ = running.hotplug.send(Hotplug::Added(nic));
                            }
                            None => record.pending.push(nic),
                        }
                    }
                }
                Err(e) => {
                    let _ = self.registry.detach(eni);
                    return Err(e);
                }
            }
        }
        Ok(kind)
    }

    /// Detaches a secondary ENI (its MAC and addresses stay with it).
    pub fn detach_eni(&mut self, eni: EniId) -> Result<VmId, CloudError> {
        let vm = self.registry.detach(eni)?;
        if let Some(running) = self.vms.get(&vm).and_then(|r| r.running.as_ref()) {
            let _ = running.hotplug.send(Hotplug::Removed(eni));
        }
        self.deprovision(vm, eni)?;
        Ok(vm)
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panicked".into())
}
