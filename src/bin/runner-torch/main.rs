//! runner's network helper: trains and runs the MLP, CNN and LSTM kinds on libtorch for the
//! `runner` command and the Python module, which start it and talk to it over its standard input
//! and output (`runner::models::nn::remote`), one model a process. Not meant to be run by hand.
//! It is the only program of the package that links libtorch, through `tch`: its code is here,
//! not in the library.

mod dropout;
mod flat;
mod serve;
mod stack;
mod torch;

/// libtorch's random generator is process-wide and tests run on threads side by side: a test
/// that seeds it holds this while it draws.
#[cfg(test)]
pub(crate) fn generator_turn() -> std::sync::MutexGuard<'static, ()> {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn main() -> std::process::ExitCode {
    // No fast bins in glibc's allocator: libtorch frees many small blocks between allocations
    // of tensors of tens of kilobytes, and each such allocation first consolidated the fast
    // bins (a tenth of the wine CNN's time). Arithmetic is unchanged.
    // Blocks up to 64 MiB from the heap, and up to 256 MiB of free heap kept: oneDNN's LSTM
    // allocates and frees its buffers on every call, and with glibc's defaults the heap grew
    // and shrank around them (about a thousand brk calls and their page faults in the wine
    // LSTM's run). Arithmetic is unchanged.
    // SAFETY: mallopt only sets an allocator parameter; nothing is allocated concurrently yet.
    unsafe {
        libc::mallopt(libc::M_MXFAST, 0);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
    match serve::serve() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("runner-torch: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
