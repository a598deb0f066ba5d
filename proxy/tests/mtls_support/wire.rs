//! What a sidecar puts on the wire: a raw listener in a pod captures the first
//! bytes (a whole ClientHello, or a plaintext HTTP head) of one connection.

use std::io::Read;
use std::net::TcpListener;
use std::time::Duration;

use crate::common::{Pod, APP};
use crate::fixtures::SINK_VIP;
use crate::meshnet::in_netns;

/// Listens on `port` in `pod` and returns the first bytes of the first connection.
pub(crate) fn capture_once(
    pod: &Pod,
    port: u16,
) -> (
    std::thread::JoinHandle<Vec<u8>>,
    std::sync::mpsc::Receiver<()>,
) {
    let (tx, rx) = std::sync::mpsc::channel();
    let h = in_netns(pod, move || {
        let l = TcpListener::bind(("0.0.0.0", port)).unwrap();
        tx.send(()).unwrap();
        let (mut c, _) = l.accept().unwrap();
        c.set_read_timeout(Some(Duration::from_millis(1500)))
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let mut got = 0;
        // A ClientHello's record length tells when it is complete; plaintext HTTP ends its head with CRLFCRLF.
        while got < buf.len() {
            match c.read(&mut buf[got..]) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
            if got >= 5 && buf[0] == 0x16 {
                if got >= 5 + usize::from(u16::from_be_bytes([buf[3], buf[4]])) {
                    break;
                }
            } else if buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        buf.truncate(got);
        buf
    });
    (h, rx)
}

/// What a meshed client's sidecar puts on the wire towards the sink service.
pub(crate) fn wire_bytes(client: &Pod, sink: &Pod) -> Vec<u8> {
    let (h, ready) = capture_once(sink, 7000);
    ready.recv().unwrap();
    // curl fails (the sink never answers HTTP); only the bytes matter.
    let _ = client.exec(
        APP,
        &[
            "curl",
            "-s",
            "--max-time",
            "3",
            &format!("http://{SINK_VIP}:7000/"),
        ],
    );
    h.join().unwrap()
}
