//! Kernel symbols from a vmlinux `.symtab`: name to link-time address, and
//! address back to `symbol+offset` for register dumps.
#![deny(clippy::arithmetic_side_effects)]

use std::collections::HashMap;

/// One symbol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Symbol {
    pub name: String,
    /// Link-time address (before any KASLR slide).
    pub addr: u64,
    pub size: u64,
}

/// The symbol table of one kernel image.
#[derive(Debug, Default, Clone)]
pub struct Symbols {
    by_name: HashMap<String, usize>,
    /// Sorted by address; function and object symbols only.
    sorted: Vec<Symbol>,
}

impl Symbols {
    /// Build from (name, addr, size, is_global) tuples. Globals win over
    /// locals of the same name; among equals the first wins.
    pub fn from_entries(entries: impl IntoIterator<Item = (String, u64, u64, bool)>) -> Self {
        let mut sorted = Vec::new();
        let mut global: HashMap<String, bool> = HashMap::new();
        let mut by_name_addr: HashMap<String, (u64, u64)> = HashMap::new();
        for (name, addr, size, is_global) in entries {
            if name.is_empty() {
                continue;
            }
            let replace = match global.get(&name) {
                None => true,
                Some(g) => !g && is_global,
            };
            if replace {
                global.insert(name.clone(), is_global);
                by_name_addr.insert(name.clone(), (addr, size));
            }
            sorted.push(Symbol { name, addr, size });
        }
        sorted.sort_by(|a, b| a.addr.cmp(&b.addr).then(a.name.cmp(&b.name)));
        let mut by_name = HashMap::with_capacity(by_name_addr.len());
        for (i, s) in sorted.iter().enumerate() {
            if let Some(&(a, sz)) = by_name_addr.get(&s.name)
                && a == s.addr
                && sz == s.size
            {
                by_name.entry(s.name.clone()).or_insert(i);
            }
        }
        Self { by_name, sorted }
    }

    /// Parse the `.symtab` of an ELF image.
    pub fn from_elf(elf: &goblin::elf::Elf<'_>) -> Self {
        use goblin::elf::sym;
        Self::from_entries(elf.syms.iter().filter_map(|s| {
            let t = s.st_type();
            if !(t == sym::STT_FUNC || t == sym::STT_OBJECT || t == sym::STT_NOTYPE)
                || s.st_value == 0
            {
                return None;
            }
            let name = elf.strtab.get_at(s.st_name)?;
            Some((
                name.to_string(),
                s.st_value,
                s.st_size,
                s.st_bind() == sym::STB_GLOBAL,
            ))
        }))
    }

    /// Parse a `System.map` / `nm` listing (`ADDR TYPE NAME`). Sizes are
    /// unknown (0); upper-case types are global.
    pub fn from_system_map(text: &str) -> Self {
        Self::from_entries(text.lines().filter_map(|l| {
            let mut it = l.split_whitespace();
            let addr = u64::from_str_radix(it.next()?, 16).ok()?;
            let ty = it.next()?.chars().next()?;
            let name = it.next()?;
            Some((name.to_string(), addr, 0, ty.is_ascii_uppercase()))
        }))
    }

    /// Link-time address of a symbol.
    pub fn addr(&self, name: &str) -> Option<u64> {
        self.by_name.get(name).map(|&i| self.sorted[i].addr)
    }

    /// The symbol by name.
    pub fn get(&self, name: &str) -> Option<&Symbol> {
        self.by_name.get(name).map(|&i| &self.sorted[i])
    }

    /// `symbol+0xoff` for a link-time address: the nearest symbol at or
    /// below it, if the address is within its size (or within 64 KiB of a
    /// sizeless one).
    pub fn symbolize(&self, addr: u64) -> Option<(String, u64)> {
        let idx = self
            .sorted
            .partition_point(|s| s.addr <= addr)
            .checked_sub(1)?;
        let s = &self.sorted[idx];
        // partition_point guarantees s.addr <= addr.
        let off = addr.saturating_sub(s.addr);
        let within = if s.size > 0 {
            off < s.size
        } else {
            off < 0x10000
        };
        within.then(|| (s.name.clone(), off))
    }

    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globals_win_and_symbolize_finds_nearest() {
        let s = Symbols::from_entries([
            ("foo".to_string(), 0x1000, 0x10, false),
            ("foo".to_string(), 0x2000, 0x10, true),
            ("bar".to_string(), 0x3000, 0x100, true),
            ("nosize".to_string(), 0x5000, 0, true),
        ]);
        assert_eq!(s.addr("foo"), Some(0x2000));
        assert_eq!(s.symbolize(0x3010), Some(("bar".into(), 0x10)));
        assert_eq!(s.symbolize(0x3100), None);
        assert_eq!(s.symbolize(0x5004), Some(("nosize".into(), 4)));
        assert_eq!(s.symbolize(0x10), None);
        assert_eq!(s.addr("missing"), None);
    }

    #[test]
    fn system_map() {
        let s = Symbols::from_system_map(
            "ffffffff81000000 T _text\nffffffff82a079c0 D jiffies_64\ngarbage\n",
        );
        assert_eq!(s.addr("jiffies_64"), Some(0xffffffff82a079c0));
        assert_eq!(s.len(), 2);
    }
}
