//! The device against mock queues: handshakes both ways, data within
//! credit, EOF, refusals, round-robin fairness, host-side failures, and
//! hostile chains.

use super::muxer::{BUF_ALLOC, MAX_PKT_DATA, Vsock};
use super::packet::{GUEST_CID, HOST_CID, op};
use super::test_utils::{HDR_LEN, PacketBuilder as P, Rig};
use std::io::{Read, Write};
use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::Queue;
use virtio_queue::desc::{RawDescriptor, split::Descriptor};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::GuestAddress;

/// A guest connected to a host listener on `port` from guest port `gp`.
fn connected(r: &Rig, v: &mut Vsock, port: u32, gp: u32) -> std::os::unix::net::UnixStream {
    let host = v.listen(port).unwrap();
    assert!(r.tx(v, &P::new(gp, port, op::REQUEST), &[]));
    let out = r.rx(v, 4);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].hdr.op, op::RESPONSE);
    assert_eq!((out[0].src_cid, out[0].dst_cid), (HOST_CID, GUEST_CID));
    host
}

#[test]
fn guest_connects_sends_and_receives() {
    let r = Rig::new();
    let mut v = Vsock::new();
    let mut host = connected(&r, &mut v, 1024, 5000);
    // Guest -> host.
    r.tx(&mut v, &P::new(5000, 1024, op::RW).len(5), b"hello");
    let mut b = [0u8; 5];
    host.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"hello");
    // Host -> guest, within the guest's credit (4096).
    host.write_all(&[7u8; 6000]).unwrap();
    let out = r.rx(&mut v, 4);
    let data: usize = out
        .iter()
        .filter(|p| p.hdr.op == op::RW)
        .map(|p| p.data.len())
        .sum();
    assert_eq!(data, 4096, "never more than the guest's credit");
    assert!(out.iter().any(|p| p.hdr.op == op::CREDIT_UPDATE));
    // The host closes: after more credit the rest flows, then EOF.
    drop(host);
    r.tx(
        &mut v,
        &P::new(5000, 1024, op::CREDIT_UPDATE)
            .buf_alloc(1 << 20)
            .fwd_cnt(4096),
        &[],
    );
    let out = r.rx(&mut v, 8);
    assert!(out.iter().any(|p| p.hdr.op == op::SHUTDOWN), "EOF reported");
}

#[test]
fn unknown_ports_bad_cids_and_credit_overruns_are_reset() {
    let r = Rig::new();
    let mut v = Vsock::new();
    r.tx(&mut v, &P::new(1, 9999, op::REQUEST), &[]);
    assert_eq!(r.rx(&mut v, 2)[0].hdr.op, op::RST, "no listener");
    // Data on a connection that does not exist.
    r.tx(&mut v, &P::new(1, 9999, op::RW).len(3), b"abc");
    assert_eq!(r.rx(&mut v, 2)[0].hdr.op, op::RST);
    // Wrong destination CID.
    r.tx(&mut v, &P::new(1, 1024, op::REQUEST).dst_cid(77), &[]);
    assert!(v.stats.bad_chains >= 1);
    r.rx(&mut v, 4);
    // Credit overrun: more than BUF_ALLOC in flight while the host reads
    // nothing.
    let _host = connected(&r, &mut v, 2000, 2);
    let chunk = vec![1u8; MAX_PKT_DATA as usize];
    for _ in 0..(BUF_ALLOC / MAX_PKT_DATA + 8) {
        r.tx(&mut v, &P::new(2, 2000, op::RW).len(MAX_PKT_DATA), &chunk);
    }
    let out = r.rx(&mut v, 8);
    assert!(out.iter().any(|p| p.hdr.op == op::RST), "overrun reset");
    assert!(v.conns.is_empty());
}

#[test]
fn host_data_is_served_round_robin() {
    let r = Rig::new();
    let mut v = Vsock::new();
    let mut a = connected(&r, &mut v, 1, 100);
    let mut b = connected(&r, &mut v, 2, 200);
    // Both guests have plenty of credit; both hosts have lots to send.
    for (gp, hp) in [(100, 1), (200, 2)] {
        r.tx(
            &mut v,
            &P::new(gp, hp, op::CREDIT_UPDATE).buf_alloc(1 << 20),
            &[],
        );
    }
    a.write_all(&[b'a'; 64 * 1024]).unwrap();
    b.write_all(&[b'b'; 64 * 1024]).unwrap();
    let out = r.rx_sized(&mut v, 8, 1024);
    let order: Vec<u32> = out
        .iter()
        .filter(|p| p.hdr.op == op::RW)
        .map(|p| p.hdr.dst_port)
        .collect();
    assert_eq!(order.len(), 8, "{out:?}");
    for w in order.windows(2) {
        assert_ne!(
            w[0], w[1],
            "served the same connection twice in a row: {order:?}"
        );
    }
}

