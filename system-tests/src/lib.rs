//! Empty: the system tests are the `tests/` of this package.
