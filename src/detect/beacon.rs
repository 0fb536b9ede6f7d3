//! detect: `beacon` (not yet written).

use super::{Finding, RecordEvent, Rule};
use crate::config::BeaconConfig;

pub const NAME: &str = "beacon";

pub struct Beacon;

impl Beacon {
    pub fn new(_config: &BeaconConfig) -> Self {
        Beacon
    }
}

impl Rule for Beacon {
    fn name(&self) -> &'static str {
        NAME
    }

    fn on_record(&mut self, _event: &RecordEvent<'_>, _findings: &mut Vec<Finding>) {}
}
