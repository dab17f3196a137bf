//! Walkers over kernel linked structures, best effort and panic-free on
//! guest data: every pointer may be corrupt or mid-update.
//!
//! - [`list_entries`]: a `list_head` ring → the addresses of the
//!   containing objects (container_of by field offset), with a visited set
//!   and a hard cap against cycles, `truncated` when the cap fires and
//!   `broken` when a pointer does not translate.
//! - [`rhashtable_entries`]: an rhashtable's objects, bucket lock bits
//!   stripped, nulls markers (odd pointers) ending chains, caps on
//!   buckets, total nodes and per-bucket chain length.

use crate::kernel::Kernel;
use crate::mem::PhysMem;
use crate::offsets::RhtOffsets;
use std::collections::HashSet;

/// Most nodes one list walk visits.
pub const MAX_NODES_PER_LIST: usize = 4096;
/// Most nodes one rhashtable walk visits.
pub const MAX_RHT_NODES: usize = 8192;
/// Most buckets one rhashtable walk scans.
pub const MAX_RHT_BUCKETS: u64 = 65_536;
/// Longest chain followed within one bucket.
pub const PER_BUCKET_CHAIN_CAP: usize = 1024;

/// What a walk found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Walk {
    /// Addresses of the containing objects, in list order.
    pub items: Vec<u64>,
    /// A cap fired (or a cycle that does not close through the head).
    pub truncated: bool,
    /// A pointer did not translate or read; `items` is a prefix.
    pub broken: bool,
}

/// Walk the `list_head` at `head` (a runtime KVA); each entry's object is
/// `node - node_off`. `skip(node_kva)` may drop entries (e.g. iterator
/// cursors) without ending the walk.
pub fn list_entries<M: PhysMem>(
    k: &Kernel<M>,
    head: u64,
    node_off: u64,
    cap: usize,
    mut skip: impl FnMut(u64) -> bool,
) -> Walk {
    let mut w = Walk::default();
    let mut seen = HashSet::new();
    let mut cur = match k.read_u64(head) {
        Ok(n) => n,
        Err(_) => {
            w.broken = true;
            return w;
        }
    };
    let mut steps = 0usize;
    while cur != head {
        if cur == 0 || !seen.insert(cur) {
            // NULL next or a ring that never returns to the head.
            w.truncated = cur != 0;
            w.broken |= cur == 0;
            break;
        }
        if steps >= cap {
            w.truncated = true;
            break;
        }
        steps += 1;
        // Only a node we can read is an entry: a pointer into unmapped
        // memory ends the walk as broken, with what came before it.
        let next = match k.read_u64(cur) {
            Ok(n) => n,
            Err(_) => {
                w.broken = true;
                break;
            }
        };
        if !skip(cur) {
            w.items.push(cur.wrapping_sub(node_off));
        }
        cur = next;
    }
    w
}

/// Is a `list_head` empty (its `next` points at itself)?
pub fn list_empty<M: PhysMem>(k: &Kernel<M>, head: u64) -> Option<bool> {
    k.read_u64(head).ok().map(|n| n == head)
}

/// Walk the rhashtable embedded at `ht` (a runtime KVA). Objects are
/// `rhash_head - head_off`.
pub fn rhashtable_entries<M: PhysMem>(
    k: &Kernel<M>,
    ht: u64,
    o: &RhtOffsets,
    head_off: u64,
) -> Walk {
    let mut w = Walk::default();
    let Ok(tbl) = k.read_u64(ht + o.tbl) else {
        w.broken = true;
        return w;
    };
    if tbl == 0 {
        return w;
    }
    let Ok(size) = k.read_uint(tbl + o.size.off, o.size.size) else {
        w.broken = true;
        return w;
    };
    let nbuckets = if size > MAX_RHT_BUCKETS {
        w.truncated = true;
        MAX_RHT_BUCKETS
    } else {
        size
    };
    let mut seen = HashSet::new();
    for b in 0..nbuckets {
        let Ok(raw) = k.read_u64(tbl + o.buckets + b * 8) else {
            w.broken = true;
            return w;
        };
        // Bit 0 of a bucket pointer is its bit-spinlock.
        let mut p = raw & !1;
        let mut chain = 0usize;
        // A nulls marker (odd value) or NULL ends the chain.
        while p != 0 && p & 1 == 0 {
            if chain >= PER_BUCKET_CHAIN_CAP || w.items.len() >= MAX_RHT_NODES || !seen.insert(p) {
                w.truncated = true;
                break;
            }
            chain += 1;
            let next = match k.read_u64(p + o.next) {
                Ok(n) => n,
                Err(_) => {
                    w.broken = true;
                    break;
                }
            };
            w.items.push(p.wrapping_sub(head_off));
            p = next;
        }
        if w.items.len() >= MAX_RHT_NODES {
            w.truncated = true;
            break;
        }
    }
    w
}
