//! A real S3-compatible server for tests and benches: PyPI's `moto` (`python3 -m
//! moto.server`, installed by `.ci/run`) on a free loopback port, polled until it answers,
//! killed when dropped. Missing outside CI, a test skips saying why; in CI it fails.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port (bound, then released for the server to take).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A moto S3 server on loopback, killed when dropped.
pub struct Moto {
    child: Child,
    pub port: u16,
    pub endpoint: String,
}

/// The credentials moto accepts (any); set in this test process's environment, which is
/// where the plugin reads them from.
pub fn set_test_credentials() {
    // Every test of a binary sets the same values, so concurrent tests agree.
    std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    std::env::set_var("AWS_REGION", "us-east-1");
}

impl Moto {
    /// Starts `python3 -m moto.server` on a free port and waits until it answers; `None`
    /// (with the reason printed) when moto is not installed outside CI. In CI (`CI` set) a
    /// missing moto fails the test: `.ci/run` installs it.
    pub fn start() -> Option<Moto> {
        let have = Command::new("python3")
            .args(["-c", "import moto.server"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !have {
            let why =
                "moto is not installed (pip install 'moto[server]'); the S3 offload tests need it";
            if std::env::var_os("CI").is_some() {
                panic!("{why}: .ci/run installs it");
            }
            eprintln!("skipped: {why}");
            return None;
        }
        set_test_credentials();
        Some(Moto::start_on(free_port()))
    }

    /// Starts moto on `port` (a restart after [`Moto::stop`] uses the same port).
    pub fn start_on(port: u16) -> Moto {
        let child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m moto.server");
        let moto = Moto {
            child,
            port,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        moto.wait_ready();
        moto
    }

    /// Polls until the server answers HTTP (at most 30 s).
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if http(self.port, "GET", "/").is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("moto did not answer on port {} within 30 s", self.port);
    }

    /// Creates a bucket (a plain PUT; moto needs no signature).
    pub fn create_bucket(&self, bucket: &str) {
        let status = http(self.port, "PUT", &format!("/{bucket}")).expect("moto answers");
        assert!(
            status.starts_with("HTTP/1.1 200"),
            "creating {bucket}: {status}"
        );
    }

    /// The `[offload]` section for `bucket/prefix` on this server.
    pub fn section(&self, bucket: &str, prefix: &str) -> String {
        format!(
            "[offload]\nafter_days = 40\nurl = \"s3://{bucket}/{prefix}\"\nendpoint = \"{}\"\nallow_http = true\npath_style = true\nregion = \"us-east-1\"\ntimeout_seconds = 10\n",
            self.endpoint
        )
    }

    /// Stops the server (it is gone when this returns).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One plain HTTP/1.1 request to loopback; the status line, or `None` when nothing answers.
pub fn http(port: u16, method: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    text.lines().next().map(str::to_string)
}
