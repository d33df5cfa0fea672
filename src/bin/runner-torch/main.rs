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

/// mimalloc serves every allocation of the process, libtorch's and oneDNN's included (the
/// crate's `override` defines `malloc`, `free` and `posix_memalign`, which the shared libraries
/// then resolve to). libtorch allocates each op's output with `posix_memalign` and frees it a
/// few ops later, hundreds of times a training step: in glibc's allocator that was about a
/// tenth of the networks' CPU (`_int_malloc` and `_int_free` split and merged the aligned
/// blocks). Arithmetic is unchanged.
#[global_allocator]
static HEAP: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    match serve::serve() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("runner-torch: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
