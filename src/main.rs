//! The `cas-sentinel` binary: the custom handler (`serve`) and the operator commands.

/// mimalloc instead of the C library's allocator. The shipped binary is static musl, and
/// musl's malloc, under an ingest's many short-lived buffers on several threads, took more
/// than half the handler's CPU: the benchmark ingested 41 MB/s with it against 91 MB/s for
/// the same code on glibc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cas_sentinel::main()
}
