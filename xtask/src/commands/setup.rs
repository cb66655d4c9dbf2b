//! `cargo xtask setup`: only the provisioning step (`--all`: also what
//! `--distcc` and the end-to-end test need).

use crate::flags::Setup;
use crate::support::provision::{ensure, Feature};
use anyhow::Result;
use std::path::Path;

impl Setup {
    pub fn run(self, cache_root: &Path) -> Result<()> {
        let features: &[Feature] = if self.all {
            &Feature::ALL
        } else {
            &[Feature::Pipeline]
        };
        ensure(cache_root, features)?;
        crate::output::result("setup complete");
        Ok(())
    }
}
