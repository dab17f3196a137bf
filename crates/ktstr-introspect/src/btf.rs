//! Struct layouts from the kernel's own BTF.
//!
//! Wraps `btf-rs` with what introspection needs: look up a struct by name,
//! resolve a dotted field path (`scx.dsq_vtime`, `se.avg.util_est`)
//! through nested structs, anonymous unions and typedefs to an offset and
//! a size, report bitfields as such, and read function prototypes.
#![deny(clippy::arithmetic_side_effects)]

use btf_rs::{Btf as RawBtf, BtfType, Type};

/// A BTF lookup failure, naming what was looked for.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("BTF parse error: {0}")]
    Parse(String),
    #[error("BTF has no struct or union `{0}`")]
    NoStruct(String),
    #[error("`{ty}` has no field `{field}`")]
    NoField { ty: String, field: String },
    #[error("BTF has no function `{0}`")]
    NoFunc(String),
    #[error("BTF type id {0} is invalid")]
    BadId(u32),
    #[error("`{0}` is not a struct or union, cannot take a field of it")]
    NotComposite(String),
    #[error("BTF type chain too deep at id {0} (cycle?)")]
    TooDeep(u32),
}

type Result<T> = std::result::Result<T, BtfError>;

/// Where a field lives in its outermost struct.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldInfo {
    /// Byte offset from the start of the outermost struct.
    pub offset: u64,
    /// Size in bytes of the field's type (for a bitfield: of its storage
    /// unit as declared).
    pub size: u64,
    /// `Some((bit_offset_within_byte_offset, bits))` for bitfields.
    pub bitfield: Option<(u32, u32)>,
    /// BTF id of the field's type (typedefs and qualifiers not stripped).
    pub type_id: u32,
}

/// How deep a typedef/qualifier chain may go before we call it a cycle.
const MAX_CHAIN: usize = 32;

/// Upper bound on type ids scanned linearly (vmlinux has ~150k).
const MAX_TYPES: u32 = 4_000_000;

/// Parsed BTF of one kernel.
pub struct Btf {
    raw: RawBtf,
}

impl std::fmt::Debug for Btf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Btf { .. }")
    }
}

