//! The vmlinux ELF inside a bzImage.
//!
//! A distribution ships only the compressed image (`vmlinuz`); its
//! `System.map` is a stub and the real `vmlinux` sits in a debug package
//! hundreds of MB large. The image is enough for types: x86's boot
//! protocol (>= 2.08) records where the compressed payload lies
//! (`payload_offset`/`payload_length` in the setup header), the payload
//! decompresses to the kernel ELF stripped of symbols (`objcopy -S`), and
//! `.BTF` is an allocated section, so it survives. Symbols come from the
//! running kernel instead (see `kallsyms` capture in the CLI).
//!
//! Every field is read from an untrusted file: offsets are checked, the
//! output is bounded, and unknown compressions are named.
#![deny(clippy::arithmetic_side_effects)]

use std::io::Read;

/// The largest decompressed kernel accepted (distribution kernels are
/// 50-70 MB; this leaves room for debug builds without allowing a
/// decompression bomb to exhaust memory).
pub const MAX_VMLINUX: u64 = 1 << 30;

/// Why no ELF came out of an image.
#[derive(Debug, thiserror::Error)]
pub enum BzImageError {
    #[error("not a bzImage: {0}")]
    Header(String),
    #[error("the kernel payload is {0}-compressed; ktstr reads zstd, xz and gzip payloads")]
    Unsupported(&'static str),
    #[error("the payload does not start with a known compression magic")]
    UnknownCompression,
    #[error("decompressing the {format} payload: {detail}")]
    Decompress {
        format: &'static str,
        detail: String,
    },
    #[error("the decompressed payload is larger than {MAX_VMLINUX} bytes")]
    TooLarge,
    #[error("the decompressed payload is not an ELF file")]
    NotElf,
}

/// The compression of a bzImage payload, from its magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Zstd,
    Xz,
    Gzip,
    Lzma,
    Bzip2,
    Lz4,
    Lzo,
}

