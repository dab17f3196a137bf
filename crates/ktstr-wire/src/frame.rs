//! Frames: `len u32 LE | crc32 u32 LE | postcard payload`, at most
//! [`MAX_FRAME`] payload bytes. Decoding never panics and never allocates
//! more than the maximum frame.

use serde::{Serialize, de::DeserializeOwned};
use std::io::{Read, Write};

/// Largest payload a frame may carry.
pub const MAX_FRAME: usize = 4 << 20;

/// A framing or decoding failure.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// Reading or writing the channel failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// End of stream at a frame boundary.
    #[error("peer closed the channel")]
    Closed,
    /// The length field exceeds [`MAX_FRAME`] (nothing was allocated).
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    /// The payload's CRC32 does not match the header's.
    #[error("frame checksum mismatch (got {got:#010x}, want {want:#010x}): corrupt channel")]
    Checksum {
        /// CRC32 computed over the payload received.
        got: u32,
        /// CRC32 the header carried.
        want: u32,
    },
    /// The payload is not a valid postcard message of the expected type.
    #[error("undecodable frame: {0}")]
    Decode(String),
    /// The input ended inside a frame.
    #[error("frame truncated: wanted {want} bytes, got {got}")]
    Truncated {
        /// Bytes the frame needs.
        want: usize,
        /// Bytes there were.
        got: usize,
    },
}

/// Encode one message into a frame.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let payload = postcard::to_allocvec(msg).map_err(|e| FrameError::Decode(e.to_string()))?;
    if payload.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(payload.len()));
    }
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Write one message as a frame.
pub fn write_msg<T: Serialize, W: Write>(w: &mut W, msg: &T) -> Result<(), FrameError> {
    let f = encode(msg)?;
    w.write_all(&f)?;
    w.flush()?;
    Ok(())
}

/// Read exactly `buf.len()` bytes; a clean EOF before the first byte is
/// [`FrameError::Closed`].
fn read_full<R: Read>(r: &mut R, buf: &mut [u8], at_start: bool) -> Result<(), FrameError> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) if got == 0 && at_start => return Err(FrameError::Closed),
            Ok(0) => {
                return Err(FrameError::Truncated {
                    want: buf.len(),
                    got,
                });
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Read one frame and decode its message.
pub fn read_msg<T: DeserializeOwned, R: Read>(r: &mut R) -> Result<T, FrameError> {
    let mut hdr = [0u8; 8];
    read_full(r, &mut hdr, true)?;
    let len = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
    let want = u32::from_le_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let mut payload = vec![0u8; len];
    read_full(r, &mut payload, false)?;
    let got = crc32fast::hash(&payload);
    if got != want {
        return Err(FrameError::Checksum { got, want });
    }
    postcard::from_bytes(&payload).map_err(|e| FrameError::Decode(e.to_string()))
}

/// Decode a message from a complete frame in memory.
pub fn decode<T: DeserializeOwned>(mut frame: &[u8]) -> Result<T, FrameError> {
    read_msg(&mut frame)
}
