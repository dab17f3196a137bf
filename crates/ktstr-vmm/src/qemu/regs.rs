//! Parse QEMU's `info registers -a` (x86-64) into [`CpuRegs`].

use ktstr_introspect::regs::CpuRegs;

fn hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s, 16).ok()
}

/// Parse every `CPU#N` block. Unknown lines are ignored; a block without
/// RIP is dropped.
pub fn parse_info_registers(text: &str) -> Vec<CpuRegs> {
    let mut out = Vec::new();
    let mut cur: Option<CpuRegs> = None;
    let mut has_rip = false;
    for line in text.lines() {
        let line = line.trim_end();
        if let Some(n) = line.strip_prefix("CPU#") {
            if let Some(c) = cur.take().filter(|_| has_rip) {
                out.push(c);
            }
            has_rip = false;
            let num: String = n.chars().take_while(|c| c.is_ascii_digit()).collect();
            cur = Some(CpuRegs {
                cpu: num.parse().unwrap_or(out.len() as u32),
                ..Default::default()
            });
            continue;
        }
        let Some(c) = cur.as_mut() else { continue };
        // Segment and table lines: "GS =0000 ffff888... ..." / "IDT=     fffffe...".
        for (name, field) in [
            ("FS =", 0u8),
            ("GS =", 1),
            ("IDT=", 2),
            ("CS =", 3),
            ("SS =", 4),
        ] {
            if let Some(rest) = line.strip_prefix(name) {
                let toks: Vec<&str> = rest.split_whitespace().collect();
                match field {
                    0 => c.fs_base = toks.get(1).and_then(|t| hex(t)).unwrap_or(0),
                    1 => c.gs_base = toks.get(1).and_then(|t| hex(t)).unwrap_or(0),
                    2 => c.idtr_base = toks.first().and_then(|t| hex(t)),
                    3 => c.cs = toks.first().and_then(|t| hex(t)).unwrap_or(0),
                    _ => c.ss = toks.first().and_then(|t| hex(t)).unwrap_or(0),
                }
            }
        }
        // NAME=value pairs, names possibly padded ("R8 =").
        let mut rest = line;
        while let Some(eq) = rest.find('=') {
            let name = rest[..eq].trim();
            let name = name.rsplit(' ').next().unwrap_or(name);
            let after = &rest[eq + 1..];
            let val: String = after
                .trim_start()
                .chars()
                .take_while(|ch| ch.is_ascii_hexdigit())
                .collect();
            let v = hex(&val);
            if let Some(v) = v {
                match name {
                    "RAX" => c.rax = v,
                    "RBX" => c.rbx = v,
                    "RCX" => c.rcx = v,
                    "RDX" => c.rdx = v,
                    "RSI" => c.rsi = v,
                    "RDI" => c.rdi = v,
                    "RBP" => c.rbp = v,
                    "RSP" => c.rsp = v,
                    "R8" => c.r8 = v,
                    "R9" => c.r9 = v,
                    "R10" => c.r10 = v,
                    "R11" => c.r11 = v,
                    "R12" => c.r12 = v,
                    "R13" => c.r13 = v,
                    "R14" => c.r14 = v,
                    "R15" => c.r15 = v,
                    "RIP" => {
                        c.rip = v;
                        has_rip = true;
                    }
                    "RFL" => c.rflags = v,
                    "CR0" => c.cr0 = v,
                    "CR2" => c.cr2 = v,
                    "CR3" => c.cr3 = v,
                    "CR4" => c.cr4 = v,
                    "EFER" => c.efer = v,
                    _ => {}
                }
            }
            rest = &after[after.find(' ').unwrap_or(after.len())..];
        }
    }
    if let Some(c) = cur.filter(|_| has_rip) {
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "CPU#0
RAX=0000000000000000 RBX=0000000000000000 RCX=0000000000000001 RDX=0000000000000000
RSI=0000000000000083 RDI=0000000000054f9c RBP=ffffffff83803e28 RSP=ffffffff83803e20
R8 =ffff88800f61e9e0 R9 =0000000000000000 R10=0000000000000001 R11=0000000000000000
R12=0000000000000000 R13=0000000000000000 R14=0000000000000000 R15=0000000000000000
RIP=ffffffff822ba22f RFL=00000246 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=1
ES =0000 0000000000000000 00000000 00000000
CS =0010 0000000000000000 ffffffff 00af9b00 DPL=0 CS64 [-RA]
SS =0018 0000000000000000 ffffffff 00cf9300 DPL=0 DS   [-WA]
FS =0000 0000000000000000 00000000 00000000
GS =0000 ffff88800f600000 00000000 00000000
IDT=     fffffe0000000000 00000fff
CR0=80050033 CR2=0000000000000000 CR3=0000000002a2e000 CR4=003506f0
EFER=0000000000000d01
CPU#1
RAX=0000000000000001 RBX=0000000000000000 RCX=0000000000000001 RDX=0000000000000000
RIP=ffffffff822ba230 RFL=00000246 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=1
CR0=80050033 CR2=0000000000000000 CR3=0000000004a00000 CR4=003506f0
";

    #[test]
    fn parses_every_cpu() {
        let r = parse_info_registers(SAMPLE);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].rip, 0xffffffff822ba22f);
        assert_eq!(r[0].r8, 0xffff88800f61e9e0);
        assert_eq!(r[0].rsp, 0xffffffff83803e20);
        assert_eq!(r[0].cr3, 0x2a2e000);
        assert_eq!(r[0].cr4, 0x3506f0);
        assert_eq!(r[0].efer, 0xd01);
        assert_eq!(r[0].gs_base, 0xffff88800f600000);
        assert_eq!(r[0].idtr_base, Some(0xfffffe0000000000));
        assert_eq!(r[0].cs, 0x10);
        assert_eq!(r[1].cpu, 1);
        assert_eq!(r[1].rax, 1);
        assert!(parse_info_registers("garbage\nCPU#\nRIP=zz").is_empty());
    }
}
