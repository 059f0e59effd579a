//! A plugin host and nothing else: for programs that cannot serve as one themselves (the
//! engine's own tests and benches, which are not `main` functions of ours). The
//! `speckit-hygiene` binary serves as its own plugin host.

fn main() {
    speckit_engine::dynamic::serve_if_requested();
    eprintln!(
        "speckit-plugin-host: started by hand; the engine starts it with --speckit-plugin-host and SPECKIT_PLUGIN_HOST set"
    );
    std::process::exit(2);
}
