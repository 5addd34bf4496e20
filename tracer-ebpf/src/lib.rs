#![no_std]
// This file exists so that tracer-user can list this crate as a build-dependency (cargo needs a
// library target for that); the programs are the `tracer` binary in main.rs.
