//! The engine's side of a plugin host: child processes that each load one plugin library
//! ([`super::serve`]) and run its calls, so nothing the plugin does can take the engine
//! down.
//!
//! A call takes an idle host process of its library (or starts one), sends the call, and
//! answers the plugin's storage requests until the result comes back or the call's
//! deadline passes. A host that dies mid-call (a signal, `exit()`, a memory limit) fails
//! that call with what ended it and its last lines of stderr; one that misses the
//! deadline is killed. Either way it is not reused: the next call starts a fresh one.
//!
//! Host processes are started from one long-lived thread, because `PR_SET_PDEATHSIG`
//! (which kills a host if the engine dies without closing its pipes) fires when the
//! *thread* that forked it ends, and the threads that make calls come and go.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::error::{CallError, PluginLoadError};
use super::library::PluginFunction;
use super::locate::FileIdentity;
use super::protocol::{
    read_frame, write_frame, CallStatus, FromHost, ReadError, ToHost, PROTOCOL_VERSION,
};
use super::serve::{HOST_ARG, HOST_ENV};

/// The program started as a plugin host: one that calls
/// [`super::serve_if_requested`] first thing in `main`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCommand {
    pub program: PathBuf,
    pub args: Vec<OsString>,
}

impl HostCommand {
    /// `program --speckit-plugin-host`.
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            args: vec![HOST_ARG.into()],
        }
    }

    /// This process's own executable (the `speckit-hygiene` binary, or a host
    /// application that calls `serve_if_requested`).
    pub fn current_exe() -> Self {
        Self::new(std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe")))
    }
}

/// Limits a call runs under, from the plugin's `[plugins.<name>]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallLimits {
    pub timeout: Duration,
    /// Data segment and private writable mappings of the host process (`RLIMIT_DATA`), in
    /// MiB; 0 for none.
    pub memory_limit_mib: u64,
}

/// What the library says about itself, from the host that loaded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibraryInfo {
    pub name: String,
    pub version: String,
    pub sdk_version: String,
}

/// Lines of a host's stderr kept for a crash report.
const STDERR_TAIL_LINES: usize = 8;
/// Idle host processes kept per library.
const MAX_IDLE: usize = 2;
/// At most this long for a new host to say it is ready (or the call's timeout if shorter).
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The host processes of one library file.
#[derive(Debug)]
pub struct PluginHost {
    command: HostCommand,
    path: PathBuf,
    identity: FileIdentity,
    info: LibraryInfo,
    idle: Mutex<Vec<HostProcess>>,
}

impl PluginHost {
    /// Starts a host, loads `path` (which must still be `identity`), and keeps it idle.
    pub fn start(
        command: &HostCommand,
        path: &Path,
        identity: FileIdentity,
        limits: CallLimits,
    ) -> Result<Self, PluginLoadError> {
        let deadline = Instant::now() + limits.timeout.min(START_TIMEOUT);
        let (process, info) = HostProcess::start(command, path, identity, limits, deadline)?;
        Ok(Self {
            command: command.clone(),
            path: path.to_path_buf(),
            identity,
            info,
            idle: Mutex::new(vec![process]),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn identity(&self) -> FileIdentity {
        self.identity
    }

    pub fn info(&self) -> &LibraryInfo {
        &self.info
    }

    /// Calls `function` in a host process; `storage` answers the plugin's storage requests
    /// (a `HostRequest` as JSON in, a `HostResponse` as JSON out). Blocks until the result
    /// or the deadline.
    pub fn call(
        &self,
        function: PluginFunction,
        input: &[u8],
        limits: CallLimits,
        storage: &mut dyn FnMut(&str) -> String,
    ) -> Result<Vec<u8>, CallError> {
        let deadline = Instant::now() + limits.timeout;
        let mut process = match self.take_idle(limits) {
            Some(process) => process,
            None => self.start_process(limits, deadline)?,
        };
        let call = ToHost::Call {
            function,
            input: String::from_utf8_lossy(input).into_owned(),
        };
        if write_frame(&mut process.input, &call).is_err() {
            return Err(process.ended(limits));
        }
        loop {
            match read_frame::<FromHost>(&mut process.output, Some(deadline)) {
                Ok(FromHost::Storage { request }) => {
                    let reply = ToHost::StorageReply {
                        response: storage(&request),
                    };
                    if write_frame(&mut process.input, &reply).is_err() {
                        return Err(process.ended(limits));
                    }
                }
                Ok(FromHost::Returned { status, output }) => {
                    self.put_idle(process);
                    return match status {
                        CallStatus::Ok => Ok(output.into_bytes()),
                        CallStatus::Refused => Err(CallError::Refused(output)),
                        CallStatus::Panicked => Err(CallError::Panicked(output)),
                        CallStatus::BadOutput => Err(CallError::BadOutput(output)),
                        CallStatus::Unknown => {
                            Err(CallError::UnknownStatus(output.parse().unwrap_or(u32::MAX)))
                        }
                    };
                }
                Ok(other) => {
                    process.kill();
                    return Err(CallError::BadOutput(format!(
                        "its host sent {other:?} in the middle of a call"
                    )));
                }
                Err(ReadError::TimedOut) => {
                    process.kill();
                    return Err(CallError::TimedOut {
                        timeout_ms: limits.timeout.as_millis() as u64,
                    });
                }
                Err(ReadError::Closed | ReadError::Io(_)) => return Err(process.ended(limits)),
                Err(ReadError::Bad(message)) => {
                    process.kill();
                    return Err(CallError::BadOutput(message));
                }
            }
        }
    }

    fn start_process(
        &self,
        limits: CallLimits,
        deadline: Instant,
    ) -> Result<HostProcess, CallError> {
        let start_deadline = deadline.min(Instant::now() + START_TIMEOUT);
        let (process, info) = HostProcess::start(
            &self.command,
            &self.path,
            self.identity,
            limits,
            start_deadline,
        )
        .map_err(|e| CallError::HostStart(e.to_string()))?;
        if info != self.info {
            return Err(CallError::HostStart(format!(
                "{} now says it is {} {}, not the {} {} that was checked; reload to load it",
                self.path.display(),
                info.name,
                info.version,
                self.info.name,
                self.info.version
            )));
        }
        Ok(process)
    }

    fn take_idle(&self, limits: CallLimits) -> Option<HostProcess> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        // A host started under other limits is not reused for these.
        idle.retain(|p| p.memory_limit_mib == limits.memory_limit_mib);
        idle.pop()
    }

    fn put_idle(&self, process: HostProcess) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(process);
        }
    }
}

