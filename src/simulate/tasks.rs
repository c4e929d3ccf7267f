//! The demo's agent tasks: each publishes `task_output` lines on
//! `task:<id>` and ends with a `task_status`, through `FCALL pulse_publish`
//! as any backend would (`docs/redis.md`). A few run at once; a finished
//! one is replaced by a new one.

use fred::prelude::*;
use serde_json::json;

use super::{now_ms, Rng};
use crate::channel_name::{self, Channel};
use crate::keys::Keys;

const STEPS: &[&str] = &[
    "planning the next step",
    "calling tool search_docs",
    "reading 3 results",
    "calling tool run_tests",
    "tests: 42 passed, 0 failed",
    "drafting the answer",
    "checking the answer against the question",
];

struct Task {
    id: String,
    lines: u32,
    /// Lines it writes before it ends.
    length: u32,
    started_ms: u64,
}

/// The running tasks of one simulation.
pub struct Tasks {
    namespace: String,
    running: Vec<Task>,
    started: u64,
    /// Turned off after Redis refused the namespace (no gateway loaded it).
    off: bool,
}

impl Tasks {
    pub fn new(namespace: &str, count: usize) -> Self {
        Self {
            namespace: namespace.to_owned(),
            running: Vec::with_capacity(count),
            started: 0,
            off: count == 0,
        }
        .filled(count)
    }

    fn filled(mut self, count: usize) -> Self {
        while self.running.len() < count {
            self.start();
        }
        self
    }

    fn start(&mut self) {
        self.started += 1;
        let salt = now_ms() % 100_000;
        self.running.push(Task {
            id: format!("{}-{salt}", self.started),
            lines: 0,
            length: 6 + (salt % 10) as u32,
            started_ms: now_ms(),
        });
    }

    /// Publishes the next line of one task (or its completion).
    pub async fn step(&mut self, client: &Client, keys: &Keys, rng: &mut Rng) {
        if self.off || self.running.is_empty() {
            return;
        }
        let i = (rng.next() % self.running.len() as u64) as usize;
        let task = &mut self.running[i];
        let done = task.lines >= task.length;
        let message = if done {
            let ok = rng.unit() < 0.85;
            json!({
                "type": "task_status",
                "data": {
                    "task_id": task.id,
                    "status": if ok { "succeeded" } else { "failed" },
                    "lines": task.lines,
                    "duration_ms": now_ms().saturating_sub(task.started_ms),
                    "cost_usd": (rng.unit() * 0.05 * 1e4).round() / 1e4,
                }
            })
        } else {
            task.lines += 1;
            json!({
                "type": "task_output",
                "data": {"task_id": task.id, "seq": task.lines, "line": rng.pick(STEPS)}
            })
        };
        let name = format!("{}:{}", self.namespace, task.id);
        let Ok(Channel::Named(channel)) = channel_name::parse(&name, 64) else {
            tracing::warn!(%name, "not a channel name; no tasks simulated");
            self.off = true;
            return;
        };
        let result: Result<Option<String>, _> = client
            .fcall(
                "pulse_publish",
                vec![keys.channel_base(channel.as_str())],
                vec![message.to_string()],
            )
            .await;
        if let Err(e) = result {
            if e.details().contains("field=namespace") {
                tracing::warn!(error = %e, "no gateway declared the task namespace; no tasks simulated");
                self.off = true;
                return;
            }
            tracing::warn!(error = %e, "task message refused");
        }
        if done {
            self.running.swap_remove(i);
            self.start();
        }
    }
}
