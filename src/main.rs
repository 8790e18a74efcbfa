//! The `cas-sentinel` binary: the custom handler (`serve`) and the operator commands.

fn main() -> std::process::ExitCode {
    cas_sentinel::cli::main()
}
