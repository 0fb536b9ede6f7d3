//! detect: `new_destination` (not yet written).

use super::{Finding, RecordEvent, Rule};
use crate::config::NewDestinationConfig;

pub const NAME: &str = "new_destination";

pub struct NewDestination;

impl NewDestination {
    pub fn new(_config: &NewDestinationConfig) -> Self {
        NewDestination
    }
}

impl Rule for NewDestination {
    fn name(&self) -> &'static str {
        NAME
    }

    fn on_record(&mut self, _event: &RecordEvent<'_>, _findings: &mut Vec<Finding>) {}
}
