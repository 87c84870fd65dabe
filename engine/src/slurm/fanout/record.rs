//! Root's per-job memory of hand-overs on this node (`runDir/fanout/JOB/`, removed by the job
//! epilog): `HEX.sent-KEY` on a first node that served node set KEY, `HEX.waited` on a node
//! that waited for a broadcast of that image once.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;

use sha2::{Digest, Sha256};

use super::Fanout;

impl Fanout {
    fn record_path(&self, what: &str) -> PathBuf {
        let hex = self.digest.rsplit(':').next().unwrap_or_default();
        self.record_dir.join(format!("{hex}.{what}"))
    }

    fn sent_path(&self) -> PathBuf {
        // The node list can be long (hundreds of nodes): its hash names it.
        let key = hex::encode(&Sha256::digest(self.nodes.as_bytes())[..8]);
        self.record_path(&format!("sent-{key}"))
    }

    pub(super) fn sent_before(&self) -> bool {
        self.sent_path().exists()
    }

    pub(super) fn waited_before(&self) -> bool {
        self.record_path("waited").exists()
    }

    pub(super) fn mark_sent(&self) {
        self.mark(self.sent_path());
    }

    pub(super) fn mark_waited(&self) {
        self.mark(self.record_path("waited"));
    }

    fn mark(&self, path: PathBuf) {
        // runDir is root's (0755); the record directory is root's alone.
        let _ = fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.record_dir);
        let _ = fs::write(path, b"");
    }
}