#[test]
fn a_failed_host_end_is_reset_towards_the_guest() {
    let r = Rig::new();
    let mut v = Vsock::new();
    let host = connected(&r, &mut v, 7, 700);
    // The device wrote guest bytes the host never read; closing the host
    // end with unread data makes the device's next read fail (ECONNRESET).
    r.tx(&mut v, &P::new(700, 7, op::RW).len(3), b"xyz");
    r.tx(
        &mut v,
        &P::new(700, 7, op::CREDIT_UPDATE).buf_alloc(1 << 20),
        &[],
    );
    r.rx(&mut v, 4);
    drop(host);
    let out = r.rx(&mut v, 4);
    assert!(
        out.iter()
            .any(|p| p.hdr.op == op::RST && p.hdr.dst_port == 700),
        "{out:?}"
    );
    assert!(v.conns.is_empty());
    assert_eq!(v.stats.host_errors, 1);
}

#[test]
fn hostile_chains_are_consumed_without_panic() {
    let r = Rig::new();
    let mut v = Vsock::new();
    // Header descriptor pointing outside guest memory.
    let vq = MockSplitQueue::create(&r.mem, GuestAddress(0x1000), 16);
    vq.build_desc_chain(&[RawDescriptor::from(Descriptor::new(
        0xffff_ffff_0000,
        HDR_LEN as u32,
        0,
        0,
    ))])
    .unwrap();
    let mut q: Queue = vq.create_queue().unwrap();
    assert!(v.process_tx(&r.mem, &mut q));
    // Too-short header, and a write-only TX header.
    for (len, flags) in [(8u32, 0u16), (HDR_LEN as u32, VRING_DESC_F_WRITE as u16)] {
        let vq = MockSplitQueue::create(&r.mem, GuestAddress(0x1000), 16);
        vq.build_desc_chain(&[RawDescriptor::from(Descriptor::new(
            0x10_0000, len, flags, 0,
        ))])
        .unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        v.process_tx(&r.mem, &mut q);
    }
    // A descriptor loop: 0 -> 1 -> 0.
    let vq = MockSplitQueue::create(&r.mem, GuestAddress(0x1000), 16);
    let next = VRING_DESC_F_NEXT as u16;
    vq.desc_table()
        .store(
            0,
            RawDescriptor::from(Descriptor::new(0x10_0000, HDR_LEN as u32, next, 1)),
        )
        .unwrap();
    vq.desc_table()
        .store(
            1,
            RawDescriptor::from(Descriptor::new(0x20_0000, 16, next, 0)),
        )
        .unwrap();
    vq.avail().ring().ref_at(0).unwrap().store(0u16);
    vq.avail().idx().store(1u16);
    let mut q: Queue = vq.create_queue().unwrap();
    v.process_tx(&r.mem, &mut q);
    // A huge data length.
    r.tx(&mut v, &P::new(1, 1, op::RW).len(u32::MAX), b"x");
    assert!(v.stats.bad_chains >= 4, "{:?}", v.stats);
}

#[test]
fn host_connects_to_a_guest_port() {
    let r = Rig::new();
    let mut v = Vsock::new();
    let rx = v.connect(52);
    let out = r.rx(&mut v, 2);
    assert_eq!(out[0].hdr.op, op::REQUEST);
    let hp = out[0].hdr.src_port;
    // The guest answers from port 52 to our port.
    r.tx(&mut v, &P::new(52, hp, op::RESPONSE), &[]);
    let mut s = rx.try_recv().unwrap().unwrap();
    r.tx(&mut v, &P::new(52, hp, op::RW).len(2), b"ok");
    let mut b = [0u8; 2];
    s.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"ok");
    // A refused connect is an error, not a hang.
    let rx = v.connect(53);
    let out = r.rx(&mut v, 4);
    let req = out.iter().find(|p| p.hdr.op == op::REQUEST).unwrap();
    assert_eq!(req.hdr.dst_port, 53);
    let hp = req.hdr.src_port;
    r.tx(&mut v, &P::new(53, hp, op::RST).buf_alloc(0), &[]);
    assert!(rx.try_recv().unwrap().is_err());
}