/// One running host process. Dropping it kills the process.
#[derive(Debug)]
struct HostProcess {
    child: Child,
    input: ChildStdin,
    output: ChildStdout,
    stderr: StderrTail,
    memory_limit_mib: u64,
}

impl HostProcess {
    /// Starts a host and has it load the library.
    fn start(
        command: &HostCommand,
        path: &Path,
        identity: FileIdentity,
        limits: CallLimits,
        deadline: Instant,
    ) -> Result<(Self, LibraryInfo), PluginLoadError> {
        let start_error = |message: String| PluginLoadError::HostStart {
            program: command.program.clone(),
            message,
        };
        let mut child = spawn(command, limits.memory_limit_mib)
            .map_err(|e| start_error(format!("cannot start it: {e}")))?;
        let (Some(input), Some(output), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(start_error("its pipes were not set up".into()));
        };
        let mut process = HostProcess {
            stderr: StderrTail::follow(stderr, child.id()),
            child,
            input,
            output,
            memory_limit_mib: limits.memory_limit_mib,
        };
        match read_frame::<FromHost>(&mut process.output, Some(deadline)) {
            Ok(FromHost::Ready { protocol, .. }) if protocol == PROTOCOL_VERSION => {}
            Ok(FromHost::Ready { protocol, .. }) => {
                return Err(start_error(format!(
                    "it speaks plugin-host protocol {protocol}, this engine {PROTOCOL_VERSION}"
                )))
            }
            other => {
                let how = match other {
                    Err(ReadError::TimedOut) => "did not say it was ready in time".to_string(),
                    Err(ReadError::Closed | ReadError::Io(_)) => {
                        let ended = process.ended(limits);
                        format!("ended before it was ready: {ended}")
                    }
                    Err(ReadError::Bad(m)) => format!("wrote something other than a frame: {m}"),
                    Ok(m) => format!("sent {m:?} first"),
                };
                return Err(start_error(format!(
                    "{how}. A program that embeds the engine must call \
                     speckit_engine::dynamic::serve_if_requested() first thing in main, or \
                     name a plugin host in EngineOptions::plugin_host"
                )));
            }
        }
        let load = ToHost::Load {
            path: path.to_path_buf(),
            identity: identity.into(),
        };
        if write_frame(&mut process.input, &load).is_err() {
            let ended = process.ended(limits);
            return Err(start_error(format!("ended before loading: {ended}")));
        }
        match read_frame::<FromHost>(&mut process.output, Some(deadline)) {
            Ok(FromHost::Loaded {
                name,
                version,
                sdk_version,
            }) => Ok((
                process,
                LibraryInfo {
                    name,
                    version,
                    sdk_version,
                },
            )),
            Ok(FromHost::LoadFailed { error }) => Err(PluginLoadError::InHost { message: error }),
            Ok(other) => Err(start_error(format!("answered Load with {other:?}"))),
            Err(ReadError::TimedOut) => Err(PluginLoadError::InHost {
                message: format!(
                    "loading {} did not finish within {} ms",
                    path.display(),
                    limits.timeout.min(START_TIMEOUT).as_millis()
                ),
            }),
            Err(_) => Err(PluginLoadError::InHost {
                message: format!("loading {} {}", path.display(), process.ended(limits)),
            }),
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The process ended (or broke its pipe): waits for it and says how it ended.
    fn ended(&mut self, limits: CallLimits) -> CallError {
        // The pipe closed, so the process has ended or is ending; a host that closed its
        // pipes and lives on is killed.
        let status = match wait_at_most(&mut self.child, Duration::from_secs(2)) {
            Some(status) => status,
            None => {
                self.kill();
                return CallError::Crashed {
                    how: "closed its pipe to the engine and was stopped".into(),
                    last_output: self.stderr.last_lines(),
                };
            }
        };
        let mut how = describe_exit(status);
        let last_output = self.stderr.last_lines();
        let out_of_memory = last_output.contains("memory allocation of");
        if limits.memory_limit_mib > 0 && out_of_memory {
            how.push_str(&format!(
                " after reaching its memory limit (memory_limit_mib = {})",
                limits.memory_limit_mib
            ));
        }
        CallError::Crashed { how, last_output }
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn wait_at_most(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let until = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(2)),
            _ => return None,
        }
    }
}

/// "was killed by SIGSEGV", "exited with status 0 in the middle of a call".
fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(signal) = status.signal() {
        format!("was killed by {}", signal_name(signal))
    } else {
        format!(
            "exited with status {} in the middle of a call",
            status.code().unwrap_or(-1)
        )
    }
}

