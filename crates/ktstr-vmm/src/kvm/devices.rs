//! Port I/O devices of the kvm engine: COM1 (a 16550 from vm-superio,
//! output into the console ring, interrupt through an irqfd on IRQ 4), the
//! i8042 controller's reset line, and ktstr's exit port.
//!
//! Unknown ports read as all ones and ignore writes, as on real hardware
//! with nothing decoding them; the guest can never make the VMM fail.

use crate::console::Console;
use crate::spec::VmExit;
use std::sync::Mutex;
use vm_superio::{Serial, Trigger, serial::NoEvents};
use vmm_sys_util::eventfd::EventFd;

/// COM1's base port.
pub const COM1: u16 = 0x3f8;
/// COM1's interrupt line.
pub const COM1_IRQ: u32 = 4;
/// i8042 command/status port; writing 0xfe pulses the CPU reset line.
pub const I8042_CMD: u16 = 0x64;
const I8042_DATA: u16 = 0x60;
/// ktstr's exit port (like QEMU's isa-debug-exit): a byte written here
/// ends the run — 0 powers off, anything else is a guest-reported failure.
/// The small test guests use it; Linux never touches it.
pub const EXIT_PORT: u16 = 0x501;

/// The serial interrupt: a write to an eventfd KVM routes to IRQ 4.
pub struct IrqTrigger(pub EventFd);

impl Trigger for IrqTrigger {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// The serial's output: the console ring.
pub struct ConsoleOut(pub Console);

impl std::io::Write for ConsoleOut {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.push(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every port-I/O device of one VM.
pub struct PioBus {
    serial: Mutex<Serial<IrqTrigger, NoEvents, ConsoleOut>>,
}

impl PioBus {
    pub fn new(console: Console, irq: EventFd) -> Self {
        Self {
            serial: Mutex::new(Serial::new(IrqTrigger(irq), ConsoleOut(console))),
        }
    }

    /// A guest `out`: returns how the run ends if this write ends it.
    pub fn write(&self, port: u16, data: &[u8]) -> Option<VmExit> {
        let v = *data.first()?;
        match port {
            COM1..=0x3ff => {
                let mut s = self.serial.lock().unwrap_or_else(|e| e.into_inner());
                if let Err(e) = s.write((port - COM1) as u8, v) {
                    tracing::debug!(?e, "serial write");
                }
                None
            }
            I8042_CMD if v == 0xfe => Some(VmExit::Reset),
            EXIT_PORT if v == 0 => Some(VmExit::PowerOff),
            EXIT_PORT => Some(VmExit::EngineError(format!(
                "the guest wrote {v:#x} to the exit port (failure)"
            ))),
            _ => None,
        }
    }

    /// A guest `in`.
    pub fn read(&self, port: u16, data: &mut [u8]) {
        data.fill(0xff);
        match port {
            COM1..=0x3ff => {
                let mut s = self.serial.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(b) = data.first_mut() {
                    *b = s.read((port - COM1) as u8);
                }
            }
            // No keyboard: status "output buffer empty, input buffer empty".
            I8042_CMD | I8042_DATA => data.fill(0),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bus() -> (PioBus, Console) {
        let c = Console::new(1024, None);
        (
            PioBus::new(c.clone(), EventFd::new(libc::EFD_NONBLOCK).unwrap()),
            c,
        )
    }

    #[test]
    fn serial_output_reaches_the_console() {
        let (b, c) = bus();
        for &x in b"hi\n" {
            assert_eq!(b.write(COM1, &[x]), None);
        }
        assert!(c.contents().contains("hi"));
        // Line status: transmitter empty.
        let mut lsr = [0u8];
        b.read(COM1 + 5, &mut lsr);
        assert_ne!(lsr[0] & 0x20, 0);
    }

    #[test]
    fn reset_exit_and_junk() {
        let (b, _) = bus();
        assert_eq!(b.write(I8042_CMD, &[0xfe]), Some(VmExit::Reset));
        assert_eq!(b.write(EXIT_PORT, &[0]), Some(VmExit::PowerOff));
        assert!(matches!(
            b.write(EXIT_PORT, &[3]),
            Some(VmExit::EngineError(_))
        ));
        assert_eq!(b.write(0x1234, &[1, 2, 3, 4]), None);
        assert_eq!(b.write(COM1, &[]), None, "empty data is ignored");
        let mut d = [0u8; 4];
        b.read(0x1234, &mut d);
        assert_eq!(d, [0xff; 4]);
    }
}
