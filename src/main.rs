//! The `ddcolor` binary: parse, run, exit. Everything else lives in the library.
fn main() {
    std::process::exit(ddcolor::cli::main_exit_code());
}
