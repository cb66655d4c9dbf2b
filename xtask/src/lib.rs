//! patverify: proves or disproves an x86 page-table patch on real booted
//! kernels. The library holds the pipeline; `main.rs` only parses flags.
//!
//! - [`stages`]: one module per step of the pipeline, in order — source →
//!   patch → variant → config → build → initramfs → qemu (boot) → ktap
//!   (the guest's report) → compare (table and verdict).
//! - [`session`]: what verify and probe share — opening the cache, building
//!   and booting a set of variants, the run's record.
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
pub mod record;
pub mod runs;
pub mod session;
pub mod stages;
pub mod support;
pub mod ui;
