//! Signal handlers.

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

/// Installs `handler` for `sig` (`SA_RESTART`, nothing masked). `handler` must only make
/// async-signal-safe calls (atomics, [`super::fd::write_from_signal_handler`]): it interrupts
/// the program anywhere, in the middle of an allocation included.
pub fn set_async_safe_handler(sig: Signal, handler: extern "C" fn(libc::c_int)) -> nix::Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(handler),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    // SAFETY: the handler is async-signal-safe (this function's contract, which its callers in
    // egret keep: they only load an atomic and write(2)); no previous handler is relied upon.
    unsafe { sigaction(sig, &action) }.map(drop)
}
