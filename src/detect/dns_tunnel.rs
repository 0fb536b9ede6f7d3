//! detect: `dns_tunnel` (not yet written).

use super::{Finding, RecordEvent, Rule};
use crate::config::DnsTunnelConfig;

pub const NAME: &str = "dns_tunnel";

pub struct DnsTunnel;

impl DnsTunnel {
    pub fn new(_config: &DnsTunnelConfig) -> Self {
        DnsTunnel
    }
}

impl Rule for DnsTunnel {
    fn name(&self) -> &'static str {
        NAME
    }

    fn on_record(&mut self, _event: &RecordEvent<'_>, _findings: &mut Vec<Finding>) {}
}