fn signal_name(signal: i32) -> String {
    let name = match signal {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGHUP => "SIGHUP",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGSYS => "SIGSYS",
        other => return format!("signal {other}"),
    };
    name.to_string()
}

/// The last lines a host wrote to stderr; every line is also logged.
#[derive(Debug, Clone)]
struct StderrTail {
    lines: Arc<Mutex<VecDeque<String>>>,
    done: Arc<Mutex<Option<mpsc::Receiver<()>>>>,
}

impl StderrTail {
    fn follow(stderr: std::process::ChildStderr, pid: u32) -> Self {
        use std::io::BufRead;
        let lines: Arc<Mutex<VecDeque<String>>> = Arc::default();
        let (done_tx, done_rx) = mpsc::channel();
        let kept = lines.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("plugin-host-{pid}-stderr"))
            .spawn(move || {
                for line in io::BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    tracing::info!(target: "speckit_engine::plugin_output", pid, "{line}");
                    let mut kept = kept.lock().unwrap_or_else(|e| e.into_inner());
                    if kept.len() == STDERR_TAIL_LINES {
                        kept.pop_front();
                    }
                    kept.push_back(line.chars().take(500).collect());
                }
                let _ = done_tx.send(());
            });
        Self {
            lines,
            done: Arc::new(Mutex::new(spawned.ok().map(|_| done_rx))),
        }
    }

    /// The kept lines, once the stream has ended (waiting a moment for its last lines).
    fn last_lines(&self) -> String {
        if let Some(done) = self.done.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = done.recv_timeout(Duration::from_millis(500));
        }
        let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        lines.iter().cloned().collect::<Vec<_>>().join(" | ")
    }
}

/// Starts a host process from the long-lived spawner thread.
fn spawn(command: &HostCommand, memory_limit_mib: u64) -> io::Result<Child> {
    type Request = (HostCommand, u64, mpsc::SyncSender<io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (sender, receiver) = mpsc::channel::<Request>();
        let started = std::thread::Builder::new()
            .name("plugin-host-spawner".into())
            .spawn(move || {
                for (command, limit, reply) in receiver {
                    let _ = reply.send(spawn_here(&command, limit));
                }
            });
        if let Err(e) = started {
            tracing::error!("cannot start the plugin-host spawner thread: {e}");
        }
        Mutex::new(sender)
    });
    let (reply, result) = mpsc::sync_channel(1);
    spawner
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((command.clone(), memory_limit_mib, reply))
        .map_err(|_| io::Error::other("the plugin-host spawner thread is gone"))?;
    result
        .recv()
        .map_err(|_| io::Error::other("the plugin-host spawner thread is gone"))?
}

fn spawn_here(command: &HostCommand, memory_limit_mib: u64) -> io::Result<Child> {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(&command.program);
    cmd.args(&command.args)
        .env(HOST_ENV, PROTOCOL_VERSION.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let limit_bytes = memory_limit_mib.saturating_mul(1 << 20);
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
    // system calls (prctl, setrlimit), touching no memory the parent shares.
    unsafe {
        cmd.pre_exec(move || {
            #[cfg(target_os = "linux")]
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            if limit_bytes > 0 {
                let limit = libc::rlimit {
                    rlim_cur: limit_bytes as libc::rlim_t,
                    rlim_max: limit_bytes as libc::rlim_t,
                };
                if libc::setrlimit(libc::RLIMIT_DATA, &limit) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    cmd.spawn()
}