impl Btf {
    /// Parse raw BTF bytes (a `.BTF` section or `/sys/kernel/btf/vmlinux`).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        // btf-rs parses eagerly; guard it against panics on hostile input.
        let raw = std::panic::catch_unwind(|| RawBtf::from_bytes(bytes))
            .map_err(|_| BtfError::Parse("parser panicked on malformed BTF".into()))?
            .map_err(|e| BtfError::Parse(e.to_string()))?;
        Ok(Self { raw })
    }

    fn ty(&self, id: u32) -> Result<Type> {
        self.raw
            .resolve_type_by_id(id)
            .map_err(|_| BtfError::BadId(id))
    }

    fn name_of(&self, t: &dyn BtfType) -> String {
        self.raw.resolve_name(t).unwrap_or_default()
    }

    /// Strip typedefs and cv-qualifiers.
    pub(crate) fn strip(&self, mut id: u32) -> Result<(u32, Type)> {
        for _ in 0..MAX_CHAIN {
            let t = self.ty(id)?;
            match &t {
                Type::Typedef(x) => id = x.get_type_id().ok_or(BtfError::BadId(id))?,
                Type::Volatile(x) => id = x.get_type_id().ok_or(BtfError::BadId(id))?,
                Type::Const(x) => id = x.get_type_id().ok_or(BtfError::BadId(id))?,
                Type::Restrict(x) => id = x.get_type_id().ok_or(BtfError::BadId(id))?,
                Type::TypeTag(x) => id = x.get_type_id().ok_or(BtfError::BadId(id))?,
                _ => return Ok((id, t)),
            }
        }
        Err(BtfError::TooDeep(id))
    }

    /// Size in bytes of a type (0 for void and functions).
    pub fn size_of(&self, id: u32) -> Result<u64> {
        let (id, t) = self.strip(id)?;
        Ok(match t {
            Type::Int(x) => x.size() as u64,
            Type::Ptr(_) => 8,
            Type::Array(a) => {
                let elem = a.get_type_id().ok_or(BtfError::BadId(id))?;
                self.size_of(elem)?.saturating_mul(a.len() as u64)
            }
            Type::Struct(s) | Type::Union(s) => s.size() as u64,
            Type::Enum(e) => e.size() as u64,
            Type::Enum64(e) => e.size() as u64,
            Type::Float(f) => f.size() as u64,
            _ => 0,
        })
    }

    /// The id of a struct (or union) by name; the first complete one.
    pub fn struct_id(&self, name: &str) -> Result<u32> {
        let ids = self
            .raw
            .resolve_ids_by_name(name)
            .map_err(|e| BtfError::Parse(e.to_string()))?;
        for id in ids {
            if let Ok(Type::Struct(_) | Type::Union(_)) = self.ty(id) {
                return Ok(id);
            }
        }
        Err(BtfError::NoStruct(name.to_string()))
    }

    /// Size of a named struct.
    pub fn struct_size(&self, name: &str) -> Result<u64> {
        self.size_of(self.struct_id(name)?)
    }

    /// Find a direct member by name in composite `id`, descending into
    /// anonymous struct/union members. Returns (bit offset, bitfield size,
    /// member type id).
    fn member(&self, id: u32, name: &str, depth: usize) -> Result<Option<(u64, Option<u32>, u32)>> {
        if depth > MAX_CHAIN {
            return Err(BtfError::TooDeep(id));
        }
        let (_, t) = self.strip(id)?;
        let s = match t {
            Type::Struct(s) | Type::Union(s) => s,
            _ => return Ok(None),
        };
        for m in &s.members {
            let mname = self.name_of(m);
            let mty = m.get_type_id().ok_or(BtfError::BadId(id))?;
            if mname == name {
                return Ok(Some((m.bit_offset() as u64, m.bitfield_size(), mty)));
            }
            if mname.is_empty()
                && let Some((off, bf, tid)) = self.member(mty, name, depth.saturating_add(1))?
            {
                return Ok(Some(((m.bit_offset() as u64).saturating_add(off), bf, tid)));
            }
        }
        Ok(None)
    }

    /// Resolve a dotted field path in a named struct.
    pub fn field(&self, struct_name: &str, path: &str) -> Result<FieldInfo> {
        let id = self.struct_id(struct_name)?;
        self.field_in(id, struct_name, path)
    }

    /// Resolve a dotted field path in the composite type `id`.
    pub fn field_in(&self, id: u32, what: &str, path: &str) -> Result<FieldInfo> {
        let mut cur = id;
        let mut bits: u64 = 0;
        let mut last = None;
        let mut walked = what.to_string();
        for part in path.split('.') {
            let (sid, t) = self.strip(cur)?;
            if !matches!(t, Type::Struct(_) | Type::Union(_)) {
                return Err(BtfError::NotComposite(walked));
            }
            let (off, bf, tid) = self
                .member(sid, part, 0)?
                .ok_or_else(|| BtfError::NoField {
                    ty: walked.clone(),
                    field: part.to_string(),
                })?;
            bits = bits.saturating_add(off);
            last = Some((bf, tid));
            cur = tid;
            walked = format!("{walked}.{part}");
        }
        let (bf, tid) = last.ok_or_else(|| BtfError::NoField {
            ty: what.to_string(),
            field: path.to_string(),
        })?;
        let size = self.size_of(tid)?;
        Ok(match bf {
            Some(nbits) if nbits > 0 => FieldInfo {
                offset: bits / 8,
                size,
                bitfield: Some(((bits % 8) as u32, nbits)),
                type_id: tid,
            },
            _ => FieldInfo {
                offset: bits / 8,
                size,
                bitfield: None,
                type_id: tid,
            },
        })
    }

    /// The type id of a global variable's BTF VAR (vmlinux BTF carries
    /// VARs for per-CPU variables), with typedefs stripped.
    pub fn var_type(&self, name: &str) -> Option<u32> {
        let ids = self.raw.resolve_ids_by_name(name).ok()?;
        for id in ids {
            if let Ok(Type::Var(v)) = self.ty(id) {
                let t = v.get_type_id()?;
                return self.strip(t).ok().map(|(id, _)| id);
            }
        }
        None
    }

    /// Name of a struct/union type id.
    pub fn composite_name(&self, id: u32) -> Option<String> {
        match self.strip(id).ok()?.1 {
            Type::Struct(s) | Type::Union(s) => Some(self.name_of(&s)),
            _ => None,
        }
    }

    /// Does the named struct have this field path?
    pub fn has_field(&self, struct_name: &str, path: &str) -> bool {
        self.field(struct_name, path).is_ok()
    }

    /// A C-ish spelling of a type, for messages and prototypes.
    pub fn type_name(&self, id: u32) -> String {
        self.type_name_depth(id, 0)
    }

    fn type_name_depth(&self, id: u32, depth: usize) -> String {
        if depth > MAX_CHAIN {
            return "?".into();
        }
        let Ok(t) = self.ty(id) else {
            return "?".into();
        };
        let inner = |x: &dyn BtfType| {
            x.get_type_id()
                .map(|i| self.type_name_depth(i, depth.saturating_add(1)))
                .unwrap_or_else(|| "void".into())
        };
        match &t {
            Type::Void => "void".into(),
            Type::Ptr(p) => format!("{} *", inner(p)),
            Type::Const(c) => format!("const {}", inner(c)),
            Type::Volatile(v) => format!("volatile {}", inner(v)),
            Type::Struct(s) => format!("struct {}", self.name_of(s)),
            Type::Union(s) => format!("union {}", self.name_of(s)),
            Type::Enum(e) => format!("enum {}", self.name_of(e)),
            Type::Array(a) => format!("{}[{}]", inner(a), a.len()),
            other => match other.as_btf_type() {
                Some(b) => self.name_of(b),
                None => "?".into(),
            },
        }
    }

    /// Parameter types of a function, spelled as C types.
    pub fn func_params(&self, name: &str) -> Result<Vec<String>> {
        let ids = self
            .raw
            .resolve_ids_by_name(name)
            .map_err(|e| BtfError::Parse(e.to_string()))?;
        for id in ids {
            if let Ok(Type::Func(f)) = self.ty(id) {
                let proto_id = f.get_type_id().ok_or(BtfError::BadId(id))?;
                if let Type::FuncProto(p) = self.ty(proto_id)? {
                    return Ok(p
                        .parameters
                        .iter()
                        .map(|prm| {
                            prm.get_type_id()
                                .map(|t| self.type_name(t))
                                .unwrap_or_else(|| "...".into())
                        })
                        .collect());
                }
            }
        }
        Err(BtfError::NoFunc(name.to_string()))
    }

    /// Enumerators of a named enum, as (name, value).
    pub fn enum_variants(&self, enum_name: &str) -> Vec<(String, i64)> {
        let Ok(ids) = self.raw.resolve_ids_by_name(enum_name) else {
            return Vec::new();
        };
        for id in ids {
            match self.ty(id) {
                Ok(Type::Enum(e)) => {
                    return e
                        .members
                        .iter()
                        .map(|m| {
                            let v = if e.is_signed() {
                                m.val() as i32 as i64
                            } else {
                                m.val() as i64
                            };
                            (self.name_of(m), v)
                        })
                        .collect();
                }
                Ok(Type::Enum64(e)) => {
                    return e
                        .members
                        .iter()
                        .map(|m| (self.name_of(m), m.val() as i64))
                        .collect();
                }
                _ => {}
            }
        }
        Vec::new()
    }

    /// Value of an enumerator by name (`SCX_EXIT_ERROR`).
    pub fn enum_value(&self, enumerator: &str) -> Option<i64> {
        // Enumerator names are not indexed by btf-rs; scan the enums.
        // Type ids are dense from 1; stop at the first invalid one.
        for id in 1..=MAX_TYPES {
            let Ok(t) = self.raw.resolve_type_by_id(id) else {
                break;
            };
            match &t {
                Type::Enum(e) => {
                    for m in &e.members {
                        if self.raw.resolve_name(m).is_ok_and(|n| n == enumerator) {
                            return Some(if e.is_signed() {
                                m.val() as i32 as i64
                            } else {
                                m.val() as i64
                            });
                        }
                    }
                }
                Type::Enum64(e) => {
                    for m in &e.members {
                        if self.raw.resolve_name(m).is_ok_and(|n| n == enumerator) {
                            return Some(m.val() as i64);
                        }
                    }
                }
                _ => {}
            }
        }
        None
    }
}
