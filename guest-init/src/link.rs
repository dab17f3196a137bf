//! The link to the host: the byte channel named on the kernel command
//! line (`ktstr.chan=virtio:/dev/virtio-ports/ktstr.0` on the qemu engine,
//! `ktstr.chan=vsock:2:1024` on the kvm engine), framed messages, and a
//! reader thread that routes kernel-op replies to whoever waits for them.

use ktstr_wire::{GuestMsg, HostMsg, KernelOpReplyPayload, RunSpec, read_msg, write_msg};
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A connected channel: write half shared, read half owned by the reader.
pub struct Link {
    w: Mutex<Box<dyn Write + Send>>,
    pending: Mutex<HashMap<u64, Sender<Vec<KernelOpReplyPayload>>>>,
}

/// The channel spec from `/proc/cmdline`.
pub fn channel_from_cmdline(cmdline: &str) -> Option<String> {
    cmdline
        .split_whitespace()
        .find_map(|a| a.strip_prefix("ktstr.chan=").map(str::to_string))
}

fn open_vsock(cid: u32, port: u32) -> std::io::Result<File> {
    // SAFETY: plain socket syscall.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fresh fd, owned by the File from here on.
    let f: File = unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) };
    // SAFETY: zeroed sockaddr_vm is valid; fields set below.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    addr.svm_cid = cid;
    addr.svm_port = port;
    // SAFETY: addr is a valid sockaddr_vm of the given length.
    let rc = unsafe {
        libc::connect(
            fd,
            (&addr as *const libc::sockaddr_vm).cast(),
            std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(f)
}

/// Without udev nothing creates `/dev/virtio-ports/<name>`: find the port
/// whose sysfs `name` matches and return its `/dev/vportNpM` node.
fn virtio_port_node(path: &str) -> Option<String> {
    let name = path.strip_prefix("/dev/virtio-ports/")?;
    for e in std::fs::read_dir("/sys/class/virtio-ports").ok()?.flatten() {
        let n = std::fs::read_to_string(e.path().join("name")).unwrap_or_default();
        if n.trim() == name {
            let dev = format!("/dev/{}", e.file_name().to_string_lossy());
            let _ = std::fs::create_dir_all("/dev/virtio-ports");
            let _ = std::os::unix::fs::symlink(&dev, path);
            return Some(dev);
        }
    }
    None
}

/// Open the channel, retrying for up to `wait` (devices may appear after
/// init starts).
pub fn open(spec: &str, wait: Duration) -> Result<File, String> {
    let deadline = Instant::now() + wait;
    loop {
        let r = if let Some(path) = spec.strip_prefix("virtio:") {
            let node = virtio_port_node(path).unwrap_or_else(|| path.to_string());
            File::options()
                .read(true)
                .write(true)
                .open(&node)
                .map_err(|e| format!("{path}: {e}"))
        } else if let Some(rest) = spec.strip_prefix("vsock:") {
            let mut it = rest.split(':').map(|v| v.parse::<u32>());
            match (it.next(), it.next()) {
                (Some(Ok(cid)), Some(Ok(port))) => {
                    open_vsock(cid, port).map_err(|e| format!("vsock {cid}:{port}: {e}"))
                }
                _ => return Err(format!("bad ktstr.chan={spec}: want vsock:CID:PORT")),
            }
        } else {
            return Err(format!(
                "bad ktstr.chan={spec}: want virtio:PATH or vsock:CID:PORT"
            ));
        };
        match r {
            Ok(f) => return Ok(f),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

impl Link {
    /// Wrap an open channel; spawn the reader. Returns the link and a
    /// receiver of host messages other than kernel-op replies.
    pub fn start(chan: File) -> std::io::Result<(Arc<Self>, Receiver<HostMsg>)> {
        let reader = chan.try_clone()?;
        let link = Arc::new(Self {
            w: Mutex::new(Box::new(chan)),
            pending: Mutex::new(HashMap::new()),
        });
        let (tx, rx) = mpsc::channel();
        let l2 = link.clone();
        std::thread::Builder::new()
            .name("host-reader".into())
            .spawn(move || l2.reader(reader, tx))?;
        Ok((link, rx))
    }

    fn reader(&self, mut r: impl Read, tx: Sender<HostMsg>) {
        loop {
            match read_msg::<HostMsg, _>(&mut r) {
                Ok(HostMsg::KernelOpReply { id, replies }) => {
                    let waiter = self
                        .pending
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&id);
                    if let Some(w) = waiter {
                        let _ = w.send(replies);
                    }
                }
                Ok(m) => {
                    if tx.send(m).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    eprintln!("ktstr-guest-init: host channel: {e}");
                    let _ = tx.send(HostMsg::Shutdown {
                        reason: format!("host channel failed: {e}"),
                    });
                    return;
                }
            }
        }
    }

    /// Send one message (serialised with other senders).
    pub fn send(&self, m: &GuestMsg) {
        let mut w = self.w.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = write_msg(&mut *w, m) {
            eprintln!("ktstr-guest-init: send to host failed: {e}");
        }
    }

    /// Register interest in the reply to request `id`.
    pub fn expect_reply(&self, id: u64) -> Receiver<Vec<KernelOpReplyPayload>> {
        let (tx, rx) = mpsc::channel();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        rx
    }
}

/// Wait for the RunSpec after Hello.
pub fn wait_run(rx: &Receiver<HostMsg>, wait: Duration) -> Result<RunSpec, String> {
    match rx.recv_timeout(wait) {
        Ok(HostMsg::Run(spec)) => Ok(spec),
        Ok(HostMsg::Shutdown { reason }) => Err(format!("host asked to shut down: {reason}")),
        Ok(other) => Err(format!("expected a RunSpec, got {other:?}")),
        Err(_) => Err(format!(
            "no RunSpec from the host within {}s",
            wait.as_secs()
        )),
    }
}
