//! Round trips for every message, and hostile frames.

use super::*;
use proptest::prelude::*;

fn round<T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(m: &T) {
    let f = frame::encode(m).unwrap();
    let back: T = frame::decode(&f).unwrap();
    assert_eq!(&back, m);
}

#[test]
fn every_message_round_trips() {
    let ops = vec![
        KernelOp::Write {
            target: KernelTarget::task_field(42, 123, "scx.dsq_vtime"),
            value: KernelValue::u64(7),
        },
        KernelOp::Read {
            tag: "t".into(),
            target: KernelTarget::per_cpu_field("runqueues", "nr_running", 1),
            width: KernelValueWidth::u32(),
        },
        KernelOp::Read {
            tag: "s".into(),
            target: KernelTarget::symbol("jiffies_64"),
            width: KernelValueWidth::bytes(16),
        },
        KernelOp::Write {
            target: KernelTarget::kva(0xffff_8880_0000_1000),
            value: KernelValue::bytes(vec![1, 2, 3]),
        },
    ];
    for m in [
        GuestMsg::Hello(Hello {
            proto: PROTO_VERSION,
            kernel_release: "7.2.13".into(),
            nr_cpus: 4,
            kallsyms_text: 0xffff_ffff_8100_0000,
            boot_time_ns: 1,
            cpus: vec![CpuTopo {
                cpu: 0,
                siblings: "0-1".into(),
                ..Default::default()
            }],
            sched_ext_sysfs: true,
        }),
        GuestMsg::Lifecycle {
            phase: Phase::SchedulerAttached,
            detail: "simple".into(),
        },
        GuestMsg::Lifecycle {
            phase: Phase::SchedulerNotAttached,
            detail: "timeout".into(),
        },
        GuestMsg::SchedLog(b"log".to_vec()),
        GuestMsg::Output {
            stream: Stream::Stderr,
            data: b"x".to_vec(),
        },
        GuestMsg::TestResult {
            passed: false,
            json: "{}".into(),
        },
        GuestMsg::KernelOpRequest { id: 9, ops },
        GuestMsg::Exit { code: 3 },
        GuestMsg::Log("hi".into()),
    ] {
        round(&m);
    }
    for m in [
        HostMsg::Run(RunSpec {
            scheduler: Some(SchedSpec {
                path: "/bin/scx_simple".into(),
                args: vec!["-v".into()],
                liveness_ms: 1000,
                attach_timeout_ms: 10_000,
            }),
            payload_argv: vec!["/payload".into()],
            payload_env: vec![("A".into(), "B".into())],
            payload_timeout_ms: 5000,
            cgroups: vec![CgroupSpec {
                path: "cg_0".into(),
                cpuset: Some("0-1".into()),
            }],
            force_no_sched_ext: false,
        }),
        HostMsg::KernelOpReply {
            id: 9,
            replies: vec![
                KernelOpReplyPayload::ok(vec![
                    KernelOpValue::U64(5),
                    KernelOpValue::U32(1),
                    KernelOpValue::Bytes(vec![9]),
                ]),
                KernelOpReplyPayload::refused("on_rq != 0"),
            ],
        },
        HostMsg::Shutdown {
            reason: "bye".into(),
        },
    ] {
        round(&m);
    }
}

#[test]
fn version_mismatch_is_a_clear_error() {
    assert!(check_version(PROTO_VERSION).is_ok());
    let e = check_version(PROTO_VERSION + 1).unwrap_err();
    assert!(e.contains("mismatch") && e.contains("rebuild"), "{e}");
}

#[test]
fn truncated_corrupt_and_oversized_frames() {
    let f = frame::encode(&GuestMsg::Exit { code: 1 }).unwrap();
    for cut in 1..f.len() {
        assert!(frame::decode::<GuestMsg>(&f[..cut]).is_err(), "cut {cut}");
    }
    assert!(matches!(
        frame::decode::<GuestMsg>(&[]),
        Err(FrameError::Closed)
    ));
    let mut bad = f.clone();
    *bad.last_mut().unwrap() ^= 0xff;
    assert!(matches!(
        frame::decode::<GuestMsg>(&bad),
        Err(FrameError::Checksum { .. })
    ));
    let mut huge = f.clone();
    huge[0..4].copy_from_slice(&(MAX_FRAME as u32 + 1).to_le_bytes());
    assert!(matches!(
        frame::decode::<GuestMsg>(&huge),
        Err(FrameError::TooLarge(_))
    ));
    // A well-formed frame whose payload is not a message.
    let payload = [0xffu8; 4];
    let mut odd = (payload.len() as u32).to_le_bytes().to_vec();
    odd.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    odd.extend_from_slice(&payload);
    assert!(matches!(
        frame::decode::<GuestMsg>(&odd),
        Err(FrameError::Decode(_))
    ));
}

#[test]
fn stream_of_frames() {
    let mut buf = Vec::new();
    for i in 0..5 {
        write_msg(&mut buf, &GuestMsg::Exit { code: i }).unwrap();
    }
    let mut r = &buf[..];
    for i in 0..5 {
        assert_eq!(
            read_msg::<GuestMsg, _>(&mut r).unwrap(),
            GuestMsg::Exit { code: i }
        );
    }
    assert!(matches!(
        read_msg::<GuestMsg, _>(&mut r),
        Err(FrameError::Closed)
    ));
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = frame::decode::<GuestMsg>(&data);
        let _ = frame::decode::<HostMsg>(&data);
    }

    #[test]
    fn arbitrary_valid_frames_never_panic(payload in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut f = (payload.len() as u32).to_le_bytes().to_vec();
        f.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        f.extend_from_slice(&payload);
        let _ = frame::decode::<GuestMsg>(&f);
        let _ = frame::decode::<HostMsg>(&f);
    }
}
