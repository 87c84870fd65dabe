//! Images: from a user's reference to a squashfs file root can trust.
//!
//! [`reference`] parses names → [`registry`] fetches the manifest, config and layers with skopeo
//! **as the user** → [`import`] verifies them against their digests, [`flatten`]s the layers and
//! [`squash`]es the tree with mksquashfs → [`store`] keeps the content-addressed squashfs files
//! and the per-user Sarus-style indexes. [`metadata`] is what a run needs from the image config;
//! [`progress`] reports all of it to a person.

pub mod all_root;
pub mod flatten;
pub mod import;
pub mod manifest_get;
pub mod metadata;
pub mod progress;
pub mod reference;
pub mod registry;
pub mod squash;
pub mod store;
