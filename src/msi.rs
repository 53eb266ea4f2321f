//! MSIs delivered through irqfds: each MSI-X vector gets a GSI routed (by
//! `KVM_SET_GSI_ROUTING`) to the message the guest programmed, and an
//! eventfd bound to that GSI (`KVM_IRQFD`). A device thread raises the
//! vector by writing the eventfd; KVM injects the message itself.
//!
//! Setting the routing table replaces all of it, including the routes
//! KVM installs by default, so the router re-states the architecture's
//! defaults (x86's PIC and IOAPIC pins, without which `KVM_IRQ_LINE`
//! stops working there; each architecture states its own) in front of the MSI routes every time.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::bus::lock;
use crate::kvm::{GsiRoute, MsiMessage};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no GSI left for an MSI route (the router has {0})")]
    Exhausted(u32),
    #[error("cannot create an irqfd eventfd: {0}")]
    EventFd(#[source] std::io::Error),
    #[error(transparent)]
    Kvm(#[from] crate::kvm::Error),
}

/// What the router needs of the VM (a fake stands in for tests).
pub trait RouteTable: Send + Sync {
    fn set_gsi_routing(&self, routes: &[(u32, GsiRoute)]) -> Result<(), crate::kvm::Error>;
    fn register_irqfd(&self, evt: &EventFd, gsi: u32) -> Result<(), crate::kvm::Error>;
    fn unregister_irqfd(&self, evt: &EventFd, gsi: u32) -> Result<(), crate::kvm::Error>;
}

impl RouteTable for crate::kvm::Vm {
    fn set_gsi_routing(&self, routes: &[(u32, GsiRoute)]) -> Result<(), crate::kvm::Error> {
        crate::kvm::Vm::set_gsi_routing(self, routes)
    }
    fn register_irqfd(&self, evt: &EventFd, gsi: u32) -> Result<(), crate::kvm::Error> {
        crate::kvm::Vm::register_irqfd(self, evt, gsi)
    }
    fn unregister_irqfd(&self, evt: &EventFd, gsi: u32) -> Result<(), crate::kvm::Error> {
        crate::kvm::Vm::unregister_irqfd(self, evt, gsi)
    }
}

/// The VM's GSI routing table, as far as MSIs are concerned.
pub struct MsiRouter {
    vm: Arc<dyn RouteTable>,
    defaults: Vec<(u32, GsiRoute)>,
    routes: Mutex<BTreeMap<u32, MsiMessage>>,
    next: AtomicU32,
    end: u32,
    /// Whether the controller identifies senders (GICv3 ITS).
    with_devid: bool,
}

/// The first GSI handed to MSIs: above every architecture's wired lines.
pub const FIRST_MSI_GSI: u32 = 256;
/// KVM allows GSIs below this (KVM_MAX_IRQ_ROUTES).
pub const MAX_GSI: u32 = 4096;

impl MsiRouter {
    pub fn new(
        vm: Arc<dyn RouteTable>,
        defaults: Vec<(u32, GsiRoute)>,
        with_devid: bool,
    ) -> Arc<Self> {
        Arc::new(MsiRouter {
            vm,
            defaults,
            routes: Mutex::new(BTreeMap::new()),
            next: AtomicU32::new(FIRST_MSI_GSI),
            end: MAX_GSI,
            with_devid,
        })
    }

    /// A new vector: a GSI with no route yet, and its eventfd. The irqfd
    /// is bound on first use: arm64 refuses irqfds until the vGIC is
    /// initialised, which happens after the devices are built.
    pub fn vector(self: &Arc<Self>) -> Result<MsiIrqfd, Error> {
        let gsi = self.next.fetch_add(1, Ordering::SeqCst);
        if gsi >= self.end {
            return Err(Error::Exhausted(self.end - FIRST_MSI_GSI));
        }
        let evt = EventFd::new(EFD_NONBLOCK).map_err(Error::EventFd)?;
        Ok(MsiIrqfd {
            router: self.clone(),
            gsi,
            evt,
            bound: false,
            routed: None,
        })
    }

    fn set(&self, gsi: u32, msg: Option<MsiMessage>) -> Result<(), Error> {
        let mut routes = lock(&self.routes);
        match msg {
            Some(m) => routes.insert(gsi, m),
            None => routes.remove(&gsi),
        };
        let mut table = self.defaults.clone();
        table.extend(routes.iter().map(|(g, m)| {
            let devid = if self.with_devid { m.devid } else { None };
            (*g, GsiRoute::Msi(MsiMessage { devid, ..*m }))
        }));
        self.vm.set_gsi_routing(&table)?;
        Ok(())
    }
}

/// One MSI-X vector's GSI and irqfd.
pub struct MsiIrqfd {
    router: Arc<MsiRouter>,
    gsi: u32,
    evt: EventFd,
    bound: bool,
    routed: Option<MsiMessage>,
}

impl MsiIrqfd {
    /// Routes the vector to `msg` (a no-op when it already is).
    pub fn route(&mut self, msg: MsiMessage) -> Result<(), Error> {
        if self.routed == Some(msg) {
            return Ok(());
        }
        if !self.bound {
            self.router.vm.register_irqfd(&self.evt, self.gsi)?;
            self.bound = true;
        }
        self.router.set(self.gsi, Some(msg))?;
        self.routed = Some(msg);
        Ok(())
    }

    /// The message the vector is routed to, if any.
    pub fn routed(&self) -> Option<MsiMessage> {
        self.routed
    }

    /// Raises the vector. False if the eventfd write failed.
    pub fn trigger(&self) -> bool {
        self.evt.write(1).is_ok()
    }

    pub fn gsi(&self) -> u32 {
        self.gsi
    }
}

impl Drop for MsiIrqfd {
    fn drop(&mut self) {
        if self.bound {
            if let Err(e) = self.router.vm.unregister_irqfd(&self.evt, self.gsi) {
                log::debug!("MSI GSI {}: {e}", self.gsi);
            }
        }
        if self.routed.is_some() {
            if let Err(e) = self.router.set(self.gsi, None) {
                log::debug!("MSI GSI {}: {e}", self.gsi);
            }
        }
    }
}

#[cfg(test)]
pub mod testing {
    use super::*;

    /// Records what the router asked of "KVM".
    #[derive(Default)]
    pub struct FakeTable {
        pub tables: Mutex<Vec<Vec<(u32, GsiRoute)>>>,
        pub irqfds: Mutex<Vec<(bool, u32)>>,
    }

    impl RouteTable for FakeTable {
        fn set_gsi_routing(&self, routes: &[(u32, GsiRoute)]) -> Result<(), crate::kvm::Error> {
            self.tables.lock().unwrap().push(routes.to_vec());
            Ok(())
        }
        fn register_irqfd(&self, _evt: &EventFd, gsi: u32) -> Result<(), crate::kvm::Error> {
            self.irqfds.lock().unwrap().push((true, gsi));
            Ok(())
        }
        fn unregister_irqfd(&self, _evt: &EventFd, gsi: u32) -> Result<(), crate::kvm::Error> {
            self.irqfds.lock().unwrap().push((false, gsi));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::FakeTable;
    use super::*;

    fn msg(data: u32) -> MsiMessage {
        MsiMessage {
            addr: 0xfee0_0000,
            data,
            devid: Some(8),
        }
    }

    #[test]
    fn routes_keep_the_defaults_and_follow_the_vectors() {
        let vm = Arc::new(FakeTable::default());
        let defaults: Vec<(u32, GsiRoute)> = (0..40)
            .map(|pin| (pin, GsiRoute::Irqchip { chip: 0, pin }))
            .collect();
        let router = MsiRouter::new(vm.clone(), defaults, false);
        let mut a = router.vector().unwrap();
        let mut b = router.vector().unwrap();
        assert_eq!((a.gsi(), b.gsi()), (256, 257));
        a.route(msg(0x41)).unwrap();
        a.route(msg(0x41)).unwrap(); // unchanged: no new table
        b.route(msg(0x42)).unwrap();
        {
            let tables = vm.tables.lock().unwrap();
            assert_eq!(tables.len(), 2);
            let last = tables.last().unwrap();
            assert_eq!(last.len(), 40 + 2, "the defaults, then the MSIs");
            assert_eq!(
                last[40],
                (
                    256,
                    GsiRoute::Msi(MsiMessage {
                        devid: None,
                        ..msg(0x41)
                    })
                ),
                "no device id without an ITS"
            );
        }
        assert!(a.trigger());
        drop(a);
        let tables = vm.tables.lock().unwrap();
        assert_eq!(
            tables.last().unwrap().len(),
            41,
            "a dropped vector's route goes"
        );
        assert!(vm.irqfds.lock().unwrap().contains(&(false, 256)));
    }

    #[test]
    fn its_routes_carry_the_device_id_and_gsis_run_out_cleanly() {
        let vm = Arc::new(FakeTable::default());
        let router = MsiRouter::new(vm.clone(), Vec::new(), true);
        let mut v = router.vector().unwrap();
        v.route(msg(7)).unwrap();
        assert_eq!(
            vm.tables.lock().unwrap()[0],
            vec![(256, GsiRoute::Msi(msg(7)))]
        );
        router.next.store(MAX_GSI, Ordering::SeqCst);
        assert!(matches!(router.vector(), Err(Error::Exhausted(_))));
    }
}
