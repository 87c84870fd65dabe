//! `hooksDir`: OCI hook definitions in the podman/CRI-O "hooks.d" format (schema 1.0.0), and the
//! selection of the hooks a container gets.
//!
//! A file holds `version` ("1.0.0"), `hook` (a runtime-spec hook: `path`, `args`, `env`,
//! `timeout`), `when` (`always`, `annotations` {key regex: value regex}, `commands` [regex on
//! the command], `hasBindMounts`) and `stages`. A hook applies when *every* condition given in
//! `when` holds; `always: false` and `hasBindMounts: false` never hold. Files are read in the
//! order of their lower-cased names, and hooks keep that order within each stage. Unknown keys are
//! errors naming the file: a typo must not silently disable (or enable) a hook. Annotations come
//! from egret and the user, never from image labels.
//!
//! [`schema`] reads the files, [`select`] decides which apply to a container, [`mpi`] is the
//! `--mpi-hook` policy, [`listing`] prints `egret hooks`, [`annotations`] names every annotation
//! key, [`devices`] gives the hooks the devices they need.

pub mod annotations;
pub mod devices;
#[cfg(test)]
mod fixtures;
pub mod listing;
pub mod mpi;
pub mod pattern;
pub mod schema;
pub mod select;
