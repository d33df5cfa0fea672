//! A request to stop training, from Ctrl-C in a terminal or a kernel interrupt in a notebook.
//!
//! Whoever catches the signal calls [`request`]; training looks at [`requested`] between folds
//! and, for iterative models, after every round, and stops with [`Interrupted`]. The run then
//! ends KILLED (never left RUNNING), the configs not yet started end KILLED without training,
//! and the sweep's parent run ends KILLED. A new sweep in the same process calls [`clear`].

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Why a run stopped before its end: recorded as its `runner.killed_reason`.
pub const REASON: &str = "interrupted (Ctrl-C or a kernel interrupt)";

/// The error a run stops with once an interrupt was requested.
#[derive(Debug, thiserror::Error)]
#[error("{REASON}")]
pub struct Interrupted;

/// Asks training to stop. Only stores a flag, so a signal handler may call it.
pub fn request() {
    REQUESTED.store(true, Ordering::SeqCst);
}

pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// Forgets an earlier request, before a new sweep starts in the same process.
pub fn clear() {
    REQUESTED.store(false, Ordering::SeqCst);
}

/// `Err(Interrupted)` once an interrupt was requested.
pub fn check() -> Result<(), Interrupted> {
    if requested() {
        Err(Interrupted)
    } else {
        Ok(())
    }
}

/// Whether an error is (or was caused by) an interrupt.
pub fn is_interrupt(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<Interrupted>())
}
