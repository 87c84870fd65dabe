//! Per node, per step root helper (see docs/design.md).
