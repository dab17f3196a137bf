//! Walkers over kernel linked structures, best effort and panic-free on
//! guest data: every pointer may be corrupt or mid-update, and every
//! address computed from one is checked (no wrapping, no overflow).
//!
//! - [`list_entries`]: a `list_head` ring → the addresses of the
//!   containing objects (container_of by field offset), with a visited set
//!   and a hard cap against cycles, `truncated` when the cap fires and
//!   `broken` when a pointer does not translate.
//! - [`rhashtable_entries`]: an rhashtable's objects, bucket lock bits
//!   stripped, nulls markers (odd pointers) ending chains, caps on
//!   buckets, total nodes and per-bucket chain length.
#![deny(clippy::arithmetic_side_effects)]

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
    /// A pointer did not translate or read, or a link was inconsistent
    /// (`next->prev != node`); `items` holds what could be trusted.
    pub broken: bool,
    /// Why the walk is broken or truncated, when it is.
    pub reason: Option<String>,
    /// Entries recovered by walking backwards from the head after the
    /// forward walk broke.
    pub recovered: usize,
}

impl Walk {
    fn fail(&mut self, reason: String) {
        self.broken = true;
        self.reason.get_or_insert(reason);
    }
}

/// `base + off`, or None where a guest pointer would overflow.
pub fn field_addr(base: u64, off: u64) -> Option<u64> {
    base.checked_add(off)
}

/// `container_of`: the object holding the node at `node`.
fn container(node: u64, node_off: u64) -> Option<u64> {
    node.checked_sub(node_off)
}

/// One direction of a `list_head` walk from `start` (the head's next or
/// prev), checking that each node links back to the one before it.
struct Step {
    /// The node that must be the back link of the next node visited.
    expect_back: u64,
    cur: u64,
}

/// Walk the `list_head` at `head` (a runtime KVA); each entry's object is
/// `node - node_off`. `skip(node_kva)` may drop entries (e.g. iterator
/// cursors) without ending the walk. Each step checks the kernel's list
/// invariant (`node->next->prev == node`); where the forward walk breaks,
/// the rest is recovered walking backwards from `head->prev`, so one bad
/// pointer loses one node, not the list.
pub fn list_entries<M: PhysMem>(
    k: &Kernel<M>,
    head: u64,
    node_off: u64,
    cap: usize,
    mut skip: impl FnMut(u64) -> bool,
) -> Walk {
    let mut w = Walk::default();
    let mut seen = HashSet::new();
    let (Some(next_of_head), Some(prev_field)) = (k.read_u64(head).ok(), field_addr(head, 8))
    else {
        w.fail(format!("list head {head:#x} unreadable"));
        return w;
    };
    let prev_of_head = k.read_u64(prev_field).ok();
    // Forward: next pointers, each node's prev must be the previous node.
    let mut fwd = Step {
        expect_back: head,
        cur: next_of_head,
    };
    let mut steps = 0usize;
    let mut forward_ok = true;
    while fwd.cur != head {
        if steps >= cap {
            w.truncated = true;
            w.reason
                .get_or_insert(format!("stopped at the cap of {cap} entries"));
            return w;
        }
        match link(k, fwd.cur, &mut seen) {
            Ok((next, prev)) if prev == fwd.expect_back => {
                steps = steps.saturating_add(1);
                if !skip(fwd.cur) {
                    match container(fwd.cur, node_off) {
                        Some(obj) => w.items.push(obj),
                        None => {
                            w.fail(format!("node {:#x} below its field offset", fwd.cur));
                            forward_ok = false;
                            break;
                        }
                    }
                }
                fwd = Step {
                    expect_back: fwd.cur,
                    cur: next,
                };
            }
            Ok((_, prev)) => {
                w.fail(format!(
                    "node {:#x}: prev {prev:#x} is not {:#x} (next->prev != node)",
                    fwd.cur, fwd.expect_back
                ));
                forward_ok = false;
                break;
            }
            Err(why) => {
                if why == LinkError::Repeat {
                    w.truncated = true;
                    w.reason
                        .get_or_insert(format!("cycle at {:#x} not through the head", fwd.cur));
                    return w;
                }
                w.fail(format!("node {:#x}: {why}", fwd.cur));
                forward_ok = false;
                break;
            }
        }
    }
    if forward_ok {
        return w;
    }
    // Backward from head->prev: each node's next must be the one after it.
    let Some(start) = prev_of_head else {
        return w;
    };
    let mut back = Vec::new();
    let mut bwd = Step {
        expect_back: head,
        cur: start,
    };
    while bwd.cur != head && steps < cap {
        let Ok((next, prev)) = link(k, bwd.cur, &mut seen) else {
            break;
        };
        if next != bwd.expect_back {
            break;
        }
        steps = steps.saturating_add(1);
        if !skip(bwd.cur) {
            match container(bwd.cur, node_off) {
                Some(obj) => back.push(obj),
                None => break,
            }
        }
        bwd = Step {
            expect_back: bwd.cur,
            cur: prev,
        };
    }
    w.recovered = back.len();
    w.items.extend(back.into_iter().rev());
    w
}

#[derive(Debug, PartialEq, Eq)]
enum LinkError {
    Null,
    Repeat,
    Unreadable,
}

impl std::fmt::Display for LinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LinkError::Null => "NULL link",
            LinkError::Repeat => "visited twice",
            LinkError::Unreadable => "does not translate or read",
        })
    }
}

/// Read a node's (next, prev), refusing NULL, repeats and unreadable nodes.
fn link<M: PhysMem>(
    k: &Kernel<M>,
    node: u64,
    seen: &mut HashSet<u64>,
) -> Result<(u64, u64), LinkError> {
    if node == 0 {
        return Err(LinkError::Null);
    }
    if !seen.insert(node) {
        return Err(LinkError::Repeat);
    }
    let next = k.read_u64(node).map_err(|_| LinkError::Unreadable)?;
    let prev = field_addr(node, 8)
        .and_then(|a| k.read_u64(a).ok())
        .ok_or(LinkError::Unreadable)?;
    Ok((next, prev))
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
    let Some(Ok(tbl)) = field_addr(ht, o.tbl).map(|a| k.read_u64(a)) else {
        w.fail(format!("rhashtable at {ht:#x} unreadable"));
        return w;
    };
    if tbl == 0 {
        return w;
    }
    let Some(Ok(size)) = field_addr(tbl, o.size.off).map(|a| k.read_uint(a, o.size.size)) else {
        w.fail(format!("bucket table {tbl:#x} unreadable"));
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
        // b < MAX_RHT_BUCKETS, so b * 8 cannot overflow.
        let slot = field_addr(tbl, o.buckets).and_then(|a| field_addr(a, b.saturating_mul(8)));
        let Some(Ok(raw)) = slot.map(|a| k.read_u64(a)) else {
            w.fail(format!("bucket {b} of table {tbl:#x} unreadable"));
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
            chain = chain.saturating_add(1);
            let next = match field_addr(p, o.next).map(|a| k.read_u64(a)) {
                Some(Ok(n)) => n,
                _ => {
                    w.fail(format!("bucket {b}: node {p:#x} unreadable"));
                    break;
                }
            };
            match container(p, head_off) {
                Some(obj) => w.items.push(obj),
                None => {
                    w.fail(format!("bucket {b}: node {p:#x} below its field offset"));
                    break;
                }
            }
            p = next;
        }
        if w.items.len() >= MAX_RHT_NODES {
            w.truncated = true;
            break;
        }
    }
    w
}
