//! Root for a moment, in slurmstepd: in `user_init` it has dropped only its effective uid (real
//! and saved are still 0), and starting root's launcher needs it back.

use std::io;

use nix::unistd::{geteuid, seteuid, Uid};

/// The effective uid switched to root; dropping it switches back to the saved one, also when
/// unwinding from a panic. Only the effective uid changes: the group ids stay the user's, as
/// the launcher becomes fully root on its own ([`egret_engine::sys::process::run_as_root_on_exec`]).
#[must_use = "the effective uid is root only while the guard lives"]
pub struct EffectiveRoot {
    saved: Uid,
}

impl EffectiveRoot {
    /// Switches the effective uid to root; the error is seteuid's.
    pub fn enter() -> io::Result<EffectiveRoot> {
        let saved = geteuid();
        seteuid(Uid::from_raw(0))?;
        Ok(EffectiveRoot { saved })
    }
}

impl Drop for EffectiveRoot {
    /// A slurmstepd stuck at euid 0 would go on as root for the user: worse than a failed step,
    /// so a failed switch back aborts it.
    fn drop(&mut self) {
        if let Err(e) = seteuid(self.saved) {
            eprintln!(
                "egret: cannot drop back to uid {}: {}; aborting the step",
                self.saved,
                io::Error::from(e)
            );
            std::process::abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As root, like slurmstepd in `user_init` (effective uid dropped, real and saved still 0);
    /// without root (`make check`), entering fails and nothing changes.
    #[test]
    fn effective_root_switches_back_after_use_and_panic() {
        let me = geteuid();
        if !me.is_root() {
            assert!(EffectiveRoot::enter().is_err());
            assert_eq!(geteuid(), me);
            return;
        }
        let nobody = Uid::from_raw(65534);
        seteuid(nobody).unwrap();
        {
            let _root = EffectiveRoot::enter().unwrap();
            assert!(geteuid().is_root());
        }
        assert_eq!(geteuid(), nobody);
        let panicked = std::panic::catch_unwind(|| {
            let _root = EffectiveRoot::enter().unwrap();
            panic!("in the guarded code");
        });
        assert!(panicked.is_err());
        assert_eq!(geteuid(), nobody, "a panic leaves the euid as it was");
        // Back to root for the rest of the test process.
        seteuid(Uid::from_raw(0)).unwrap();
    }
}