impl Compression {
    /// Recognise a payload by its first bytes.
    pub fn detect(payload: &[u8]) -> Option<Self> {
        let starts = |m: &[u8]| payload.starts_with(m);
        Some(if starts(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Self::Zstd
        } else if starts(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            Self::Xz
        } else if starts(&[0x1f, 0x8b]) {
            Self::Gzip
        } else if starts(&[0x5d, 0, 0]) {
            Self::Lzma
        } else if starts(b"BZh") {
            Self::Bzip2
        } else if starts(&[0x02, 0x21, 0x4c, 0x18]) {
            Self::Lz4
        } else if starts(&[0x89, b'L', b'Z', b'O']) {
            Self::Lzo
        } else {
            return None;
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Zstd => "zstd",
            Self::Xz => "xz",
            Self::Gzip => "gzip",
            Self::Lzma => "lzma",
            Self::Bzip2 => "bzip2",
            Self::Lz4 => "lz4",
            Self::Lzo => "lzo",
        }
    }
}

fn le32(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// The compressed payload of a bzImage, located through its setup header.
pub fn payload(image: &[u8]) -> Result<&[u8], BzImageError> {
    let hdr = |m: &str| BzImageError::Header(m.to_string());
    if image.get(0x202..0x206) != Some(b"HdrS") {
        return Err(hdr("no HdrS boot-protocol magic at 0x202"));
    }
    let version = image
        .get(0x206..0x208)
        .map(|v| u16::from_le_bytes([v[0], v[1]]))
        .ok_or_else(|| hdr("truncated setup header"))?;
    if version < 0x0208 {
        return Err(BzImageError::Header(format!(
            "boot protocol {}.{:02} predates payload_offset (2.08)",
            version >> 8,
            version & 0xff
        )));
    }
    let setup_sects = match image.get(0x1f1).copied() {
        Some(0) => 4,
        Some(n) => u32::from(n),
        None => return Err(hdr("truncated setup header")),
    };
    let offset = le32(image, 0x248).ok_or_else(|| hdr("truncated setup header"))?;
    let length = le32(image, 0x24c).ok_or_else(|| hdr("truncated setup header"))?;
    let start = setup_sects
        .checked_add(1)
        .and_then(|s| s.checked_mul(512))
        .and_then(|s| s.checked_add(offset))
        .ok_or_else(|| hdr("payload offset overflows"))? as usize;
    let end = start
        .checked_add(length as usize)
        .ok_or_else(|| hdr("payload length overflows"))?;
    image.get(start..end).ok_or_else(|| {
        BzImageError::Header(format!(
            "payload {start:#x}..{end:#x} lies past the end of the {}-byte file",
            image.len()
        ))
    })
}

/// Read `r` to its end, at most [`MAX_VMLINUX`] bytes.
fn read_bounded(r: impl Read, format: &'static str) -> Result<Vec<u8>, BzImageError> {
    let mut out = Vec::new();
    let limit = MAX_VMLINUX.saturating_add(1);
    r.take(limit)
        .read_to_end(&mut out)
        .map_err(|e| BzImageError::Decompress {
            format,
            detail: e.to_string(),
        })?;
    if out.len() as u64 > MAX_VMLINUX {
        return Err(BzImageError::TooLarge);
    }
    Ok(out)
}

/// Decompress a payload. The kernel's decompressors stop at the end of
/// the first stream; the 4-byte size trailer that follows is ignored.
pub fn decompress(payload: &[u8]) -> Result<Vec<u8>, BzImageError> {
    let c = Compression::detect(payload).ok_or(BzImageError::UnknownCompression)?;
    let fail = |detail: String| BzImageError::Decompress {
        format: c.name(),
        detail,
    };
    match c {
        Compression::Zstd => {
            let mut src = payload;
            let dec = ruzstd::decoding::StreamingDecoder::new(&mut src)
                .map_err(|e| fail(e.to_string()))?;
            read_bounded(dec, c.name())
        }
        Compression::Gzip => read_bounded(flate2::read::GzDecoder::new(payload), c.name()),
        Compression::Xz => {
            // lzma-rs writes into a sink; bound it the same way.
            let mut sink = BoundedSink(Vec::new());
            let mut src = payload;
            match lzma_rs::xz_decompress(&mut src, &mut sink) {
                Ok(()) => Ok(sink.0),
                Err(_) if sink.0.len() as u64 >= MAX_VMLINUX => Err(BzImageError::TooLarge),
                // The kernel appends the size trailer after the xz stream;
                // lzma-rs reports that as trailing garbage once the stream
                // is complete. Accept what decoded if it is an ELF.
                Err(e) if sink.0.starts_with(b"\x7fELF") => {
                    tracing::debug!("xz payload: {e:?} after a complete stream");
                    Ok(sink.0)
                }
                Err(e) => Err(fail(format!("{e:?}"))),
            }
        }
        other => Err(BzImageError::Unsupported(other.name())),
    }
}

/// A Vec that refuses to grow past [`MAX_VMLINUX`].
struct BoundedSink(Vec<u8>);

impl std::io::Write for BoundedSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = (MAX_VMLINUX as usize).saturating_sub(self.0.len());
        if room == 0 {
            return Err(std::io::Error::other("decompressed kernel too large"));
        }
        let n = buf.len().min(room);
        self.0.extend_from_slice(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The (symbol-less) vmlinux ELF inside a bzImage.
pub fn extract_vmlinux(image: &[u8]) -> Result<Vec<u8>, BzImageError> {
    let elf = decompress(payload(image)?)?;
    if !elf.starts_with(b"\x7fELF") {
        return Err(BzImageError::NotElf);
    }
    Ok(elf)
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)]
mod tests {
    use super::*;

    /// A minimal image: setup header fields and a payload after
    /// `(setup_sects + 1) * 512` bytes.
    fn image(payload: &[u8], setup_sects: u8) -> Vec<u8> {
        let base = (usize::from(setup_sects.max(1)) + 1) * 512;
        let mut img = vec![0u8; base];
        img[0x1f1] = setup_sects;
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        img[0x248..0x24c].copy_from_slice(&16u32.to_le_bytes());
        img[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        img.extend_from_slice(&[0u8; 16]);
        img.extend_from_slice(payload);
        img.extend_from_slice(&[0xaa; 8]);
        img
    }

    #[test]
    fn gzip_payload_round_trips() {
        use std::io::Write;
        let elf = b"\x7fELF\x02\x01\x01 kernel bytes".repeat(100);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&elf).unwrap();
        let mut pl = gz.finish().unwrap();
        pl.extend_from_slice(&(elf.len() as u32).to_le_bytes());
        assert_eq!(extract_vmlinux(&image(&pl, 3)).unwrap(), elf);
    }

    #[test]
    fn hostile_headers_are_errors() {
        assert!(matches!(payload(&[0u8; 16]), Err(BzImageError::Header(_))));
        let mut img = image(b"\x28\xb5\x2f\xfd", 2);
        img[0x24c..0x250].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(payload(&img), Err(BzImageError::Header(_))));
        let img = image(b"BZh91AY", 1);
        assert!(matches!(
            extract_vmlinux(&img),
            Err(BzImageError::Unsupported("bzip2"))
        ));
        let img = image(b"plain", 1);
        assert!(matches!(
            extract_vmlinux(&img),
            Err(BzImageError::UnknownCompression)
        ));
        let img = image(&[0x28, 0xb5, 0x2f, 0xfd, 0xff, 0xff], 1);
        assert!(extract_vmlinux(&img).is_err());
    }

    #[test]
    fn old_boot_protocol_is_named() {
        let mut img = image(b"x", 1);
        img[0x206..0x208].copy_from_slice(&0x0206u16.to_le_bytes());
        let e = payload(&img).unwrap_err().to_string();
        assert!(e.contains("2.06"), "{e}");
    }

    /// A real distribution image, when one is present: its payload is an
    /// ELF with a `.BTF` section.
    #[test]
    fn shared_kernel_image_holds_btf() {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/kernels/7.2/bzImage");
        let Ok(img) = std::fs::read(&p) else {
            eprintln!("skipped: {} absent", p.display());
            return;
        };
        let elf = extract_vmlinux(&img).expect("the shared 7.2 bzImage decompresses");
        let e = goblin::elf::Elf::parse(&elf).expect("ELF parses");
        assert!(
            e.section_headers
                .iter()
                .any(|s| e.shdr_strtab.get_at(s.sh_name) == Some(".BTF")),
            "no .BTF section in the decompressed payload"
        );
    }
}
