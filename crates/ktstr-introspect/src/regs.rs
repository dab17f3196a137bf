//! Per-CPU register state as introspection needs it: what KASLR discovery
//! and page-table walks use, and what a failure dump shows.
#![deny(clippy::arithmetic_side_effects)]

use serde::{Deserialize, Serialize};

/// One vCPU's registers at a freeze or in a dump.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuRegs {
    pub cpu: u32,
    pub rip: u64,
    pub rsp: u64,
    pub rbp: u64,
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub rflags: u64,
    pub cs: u64,
    pub ss: u64,
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
    pub fs_base: u64,
    pub gs_base: u64,
    pub kernel_gs_base: u64,
    /// IDTR base, when the source knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idtr_base: Option<u64>,
    /// MSR_LSTAR (the syscall entry point), when the source knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lstar: Option<u64>,
}

/// CR4.LA57: 5-level paging.
pub const CR4_LA57: u64 = 1 << 12;

impl CpuRegs {
    /// Is this CPU in 5-level paging mode?
    pub fn la57(&self) -> bool {
        self.cr4 & CR4_LA57 != 0
    }

    /// CR3 with the PCID and flag bits cleared.
    pub fn pgd_pa(&self) -> u64 {
        self.cr3 & 0x000f_ffff_ffff_f000
    }
}
