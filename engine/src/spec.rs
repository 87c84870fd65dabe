//! TODO(owner): see engine/src/lib.rs
