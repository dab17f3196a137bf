//! ktstr-guest-init: PID 1 of every ktstr test VM.
//!
//! Filled by the "ktstr-wire and guest-init" issue. Until then this binary
//! refuses to run, so nothing mistakes it for a working init.

fn main() {
    eprintln!("ktstr-guest-init: not implemented yet");
    std::process::exit(1);
}
