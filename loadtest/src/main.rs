//! pulsegate-loadtest: the bundled load-test harness (filled in by the load-test issue).

fn main() {
    eprintln!("pulsegate-loadtest: not implemented yet; see docs/benchmarks.md");
    std::process::exit(2);
}
