//! An agent's environment end to end: the engine's logging variables stripped, the host's
//! key aliases and defaults applied, the agent's own `env` over them. Alone in its test
//! binary because it sets the process environment the agents inherit from.

mod support;

use std::collections::BTreeMap;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_gets_the_engines_environment_by_the_hosts_rule() {
    // Set before any agent starts; no other test shares this process.
    std::env::set_var("RUST_LOG", "trace");
    std::env::set_var("RUST_LOG_STYLE", "always");
    std::env::set_var("GOOGLE_API_KEY", "google-key");
    std::env::set_var("SPECKIT_TEST_KEPT", "kept");
    let fx = Fixture::new();
    let mut agent = shell("printenv", "env > \"$1\"", &["{output_file}"]);
    agent.env = BTreeMap::from([("DISABLE_ERROR_REPORTING".to_string(), "0".to_string())]);
    let policy = fx.policy(vec![agent], |_| {});
    let mut outputs = Vec::new();
    for completion in fx.run_batch(&policy, "p").await {
        assert!(completion.succeeded(), "{:?}", completion.failure);
        outputs.push(std::fs::read_to_string(&completion.response_path).unwrap());
    }
    let env: BTreeMap<&str, &str> = outputs[0]
        .lines()
        .filter_map(|line| line.split_once('='))
        .collect();
    assert_eq!(
        env.get("RUST_LOG"),
        None,
        "the engine's logging is not the agent's"
    );
    assert_eq!(env.get("RUST_LOG_STYLE"), None);
    assert_eq!(env.get("SPECKIT_TEST_KEPT"), Some(&"kept"));
    assert_eq!(
        env.get("GEMINI_API_KEY"),
        Some(&"google-key"),
        "the host's alias"
    );
    assert_eq!(
        env.get("DISABLE_AUTOUPDATER"),
        Some(&"1"),
        "the host's default"
    );
    assert_eq!(
        env.get("DISABLE_ERROR_REPORTING"),
        Some(&"0"),
        "the agent's own env wins"
    );
    assert!(env.contains_key("PATH"));
}
