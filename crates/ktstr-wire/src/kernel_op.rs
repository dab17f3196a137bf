//! Cold-path kernel operations: the guest asks the host to freeze the VM
//! and read or write a kernel value, named by a [`KernelTarget`]. These
//! types travel on the wire, so they live here; the host validates and
//! performs them with ktstr-introspect.

use serde::{Deserialize, Serialize};

/// What to read or write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KernelTarget {
    /// A global by symbol name (e.g. `jiffies_64`).
    Symbol {
        /// The symbol, as in System.map.
        name: String,
    },
    /// A field of a per-CPU struct variable on one CPU (e.g.
    /// `runqueues` / `nr_running` on CPU 0).
    PerCpuField {
        /// The per-CPU variable's symbol (e.g. `runqueues`).
        symbol: String,
        /// Field path inside it (e.g. `scx.nr_running`).
        field: String,
        /// Which CPU's copy.
        cpu: u32,
    },
    /// A field path of one task's `task_struct` (e.g. `scx.dsq_vtime`),
    /// identified by pid and `start_time` (ns since boot) so a recycled
    /// pid is never written.
    TaskField {
        /// The task's pid (root pid namespace).
        pid: u32,
        /// Its `start_time` in ns since boot; a mismatch refuses the op.
        start_time_ns: u64,
        /// Field path inside `task_struct`.
        field_path: String,
    },
    /// A raw kernel virtual address.
    Kva {
        /// The address (checked against the kernel's mapped ranges).
        addr: u64,
    },
}

impl KernelTarget {
    /// A global by symbol name.
    pub fn symbol(name: &str) -> Self {
        Self::Symbol { name: name.into() }
    }
    /// A field of a per-CPU variable on one CPU.
    pub fn per_cpu_field(symbol: &str, field: &str, cpu: u32) -> Self {
        Self::PerCpuField {
            symbol: symbol.into(),
            field: field.into(),
            cpu,
        }
    }
    /// A field of one task, identified by pid and start time.
    pub fn task_field(pid: u32, start_time_ns: u64, field_path: &str) -> Self {
        Self::TaskField {
            pid,
            start_time_ns,
            field_path: field_path.into(),
        }
    }
    /// A raw kernel virtual address.
    pub fn kva(addr: u64) -> Self {
        Self::Kva { addr }
    }
}

/// A value to write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KernelValue {
    /// A 32-bit value, little-endian in memory.
    U32(u32),
    /// A 64-bit value, little-endian in memory.
    U64(u64),
    /// Raw bytes, written as they are.
    Bytes(Vec<u8>),
}

impl KernelValue {
    /// A 32-bit value.
    pub fn u32(v: u32) -> Self {
        Self::U32(v)
    }
    /// A 64-bit value.
    pub fn u64(v: u64) -> Self {
        Self::U64(v)
    }
    /// Raw bytes.
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
    /// No bytes at all (an empty `Bytes`).
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
    /// Read 4 bytes as a `u32`.
    U32,
    /// Read 8 bytes as a `u64`.
    U64,
    /// Read this many raw bytes.
    Bytes(u32),
}

impl KernelValueWidth {
    /// 4 bytes as a `u32`.
    pub fn u32() -> Self {
        Self::U32
    }
    /// 8 bytes as a `u64`.
    pub fn u64() -> Self {
        Self::U64
    }
    /// `n` raw bytes.
    pub fn bytes(n: u32) -> Self {
        Self::Bytes(n)
    }
    /// Width in bytes.
    pub fn len(&self) -> usize {
        match self {
            Self::U32 => 4,
            Self::U64 => 8,
            Self::Bytes(n) => *n as usize,
        }
    }
    /// A zero-byte read.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A value read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KernelOpValue {
    /// A 32-bit value read.
    U32(u32),
    /// A 64-bit value read.
    U64(u64),
    /// Raw bytes read.
    Bytes(Vec<u8>),
}

/// One cold-path operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KernelOp {
    /// Write `value` at `target`.
    Write {
        /// Where to write.
        target: KernelTarget,
        /// What to write (its width is the write's width).
        value: KernelValue,
    },
    /// Read `width` bytes at `target`.
    Read {
        /// A name the caller picks to find the value in the reply.
        tag: String,
        /// Where to read.
        target: KernelTarget,
        /// How much to read, and as what.
        width: KernelValueWidth,
    },
}

/// The result of one operation.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct KernelOpReplyPayload {
    /// Did the host perform it?
    pub success: bool,
    /// Why it failed (the first validation layer that refused), or `ok`.
    pub reason: String,
    /// The values read (one per `Read`).
    pub read_values: Vec<KernelOpValue>,
}

impl KernelOpReplyPayload {
    /// Performed, with the values read.
    pub fn ok(values: Vec<KernelOpValue>) -> Self {
        Self {
            success: true,
            reason: "ok".into(),
            read_values: values,
        }
    }
    /// Refused, with the reason.
    pub fn refused(reason: impl Into<String>) -> Self {
        Self {
            success: false,
            reason: reason.into(),
            read_values: Vec::new(),
        }
    }
}
