//! ktstr-wire: the host<->guest protocol (framed postcard messages).
//!
//! Filled by the "ktstr-wire and guest-init" issue; nothing here yet.
