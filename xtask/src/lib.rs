//! patverify: proves or disproves an x86 page-table patch on real booted
//! kernels. The library holds the pipeline; `main.rs` only parses flags.
//!
//! - [`stages`]: one module per step of the pipeline, in order — source →
//!   patch → variant → config → build → initramfs → qemu (boot) → ktap
//!   (the guest's report) → report (each boot's report checked) → compare
//!   (table and verdict).
//! - [`pipeline`]: the one path through the stages — open the run, plan,
//!   build, boot, judge — for verify, probe and mutants, each a `Job`; the
//!   run's record and outcome.
//! - [`record`]: the typed run record (JSON) written by verify and probe and
//!   read back by `report`, junit, kcidb, matrix, bench and the tests.
//! - [`commands`]: one module per `cargo xtask` command.
//! - [`support`]: processes, the cache, failure kinds and exit codes,
//!   provisioning the host.

pub mod commands;
pub mod flags;
pub mod junit;
pub mod kcidb;
pub mod mail;
pub mod model;
pub mod output;
pub mod pipeline;
pub mod record;
pub mod runs;
pub mod stages;
pub mod support;
pub mod ui;
