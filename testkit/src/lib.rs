//! Generators of realistic spec-kit data, for the demo, tests and benchmarks: an evidence
//! tree with aged files named as upstream names them, a SPEC tracker, and an
//! upstream-shaped consensus database (optionally bloated the way the real one was).
//! Everything here is the project's own; no upstream data is copied.

pub mod artifacts;
pub mod bench;
pub mod bulk;
pub mod crash;
pub mod database;
pub mod digest;
pub mod evidence;
pub mod fixtures;
pub mod json;
pub mod moto;
pub mod process;
pub mod repository;
pub mod tracker;
