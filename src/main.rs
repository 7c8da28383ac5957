//! The `ddcolor` binary: parse, run, exit. Everything else lives in the library.
fn main() {
    ddcolor::alloc::keep_freed_memory();
    std::process::exit(ddcolor::cli::main_exit_code());
}
