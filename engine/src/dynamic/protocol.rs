//! What the engine and a plugin host process say to each other over the host's stdin and
//! stdout: frames of a 4-byte big-endian length and that many bytes of JSON.
//!
//! The engine sends [`ToHost`]; the host answers every request with exactly one final
//! [`FromHost`] message, and while a `run` is under way may send any number of
//! [`FromHost::Storage`] requests first, each answered by one [`ToHost::StorageReply`].

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::library::PluginFunction;
use super::locate::FileIdentity;

/// Bumped on any change to these messages; the host says its version first.
pub const PROTOCOL_VERSION: u32 = 1;

/// The largest frame either side accepts (a job context, a report, a batch of rows).
pub const MAX_FRAME_BYTES: usize = 256 << 20;

/// The engine's messages.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToHost {
    /// Load the library at `path`, which must still be the file `identity` describes.
    Load {
        path: PathBuf,
        identity: WireIdentity,
    },
    /// Call one of its functions with `input` (JSON text).
    Call {
        function: PluginFunction,
        input: String,
    },
    /// The answer to a [`FromHost::Storage`] request: a `HostResponse` as JSON.
    StorageReply { response: String },
}

/// The host's messages.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromHost {
    /// First message after start.
    Ready {
        protocol: u32,
        pid: u32,
    },
    Loaded {
        name: String,
        version: String,
        sdk_version: String,
    },
    /// The library was not loaded; the message names the file and the cause.
    LoadFailed {
        error: String,
    },
    Returned {
        status: CallStatus,
        output: String,
    },
    /// The plugin asks for storage: a `HostRequest` as JSON.
    Storage {
        request: String,
    },
}

/// How a call ended inside the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallStatus {
    Ok,
    Refused,
    Panicked,
    BadOutput,
    Unknown,
}

/// [`FileIdentity`] as it crosses the pipe (i128 is not JSON).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct WireIdentity {
    pub device: u64,
    pub inode: u64,
    pub size: u64,
    pub modified_s: i64,
    pub modified_subsec_ns: u32,
}

impl From<FileIdentity> for WireIdentity {
    fn from(id: FileIdentity) -> Self {
        Self {
            device: id.device,
            inode: id.inode,
            size: id.size,
            modified_s: id.modified_ns.div_euclid(1_000_000_000) as i64,
            modified_subsec_ns: id.modified_ns.rem_euclid(1_000_000_000) as u32,
        }
    }
}

impl From<WireIdentity> for FileIdentity {
    fn from(id: WireIdentity) -> Self {
        Self {
            device: id.device,
            inode: id.inode,
            size: id.size,
            modified_ns: i128::from(id.modified_s) * 1_000_000_000
                + i128::from(id.modified_subsec_ns),
        }
    }
}

/// Writes one frame.
pub fn write_frame(out: &mut impl Write, message: &impl Serialize) -> io::Result<()> {
    let body = serde_json::to_vec(message).map_err(io::Error::other)?;
    if body.len() > MAX_FRAME_BYTES {
        return Err(io::Error::other(format!(
            "a message of {} bytes is larger than the {MAX_FRAME_BYTES}-byte limit",
            body.len()
        )));
    }
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    out.write_all(&frame)?;
    out.flush()
}

/// Why no frame was read.
#[derive(Debug)]
pub enum ReadError {
    /// The other side closed the pipe (at a frame boundary or inside one).
    Closed,
    /// The deadline passed first.
    TimedOut,
    Io(io::Error),
    /// A frame that is too large or not a message.
    Bad(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Closed => f.write_str("the pipe was closed"),
            ReadError::TimedOut => f.write_str("nothing arrived in time"),
            ReadError::Io(e) => write!(f, "{e}"),
            ReadError::Bad(m) => f.write_str(m),
        }
    }
}

/// Reads one frame, waiting until `deadline` at most (forever when `None`).
pub fn read_frame<T: for<'de> Deserialize<'de>>(
    input: &mut (impl Read + AsRawFd),
    deadline: Option<Instant>,
) -> Result<T, ReadError> {
    let mut length = [0u8; 4];
    read_exact_by(input, &mut length, deadline)?;
    let length = u32::from_be_bytes(length) as usize;
    if length > MAX_FRAME_BYTES {
        return Err(ReadError::Bad(format!(
            "a frame of {length} bytes is larger than the {MAX_FRAME_BYTES}-byte limit"
        )));
    }
    let mut body = vec![0u8; length];
    read_exact_by(input, &mut body, deadline)?;
    serde_json::from_slice(&body).map_err(|e| ReadError::Bad(format!("not a message: {e}")))
}

fn read_exact_by(
    input: &mut (impl Read + AsRawFd),
    mut buf: &mut [u8],
    deadline: Option<Instant>,
) -> Result<(), ReadError> {
    while !buf.is_empty() {
        if let Some(deadline) = deadline {
            wait_readable(input.as_raw_fd(), deadline)?;
        }
        match input.read(buf) {
            Ok(0) => return Err(ReadError::Closed),
            Ok(n) => buf = &mut buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
    Ok(())
}

/// Waits until `fd` has something to read (or is closed), or `deadline` passes.
fn wait_readable(fd: i32, deadline: Instant) -> Result<(), ReadError> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ReadError::TimedOut);
        }
        // Rounded up so a wait never ends just before the deadline and spins.
        let timeout_ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        let mut pollfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, for the call's duration.
        match unsafe { libc::poll(&mut pollfd, 1, timeout_ms) } {
            0 => continue,
            n if n > 0 => return Ok(()),
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(ReadError::Io(e));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    #[test]
    fn frames_round_trip_and_a_silent_peer_times_out() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        write_frame(
            &mut a,
            &FromHost::Ready {
                protocol: PROTOCOL_VERSION,
                pid: 7,
            },
        )
        .unwrap();
        let got: FromHost =
            read_frame(&mut b, Some(Instant::now() + Duration::from_secs(5))).unwrap();
        assert!(matches!(got, FromHost::Ready { pid: 7, .. }), "{got:?}");
        let silent =
            read_frame::<FromHost>(&mut b, Some(Instant::now() + Duration::from_millis(20)));
        assert!(matches!(silent, Err(ReadError::TimedOut)), "{silent:?}");
        drop(a);
        assert!(matches!(
            read_frame::<FromHost>(&mut b, None),
            Err(ReadError::Closed)
        ));
    }

    #[test]
    fn an_oversized_frame_is_refused_before_it_is_read() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        a.write_all(&u32::MAX.to_be_bytes()).unwrap();
        let err = read_frame::<FromHost>(&mut b, None).unwrap_err();
        assert!(
            matches!(err, ReadError::Bad(ref m) if m.contains("larger than")),
            "{err:?}"
        );
    }
}
