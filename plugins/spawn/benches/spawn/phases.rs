//! Where a spawn's time goes: each agent's steps from the engine's own
//! [`SpawnPhases`](speckit_spawn::SpawnPhases) and, from the stub agent's clock (`--times`),
//! when its `main` began and when it wrote its ready line. Printed as percentiles per step.
//!
//! The two clocks meet through the wall clock: the bench notes the wall time just before it
//! calls `spawn_agents` (the engine's own start is a few microseconds later) and the stub
//! prints wall times, so the cross-process steps (spawn to `main`, ready line written to
//! read) carry that offset, a few microseconds.

use speckit_spawn::SpawnPhases;
use speckit_testkit::bench::Summary;

/// The stub agent's own times, in microseconds from the request.
#[derive(Debug, Clone, Copy)]
pub struct StubTimes {
    pub main_us: u64,
    pub ready_us: u64,
}

/// Reads `stub_agent times: main_ns=N ready_ns=N` from an agent's stderr log.
pub fn stub_times(stderr_log: &str, request_wall_ns: u128) -> Option<StubTimes> {
    let line = stderr_log
        .lines()
        .find_map(|l| l.strip_prefix("stub_agent times: "))?;
    let mut main_ns = None;
    let mut ready_ns = None;
    for field in line.split_whitespace() {
        if let Some(v) = field.strip_prefix("main_ns=") {
            main_ns = v.parse::<u128>().ok();
        } else if let Some(v) = field.strip_prefix("ready_ns=") {
            ready_ns = v.parse::<u128>().ok();
        }
    }
    let since = |ns: u128| (ns.saturating_sub(request_wall_ns) / 1000) as u64;
    Some(StubTimes {
        main_us: since(main_ns?),
        ready_us: since(ready_ns?),
    })
}

/// One agent of a measured batch.
#[derive(Debug, Clone)]
pub struct AgentSample {
    pub spawn_us: u64,
    pub phases: SpawnPhases,
    pub stub: Option<StubTimes>,
}

/// One measured batch.
#[derive(Debug, Clone)]
pub struct BatchSample {
    pub total_us: u64,
    pub setup_us: u64,
    pub agents: Vec<AgentSample>,
}

impl BatchSample {
    pub fn spawn_times(&self) -> impl Iterator<Item = u64> + '_ {
        self.agents.iter().map(|a| a.spawn_us)
    }
}

/// The steps of many batches, each a sample of microseconds.
pub struct Breakdown {
    steps: Vec<(&'static str, Vec<u64>)>,
}

const SETUP: &str = "batch set-up (request to tasks started)";
const TASK: &str = "set-up done to the agent's task running";
const SLOT: &str = "waiting for a slot";
const PROMPT: &str = "prompt file written";
const SPAWN: &str = "posix_spawn + exec (spawn call)";
const ROW: &str = "row committed (from the request; overlaps)";
const TO_MAIN: &str = "spawn call to the agent's main()";
const OWN_WAIT: &str = "the agent's own wait before ready";
const WAKE: &str = "ready line written to read by the engine";
const RECORD: &str = "ready line read to agent spawned";
const JOIN: &str = "last agent spawned to batch returned";
const ABOVE_AGENT: &str = "batch total minus slowest agent's own wait";

impl Default for Breakdown {
    fn default() -> Self {
        let steps = [
            SETUP,
            TASK,
            SLOT,
            PROMPT,
            SPAWN,
            ROW,
            TO_MAIN,
            OWN_WAIT,
            WAKE,
            RECORD,
            JOIN,
            ABOVE_AGENT,
        ];
        Self {
            steps: steps.iter().map(|s| (*s, Vec::new())).collect(),
        }
    }
}

impl Breakdown {
    fn push(&mut self, step: &str, value: u64) {
        if let Some((_, sample)) = self.steps.iter_mut().find(|(s, _)| *s == step) {
            sample.push(value);
        }
    }

    pub fn add(&mut self, batch: &BatchSample) {
        let mut slowest_own_wait = 0;
        self.push(SETUP, batch.setup_us);
        for agent in &batch.agents {
            let p = agent.phases;
            self.push(TASK, p.task_started_us.saturating_sub(batch.setup_us));
            self.push(SLOT, p.slot_us.saturating_sub(p.task_started_us));
            self.push(PROMPT, p.prompt_file_us.saturating_sub(p.slot_us));
            self.push(SPAWN, p.process_spawned_us.saturating_sub(p.prompt_file_us));
            self.push(ROW, p.row_committed_us);
            let running = p.row_committed_us.max(p.process_spawned_us);
            if let Some(stub) = agent.stub {
                self.push(TO_MAIN, stub.main_us.saturating_sub(p.prompt_file_us));
                let own_wait = stub.ready_us.saturating_sub(stub.main_us);
                slowest_own_wait = slowest_own_wait.max(own_wait);
                self.push(OWN_WAIT, own_wait);
                if p.ready_line_us > 0 {
                    self.push(WAKE, p.ready_line_us.saturating_sub(stub.ready_us));
                }
            }
            let ready = if p.ready_line_us > 0 {
                p.ready_line_us.max(running)
            } else {
                running
            };
            self.push(RECORD, agent.spawn_us.saturating_sub(ready));
        }
        let last = batch.spawn_times().max().unwrap_or(0);
        self.push(JOIN, batch.total_us.saturating_sub(last));
        self.push(ABOVE_AGENT, batch.total_us.saturating_sub(slowest_own_wait));
    }

    pub fn print(&self, title: &str) {
        println!("  where the time goes ({title}):");
        for (step, sample) in &self.steps {
            if !sample.is_empty() {
                Summary::print(step, sample);
            }
        }
    }
}

/// Checks the parser on a known line (the bench runs it first: a bench binary has no
/// unit tests).
pub fn check() {
    let t = stub_times(
        "x\nstub_agent times: main_ns=2000000 ready_ns=52000000\n",
        1_000_000,
    )
    .expect("parsed");
    assert_eq!((t.main_us, t.ready_us), (1_000, 51_000));
    assert!(stub_times("nothing", 0).is_none());
}
