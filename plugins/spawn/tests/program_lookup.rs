//! A program named without a folder (as the host names its agents: `claude`, `gemini`) is
//! looked up on the agent's own `PATH` before it starts, as `execvp` would in the child: a
//! file that is not executable is passed over, the agent still sees the name as its
//! `argv[0]`, and a name found nowhere fails that agent with a message naming it. Found
//! there, it starts by `posix_spawn`, not by a `fork` of the engine, which copies the page
//! tables of the whole process (of the host application that embeds the engine).

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use speckit_spawn::{spawn_agents, AgentPolicy, FailureCause, SpawnRequest};
use support::*;

/// An agent `fake-agent` (a link to `/bin/sh`) that writes its own `argv[0]` to its output
/// file, with `PATH` set to `path` for it alone.
fn named_agent(path: &str) -> AgentPolicy {
    let mut agent = shell(
        "named",
        // The shell's /proc cmdline starts with the argv[0] it was given.
        "tr '\\000' '\\n' < /proc/$$/cmdline | head -n 1 > \"$1\"",
        &["{output_file}"],
    );
    agent.command = "fake-agent".into();
    agent.env = BTreeMap::from([("PATH".to_string(), path.to_string())]);
    agent
}

/// `not-executable/fake-agent` (mode 0644) and `bin/fake-agent` (a link to /bin/sh).
fn two_folders(root: &Path) -> (String, String) {
    let (first, second) = (root.join("not-executable"), root.join("bin"));
    std::fs::create_dir_all(&first).unwrap();
    std::fs::create_dir_all(&second).unwrap();
    let plain = first.join("fake-agent");
    std::fs::write(&plain, "not a program\n").unwrap();
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::os::unix::fs::symlink("/bin/sh", second.join("fake-agent")).unwrap();
    (first.display().to_string(), second.display().to_string())
}

/// Times `fork` ran in this process: glibc runs `pthread_atfork` handlers on every
/// `fork()`, never on `posix_spawn` (a `clone` of its own).
static FORKS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn count_fork() {
    FORKS.fetch_add(1, Ordering::SeqCst);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_name_runs_the_first_executable_on_the_agents_own_path() {
    let fx = Fixture::new();
    let (not_executable, bin) = two_folders(fx.dir.path());
    // The engine's own PATH does not hold the folder: the agent's does.
    assert!(!std::env::var("PATH").unwrap_or_default().contains(&bin));
    let agent = named_agent(&format!("{not_executable}:{bin}:/usr/bin:/bin"));
    let policy = fx.policy(vec![agent], |_| {});
    // SAFETY: registers a handler that only bumps an atomic, for the process's lifetime.
    assert_eq!(
        unsafe { libc::pthread_atfork(Some(count_fork), None, None) },
        0
    );
    let completions = fx.run_batch(&policy, "p").await;
    assert!(completions[0].succeeded(), "{:?}", completions[0].failure);
    let argv0 = std::fs::read_to_string(&completions[0].response_path).unwrap();
    assert_eq!(
        argv0.trim(),
        "fake-agent",
        "the agent sees the name it was given"
    );
    assert_eq!(
        FORKS.load(Ordering::SeqCst),
        0,
        "started by posix_spawn, not by a fork of the engine"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_name_found_nowhere_fails_its_agent_naming_the_command() {
    let fx = Fixture::new();
    let (not_executable, _) = two_folders(fx.dir.path());
    let policy = fx.policy(
        vec![named_agent(&not_executable), stub("healthy", &[])],
        |_| {},
    );
    let batch = spawn_agents(
        &fx.storage,
        &policy,
        &fx.events,
        SpawnRequest::new(spec("SPEC-KIT-900"), "plan", "p"),
    )
    .await
    .expect("the batch itself runs");
    assert_eq!(batch.handles.len(), 1, "the other agent starts");
    let failure = &batch.failures[0];
    assert_eq!(failure.agent, "named");
    assert!(failure.pid.is_none(), "nothing started");
    match &failure.cause {
        FailureCause::Start {
            command, message, ..
        } => {
            assert_eq!(command, "fake-agent");
            assert!(
                message.contains(
                    "no executable file named \"fake-agent\" in the 1 folders of the agent's PATH"
                ),
                "{message}"
            );
        }
        other => panic!("expected a start failure, got {other:?}"),
    }
    for handle in batch.handles {
        handle.wait().await.unwrap();
    }
    assert_eq!(
        fx.count("SELECT COUNT(*) FROM agent_executions WHERE agent_name = 'named' AND completed_at IS NULL")
            .await,
        0,
        "no row is left looking like a running agent"
    );
}
