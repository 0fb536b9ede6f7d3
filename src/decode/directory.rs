//! decode::directory: the interface names (options data, IE 82/83) every receive worker's
//! decoder learned, shared with the flow-table shards so that an alert can name the
//! interfaces of the record behind it. A record carries only the numbers
//! ([`InterfaceRef`], `Copy`); the names are looked up once per alert, never per record.
//!
//! Written when options data change a name (rare: routers resend their interface table
//! every few minutes, unchanged), read once per alert. A std `RwLock` is enough: it is never
//! held across I/O or an `.await`, and a poisoned lock still holds consistent maps (every
//! write is one insert or one remove).

use std::net::IpAddr;
use std::sync::{Arc, PoisonError, RwLock};

use foldhash::HashMap;

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

/// A cheap `Clone` handle on the names all decoders of a process announced, by exporter,
/// then (observation domain, ifIndex). Each decoder keeps at most
/// `decoder.max_interface_names` of its own, so this holds at most that many per decoder
/// (receive worker).
#[derive(Debug, Clone, Default)]
pub struct InterfaceDirectory(Arc<RwLock<Names>>);

impl InterfaceDirectory {
    /// Sets the name and description `exporter` announced for `if_index` in `domain`.
    pub fn set(
        &self,
        exporter: IpAddr,
        domain: DomainKey,
        if_index: u32,
        names: Arc<InterfaceName>,
    ) {
        let mut map = self.0.write().unwrap_or_else(PoisonError::into_inner);
        map.entry(exporter)
            .or_default()
            .insert((domain, if_index), names);
    }

    /// Forgets every name of `exporter` (its decoder stopped tracking it).
    pub fn forget(&self, exporter: IpAddr) {
        let mut map = self.0.write().unwrap_or_else(PoisonError::into_inner);
        map.remove(&exporter);
    }

    /// The names of the interfaces of a record from `exporter` (the address the record
    /// carries), where known.
    pub fn lookup(&self, exporter: IpAddr, interfaces: &InterfaceRef) -> NamedInterfaces {
        if interfaces.in_if == 0 && interfaces.out_if == 0 {
            return NamedInterfaces::default();
        }
        let map = self.0.read().unwrap_or_else(PoisonError::into_inner);
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
        let map = self.0.read().unwrap_or_else(PoisonError::into_inner);
        map.values().map(HashMap::len).sum()
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
}
