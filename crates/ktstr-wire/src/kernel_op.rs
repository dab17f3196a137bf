//! Cold-path kernel operations: the guest asks the host to freeze the VM
//! and read or write a kernel value, named by a [`KernelTarget`]. These
//! types travel on the wire, so they live here; the host validates and
//! performs them with ktstr-introspect.

use serde::{Deserialize, Serialize};

/// What to read or write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KernelTarget {
    /// A global by symbol name (e.g. `jiffies_64`).
    Symbol { name: String },
    /// A field of a per-CPU struct variable on one CPU (e.g.
    /// `runqueues` / `nr_running` on CPU 0).
    PerCpuField {
        symbol: String,
        field: String,
        cpu: u32,
    },
    /// A field path of one task's `task_struct` (e.g. `scx.dsq_vtime`),
    /// identified by pid and `start_time` (ns since boot) so a recycled
    /// pid is never written.
    TaskField {
        pid: u32,
        start_time_ns: u64,
        field_path: String,
    },
    /// A raw kernel virtual address.
    Kva { addr: u64 },
}

impl KernelTarget {
    pub fn symbol(name: &str) -> Self {
        Self::Symbol { name: name.into() }
    }
    pub fn per_cpu_field(symbol: &str, field: &str, cpu: u32) -> Self {
        Self::PerCpuField {
            symbol: symbol.into(),
            field: field.into(),
            cpu,
        }
    }
    pub fn task_field(pid: u32, start_time_ns: u64, field_path: &str) -> Self {
        Self::TaskField {
            pid,
            start_time_ns,
            field_path: field_path.into(),
        }
    }
    pub fn kva(addr: u64) -> Self {
        Self::Kva { addr }
    }
}

/// A value to write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KernelValue {
    U32(u32),
    U64(u64),
    Bytes(Vec<u8>),
}

impl KernelValue {
    pub fn u32(v: u32) -> Self {
        Self::U32(v)
    }
    pub fn u64(v: u64) -> Self {
        Self::U64(v)
    }
    pub fn bytes(v: Vec<u8>) -> Self {
        Self::Bytes(v)
    }
    /// Width in bytes.
    pub fn len(&self) -> usize {
        match self {
            Self::U32(_) => 4,
            Self::U64(_) => 8,
            Self::Bytes(b) => b.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Little-endian bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Self::U32(v) => v.to_le_bytes().to_vec(),
            Self::U64(v) => v.to_le_bytes().to_vec(),
            Self::Bytes(b) => b.clone(),
        }
    }
}

/// How many bytes to read, and as what.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KernelValueWidth {
    U32,
    U64,
    Bytes(u32),
}

impl KernelValueWidth {
    pub fn u32() -> Self {
        Self::U32
    }
    pub fn u64() -> Self {
        Self::U64
    }
    pub fn bytes(n: u32) -> Self {
        Self::Bytes(n)
    }
    pub fn len(&self) -> usize {
        match self {
            Self::U32 => 4,
            Self::U64 => 8,
            Self::Bytes(n) => *n as usize,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A value read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KernelOpValue {
    U32(u32),
    U64(u64),
    Bytes(Vec<u8>),
}

/// One cold-path operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KernelOp {
    Write {
        target: KernelTarget,
        value: KernelValue,
    },
    Read {
        tag: String,
        target: KernelTarget,
        width: KernelValueWidth,
    },
}

/// The result of one operation.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct KernelOpReplyPayload {
    pub success: bool,
    /// Why it failed (the first validation layer that refused), or `ok`.
    pub reason: String,
    pub read_values: Vec<KernelOpValue>,
}

impl KernelOpReplyPayload {
    pub fn ok(values: Vec<KernelOpValue>) -> Self {
        Self {
            success: true,
            reason: "ok".into(),
            read_values: values,
        }
    }
    pub fn refused(reason: impl Into<String>) -> Self {
        Self {
            success: false,
            reason: reason.into(),
            read_values: Vec::new(),
        }
    }
}
