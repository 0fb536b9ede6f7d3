//! decode::directory: the interface names (options data, IE 82/83) every receive worker's
//! decoder learned, shared with the flow-table shards so that an alert can name the
//! interfaces of the record behind it. A record carries only the numbers
//! ([`InterfaceRef`], `Copy`); the names are looked up once per alert, never per record.
//!
//! Written when options data change a name (rare: routers resend their interface table
//! every few minutes, unchanged), read once per alert. A std `RwLock` is enough: it is never
//! held across I/O or an `.await`, and a poisoned lock still holds consistent maps (every
//! write is one insert or one remove).
//!
//! `exflow collect` also asks which exporters' names were written since it last looked
//! ([`InterfaceDirectory::track_changes`]), to publish them to the detectors, which keep a
//! directory of their own ([`InterfaceDirectory::replace`]).

use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use foldhash::{HashMap, HashSet};

use super::exporter::{DomainKey, InterfaceName};

/// Where a record's interfaces can be named, beside its exporter: its observation domain
/// and its input and output ifIndex (0: not sent).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InterfaceRef {
    pub domain: DomainKey,
    pub in_if: u32,
    pub out_if: u32,
}

/// The names an alert carries: the input and output interface of the record behind it,
/// each where its exporter announced one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamedInterfaces {
    pub input: Option<Arc<InterfaceName>>,
    pub output: Option<Arc<InterfaceName>>,
}

type Names = HashMap<IpAddr, HashMap<(DomainKey, u32), Arc<InterfaceName>>>;

/// One name an exporter announced: (observation domain, ifIndex, name and description).
pub type NamedInterface = (DomainKey, u32, Arc<InterfaceName>);

/// A cheap `Clone` handle on the names all decoders of a process announced, by exporter,
/// then (observation domain, ifIndex). Each decoder keeps at most
/// `decoder.max_interface_names` of its own, so this holds at most that many per decoder
/// (receive worker).
#[derive(Debug, Clone, Default)]
pub struct InterfaceDirectory(Arc<Shared>);

#[derive(Debug, Default)]
struct Shared {
    names: RwLock<Names>,
    /// The exporters written since [`InterfaceDirectory::take_changed`], while tracked
    /// (at most one entry per exporter).
    changed: Mutex<Option<HashSet<IpAddr>>>,
}

impl InterfaceDirectory {
    fn names(&self) -> std::sync::RwLockReadGuard<'_, Names> {
        self.0.names.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn names_mut(&self) -> std::sync::RwLockWriteGuard<'_, Names> {
        self.0.names.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn touch(&self, exporter: IpAddr) {
        let mut changed = self
            .0
            .changed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(changed) = changed.as_mut() {
            changed.insert(exporter);
        }
    }

    /// From now on, remembers which exporters' names are written (set, even unchanged, or
    /// forgotten), for [`take_changed`](Self::take_changed).
    pub fn track_changes(&self) {
        let mut changed = self
            .0
            .changed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        changed.get_or_insert_with(HashSet::default);
    }

    /// The exporters whose names were written since the last call (none when changes are
    /// not tracked).
    pub fn take_changed(&self) -> Vec<IpAddr> {
        let mut changed = self
            .0
            .changed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        changed
            .as_mut()
            .map(|changed| changed.drain().collect())
            .unwrap_or_default()
    }

    /// Every name `exporter` announced: (domain, ifIndex, names).
    pub fn names_of(&self, exporter: IpAddr) -> Vec<NamedInterface> {
        self.names().get(&exporter).map_or_else(Vec::new, |names| {
            names
                .iter()
                .map(|(&(domain, if_index), names)| (domain, if_index, names.clone()))
                .collect()
        })
    }

    /// Replaces every name of `exporter` with `names` (none: forgets it).
    pub fn replace(&self, exporter: IpAddr, names: impl IntoIterator<Item = NamedInterface>) {
        let entries: HashMap<_, _> = names
            .into_iter()
            .map(|(domain, if_index, names)| ((domain, if_index), names))
            .collect();
        let mut map = self.names_mut();
        if entries.is_empty() {
            map.remove(&exporter);
        } else {
            map.insert(exporter, entries);
        }
        drop(map);
        self.touch(exporter);
    }

