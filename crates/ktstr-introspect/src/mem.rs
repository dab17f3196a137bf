//! Guest physical memory: the trait every memory source implements, typed
//! little-endian helpers on top of it, and an in-memory implementation
//! made of ranges with gaps (tests, synthetic guests).
//!
//! A read outside RAM is an error, never zeros: a walker that reads a
//! bogus pointer must learn that it did.
#![deny(clippy::arithmetic_side_effects)]

/// A physical-memory access failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemError {
    #[error("guest physical {addr:#x}+{len} is outside guest RAM")]
    Unmapped { addr: u64, len: usize },
    #[error("this memory source is read-only (write at {addr:#x})")]
    ReadOnly { addr: u64 },
    #[error("read of {len} bytes refused: larger than the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
}

/// Largest single read a helper will allocate for (strings, byte reads).
pub const MAX_READ: usize = 1 << 20;

/// Bytes at guest-physical addresses.
pub trait PhysMem {
    /// Fill `buf` from guest-physical `addr`; all or nothing.
    fn read_phys(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError>;

    /// Write `data` at guest-physical `addr`. Live VMs only; dumps refuse.
    fn write_phys(&self, addr: u64, data: &[u8]) -> Result<(), MemError> {
        let _ = data;
        Err(MemError::ReadOnly { addr })
    }

    /// RAM regions as (guest-physical start, length), sorted.
    fn regions(&self) -> Vec<(u64, u64)>;
}

/// Typed reads on any [`PhysMem`].
pub trait PhysMemExt: PhysMem {
    fn read_u8(&self, addr: u64) -> Result<u8, MemError> {
        let mut b = [0u8; 1];
        self.read_phys(addr, &mut b)?;
        Ok(b[0])
    }
    fn read_u16(&self, addr: u64) -> Result<u16, MemError> {
        let mut b = [0u8; 2];
        self.read_phys(addr, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }
    fn read_u32(&self, addr: u64) -> Result<u32, MemError> {
        let mut b = [0u8; 4];
        self.read_phys(addr, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn read_u64(&self, addr: u64) -> Result<u64, MemError> {
        let mut b = [0u8; 8];
        self.read_phys(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn read_bytes(&self, addr: u64, len: usize) -> Result<Vec<u8>, MemError> {
        if len > MAX_READ {
            return Err(MemError::TooLarge { len, max: MAX_READ });
        }
        let mut v = vec![0u8; len];
        self.read_phys(addr, &mut v)?;
        Ok(v)
    }
    /// A NUL-terminated string of at most `max` bytes (lossy UTF-8).
    fn read_cstr(&self, addr: u64, max: usize) -> Result<String, MemError> {
        let b = self.read_bytes(addr, max)?;
        let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
        Ok(String::from_utf8_lossy(&b[..end]).into_owned())
    }
    fn write_u32(&self, addr: u64, v: u32) -> Result<(), MemError> {
        self.write_phys(addr, &v.to_le_bytes())
    }
    fn write_u64(&self, addr: u64, v: u64) -> Result<(), MemError> {
        self.write_phys(addr, &v.to_le_bytes())
    }
}

impl<T: PhysMem + ?Sized> PhysMemExt for T {}

impl<T: PhysMem + ?Sized> PhysMem for &T {
    fn read_phys(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        (**self).read_phys(addr, buf)
    }
    fn write_phys(&self, addr: u64, data: &[u8]) -> Result<(), MemError> {
        (**self).write_phys(addr, data)
    }
    fn regions(&self) -> Vec<(u64, u64)> {
        (**self).regions()
    }
}

impl<T: PhysMem + ?Sized> PhysMem for std::sync::Arc<T> {
    fn read_phys(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        (**self).read_phys(addr, buf)
    }
    fn write_phys(&self, addr: u64, data: &[u8]) -> Result<(), MemError> {
        (**self).write_phys(addr, data)
    }
    fn regions(&self) -> Vec<(u64, u64)> {
        (**self).regions()
    }
}

/// Find the range holding `[addr, addr+len)` among sorted, non-overlapping
/// `(start, len)` ranges; returns (range index, offset within it).
pub fn locate(ranges: &[(u64, u64)], addr: u64, len: usize) -> Option<(usize, u64)> {
    let i = ranges.partition_point(|&(s, _)| s <= addr).checked_sub(1)?;
    let (start, rlen) = ranges[i];
    let off = addr.checked_sub(start)?;
    let end = off.checked_add(len as u64)?;
    (end <= rlen).then_some((i, off))
}

/// Guest RAM held in host memory: ranges with gaps, writable through a
/// lock (used by tests and synthetic guests).
#[derive(Debug, Default)]
pub struct SliceMem {
    ranges: Vec<(u64, u64)>,
    data: std::sync::RwLock<Vec<Vec<u8>>>,
}

impl SliceMem {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a zeroed RAM range. Panics on overlap: this is a test-construction
    /// API driven by our own code, not by guest data.
    pub fn add_range(&mut self, start: u64, len: u64) {
        let end = start
            .checked_add(len)
            .expect("range wraps the address space");
        assert!(
            self.ranges
                .iter()
                .all(|&(s, l)| end <= s || start >= s.saturating_add(l)),
            "overlapping range {start:#x}+{len:#x}"
        );
        let pos = self.ranges.partition_point(|&(s, _)| s < start);
        self.ranges.insert(pos, (start, len));
        self.data
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .insert(pos, vec![0u8; len as usize]);
    }
}

impl PhysMem for SliceMem {
    fn read_phys(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let (i, off) = locate(&self.ranges, addr, buf.len()).ok_or(MemError::Unmapped {
            addr,
            len: buf.len(),
        })?;
        let data = self.data.read().unwrap_or_else(|e| e.into_inner());
        let off = off as usize;
        // `locate` checked off + len <= the range's length.
        buf.copy_from_slice(&data[i][off..off.saturating_add(buf.len())]);
        Ok(())
    }

    fn write_phys(&self, addr: u64, src: &[u8]) -> Result<(), MemError> {
        let (i, off) = locate(&self.ranges, addr, src.len()).ok_or(MemError::Unmapped {
            addr,
            len: src.len(),
        })?;
        let mut data = self.data.write().unwrap_or_else(|e| e.into_inner());
        let off = off as usize;
        data[i][off..off.saturating_add(src.len())].copy_from_slice(src);
        Ok(())
    }

    fn regions(&self) -> Vec<(u64, u64)> {
        self.ranges.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_are_errors_not_zeros() {
        let mut m = SliceMem::new();
        m.add_range(0x1000, 0x1000);
        m.add_range(0x10_0000, 0x2000);
        m.write_u64(0x1ff8, 0xdead_beef).unwrap();
        assert_eq!(m.read_u64(0x1ff8).unwrap(), 0xdead_beef);
        assert!(matches!(m.read_u64(0x1ffc), Err(MemError::Unmapped { .. })));
        assert!(m.read_u8(0x0).is_err());
        assert!(m.read_u8(0x2000).is_err());
        assert!(m.read_u8(0x10_1fff).is_ok());
        assert!(m.read_u8(u64::MAX).is_err());
        assert!(m.read_bytes(0x1000, MAX_READ + 1).is_err());
        m.write_phys(0x10_0000, b"swapper/0\0junk").unwrap();
        assert_eq!(m.read_cstr(0x10_0000, 16).unwrap(), "swapper/0");
    }
}
