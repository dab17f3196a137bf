//! The guest console captured into a bounded ring (the tail is what a
//! failure report shows), optionally streamed line by line to a sink.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};

/// Default ring size: the last 256 KiB of console output.
pub const DEFAULT_RING_BYTES: usize = 256 * 1024;

/// A line sink (a callback), e.g. to echo the console with a prefix.
pub type ConsoleSink = Arc<dyn Fn(&str) + Send + Sync>;

#[derive(Default)]
struct Inner {
    ring: VecDeque<u8>,
    cap: usize,
    total: u64,
    partial: Vec<u8>,
    closed: bool,
}

/// A bounded console ring shared between the reader thread and users.
#[derive(Clone)]
pub struct Console {
    inner: Arc<(Mutex<Inner>, Condvar)>,
    sink: Option<ConsoleSink>,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("total", &self.total_bytes())
            .finish()
    }
}

impl Console {
    pub fn new(cap: usize, sink: Option<ConsoleSink>) -> Self {
        Self {
            inner: Arc::new((
                Mutex::new(Inner {
                    cap: cap.max(1),
                    ..Default::default()
                }),
                Condvar::new(),
            )),
            sink,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Append bytes from the guest.
    pub fn push(&self, data: &[u8]) {
        let mut lines = Vec::new();
        {
            let mut g = self.lock();
            g.total += data.len() as u64;
            for &b in data {
                if g.ring.len() == g.cap {
                    g.ring.pop_front();
                }
                g.ring.push_back(b);
            }
            if self.sink.is_some() {
                for &b in data {
                    if b == b'\n' {
                        let l = std::mem::take(&mut g.partial);
                        lines.push(
                            String::from_utf8_lossy(&l)
                                .trim_end_matches('\r')
                                .to_string(),
                        );
                    } else if g.partial.len() < 4096 {
                        g.partial.push(b);
                    }
                }
            }
        }
        self.inner.1.notify_all();
        if let Some(s) = &self.sink {
            for l in lines {
                s(&l);
            }
        }
    }

    /// Mark the stream ended (the guest is gone).
    pub fn close(&self) {
        self.lock().closed = true;
        self.inner.1.notify_all();
    }

    /// Everything still in the ring.
    pub fn contents(&self) -> String {
        let g = self.lock();
        let (a, b) = g.ring.as_slices();
        let mut v = a.to_vec();
        v.extend_from_slice(b);
        String::from_utf8_lossy(&v).into_owned()
    }

    /// The last `n` lines.
    pub fn tail(&self, n: usize) -> String {
        let c = self.contents();
        let lines: Vec<&str> = c.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    pub fn total_bytes(&self) -> u64 {
        self.lock().total
    }

    /// Wait until the console contains `needle` (searching the ring) or
    /// the timeout passes or the stream closes; true if found.
    pub fn wait_for(&self, needle: &str, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let mut g = self.lock();
        loop {
            {
                let (a, b) = g.ring.as_slices();
                let mut v = a.to_vec();
                v.extend_from_slice(b);
                if String::from_utf8_lossy(&v).contains(needle) {
                    return true;
                }
            }
            let now = std::time::Instant::now();
            if g.closed || now >= deadline {
                return false;
            }
            g = self
                .inner
                .1
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_the_tail_and_sink_sees_lines() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let c = Console::new(
            16,
            Some(Arc::new(move |l: &str| {
                s2.lock().unwrap().push(l.to_string())
            })),
        );
        c.push(b"hello\r\nworld\nthis is long");
        assert_eq!(c.total_bytes(), 25);
        assert_eq!(c.contents(), "rld\nthis is long");
        assert_eq!(*seen.lock().unwrap(), vec!["hello", "world"]);
        assert_eq!(c.tail(1), "this is long");
        assert!(c.wait_for("long", std::time::Duration::from_millis(1)));
        c.close();
        assert!(!c.wait_for("absent", std::time::Duration::from_secs(5)));
    }
}