    /// Sets the name and description `exporter` announced for `if_index` in `domain`.
    pub fn set(
        &self,
        exporter: IpAddr,
        domain: DomainKey,
        if_index: u32,
        names: Arc<InterfaceName>,
    ) {
        self.names_mut()
            .entry(exporter)
            .or_default()
            .insert((domain, if_index), names);
        self.touch(exporter);
    }

    /// Forgets every name of `exporter` (its decoder stopped tracking it).
    pub fn forget(&self, exporter: IpAddr) {
        self.names_mut().remove(&exporter);
        self.touch(exporter);
    }

    /// The names of the interfaces of a record from `exporter` (the address the record
    /// carries), where known.
    pub fn lookup(&self, exporter: IpAddr, interfaces: &InterfaceRef) -> NamedInterfaces {
        if interfaces.in_if == 0 && interfaces.out_if == 0 {
            return NamedInterfaces::default();
        }
        let map = self.names();
        let Some(names) = map.get(&exporter) else {
            return NamedInterfaces::default();
        };
        let name = |if_index: u32| {
            (if_index != 0)
                .then(|| names.get(&(interfaces.domain, if_index)).cloned())
                .flatten()
        };
        NamedInterfaces {
            input: name(interfaces.in_if),
            output: name(interfaces.out_if),
        }
    }

    /// Names held, all exporters.
    pub fn len(&self) -> usize {
        self.names().values().map(HashMap::len).sum()
    }

    /// Names held of `exporter`.
    pub fn len_of(&self, exporter: IpAddr) -> usize {
        self.names().get(&exporter).map_or(0, HashMap::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::FlowKind;

    fn names(name: &str) -> Arc<InterfaceName> {
        Arc::new(InterfaceName {
            name: name.into(),
            description: "".into(),
        })
    }

    #[test]
    fn a_record_finds_the_names_of_its_exporter_domain_and_interfaces_only() {
        let directory = InterfaceDirectory::default();
        let router: IpAddr = "192.0.2.7".parse().unwrap();
        let domain = (FlowKind::NetflowV9, 2177);
        directory.set(router, domain, 104, names("Te0/6/0/2"));
        directory.set(router, domain, 7, names("Gi0/0/0/7"));
        let record = InterfaceRef {
            domain,
            in_if: 104,
            out_if: 9,
        };
        let found = directory.lookup(router, &record);
        assert_eq!(&*found.input.unwrap().name, "Te0/6/0/2");
        assert!(found.output.is_none(), "interface 9 was never named");
        let other_domain = InterfaceRef {
            domain: (FlowKind::Ipfix, 2177),
            ..record
        };
        assert_eq!(
            directory.lookup(router, &other_domain),
            NamedInterfaces::default()
        );
        let other_router: IpAddr = "192.0.2.8".parse().unwrap();
        assert_eq!(
            directory.lookup(other_router, &record),
            NamedInterfaces::default()
        );
        assert_eq!(directory.len(), 2);
        directory.forget(router);
        assert!(directory.is_empty());
        assert_eq!(
            directory.lookup(router, &record),
            NamedInterfaces::default()
        );
    }

    #[test]
    fn changes_are_tracked_once_asked_and_a_replica_takes_them_whole() {
        let directory = InterfaceDirectory::default();
        let (router, other): (IpAddr, IpAddr) =
            ("192.0.2.7".parse().unwrap(), "192.0.2.8".parse().unwrap());
        let domain = (FlowKind::Ipfix, 1);
        directory.set(router, domain, 1, names("before"));
        assert!(directory.take_changed().is_empty(), "not tracked yet");
        directory.track_changes();
        directory.set(router, domain, 1, names("xe-0/0/0"));
        directory.set(router, domain, 2, names("xe-0/0/1"));
        directory.forget(other);
        let mut changed = directory.take_changed();
        changed.sort();
        assert_eq!(changed, [router, other]);
        assert!(directory.take_changed().is_empty());

        let replica = InterfaceDirectory::default();
        replica.set(router, domain, 9, names("gone"));
        replica.replace(router, directory.names_of(router));
        let mut held: Vec<_> = replica
            .names_of(router)
            .into_iter()
            .map(|(_, if_index, names)| (if_index, names.name.to_string()))
            .collect();
        held.sort();
        assert_eq!(held, [(1, "xe-0/0/0".into()), (2, "xe-0/0/1".into())]);
        assert_eq!(replica.len_of(router), 2);
        assert_eq!(replica.len_of(other), 0);
        replica.replace(router, []);
        assert!(replica.is_empty());
    }
}
