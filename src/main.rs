//! The `ktstr` command line: a thin layer over ktstr-test's library API.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
