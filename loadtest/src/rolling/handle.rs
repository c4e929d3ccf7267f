//! The pools of a run wherever they are: in this process, or in worker
//! processes (`worker` subcommand; one process holds ~19k sockets here).
//! Protocol, one JSON object per line: parent → child the `Assignment`,
//! then `Command`s; child → parent `Event`s (progress every 200 ms, then
//! the result).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin};
use tokio::sync::oneshot;

use super::pool::{Pool, PoolResult, ProgressSnapshot};
use crate::scenario::Plan;
use crate::worker::{self, Assignment};

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Command {
    Restarting {
        on: bool,
    },
    Finish {
        streams: Vec<Vec<u64>>,
        floors: Vec<u64>,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Event {
    Progress(ProgressSnapshot),
    Result(Box<PoolResult>),
    Failed(String),
}

/// A pool the orchestrator drives, wherever it runs.
// A few per run: the size difference between the variants costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum PoolHandle {
    Local(Pool),
    Child(ChildPool),
}

pub struct ChildPool {
    child: Child,
    /// Commands are sent while the progress bar reads the pools.
    stdin: tokio::sync::Mutex<ChildStdin>,
    progress: Arc<Mutex<ProgressSnapshot>>,
    result: oneshot::Receiver<anyhow::Result<PoolResult>>,
}

impl PoolHandle {
    /// Starts `plan.workers` pools sharing the clients (in-process when 1).
    pub async fn start_all(plan: &Plan) -> anyhow::Result<Vec<PoolHandle>> {
        if plan.workers <= 1 {
            let pool = Pool::start(plan.clone(), 0..plan.subscribers)?;
            return Ok(vec![PoolHandle::Local(pool)]);
        }
        let mut out = Vec::new();
        for w in 0..plan.workers {
            let (child, stdin, stdout) = worker::spawn(plan, w).await?;
            let progress = Arc::new(Mutex::new(ProgressSnapshot::default()));
            let (tx, rx) = oneshot::channel();
            tokio::spawn(read_events(stdout, progress.clone(), tx));
            out.push(PoolHandle::Child(ChildPool {
                child,
                stdin: tokio::sync::Mutex::new(stdin),
                progress,
                result: rx,
            }));
        }
        Ok(out)
    }

    pub fn progress(&self) -> ProgressSnapshot {
        match self {
            PoolHandle::Local(p) => p.shared.snapshot(),
            PoolHandle::Child(c) => *c.progress.lock().expect("progress"),
        }
    }

    pub async fn set_restarting(&self, on: bool) -> anyhow::Result<()> {
        match self {
            PoolHandle::Local(p) => {
                p.set_restarting(on);
                Ok(())
            }
            PoolHandle::Child(c) => {
                let mut stdin = c.stdin.lock().await;
                worker::send(&mut stdin, &Command::Restarting { on }).await
            }
        }
    }

    pub async fn finish(self, streams: &[Vec<u64>], floors: &[u64]) -> anyhow::Result<PoolResult> {
        match self {
            PoolHandle::Local(p) => Ok(p.finish(streams, floors).await),
            PoolHandle::Child(mut c) => {
                let cmd = Command::Finish {
                    streams: streams.to_vec(),
                    floors: floors.to_vec(),
                };
                worker::send(c.stdin.get_mut(), &cmd).await?;
                let result = tokio::time::timeout(Duration::from_secs(60), c.result)
                    .await
                    .context("worker did not report within 60 s")?
                    .context("worker ended without a result")??;
                let _ = tokio::time::timeout(Duration::from_secs(5), c.child.wait()).await;
                Ok(result)
            }
        }
    }
}

pub fn total(pools: &[PoolHandle]) -> ProgressSnapshot {
    let mut t = ProgressSnapshot::default();
    for p in pools {
        t.add(&p.progress());
    }
    t
}

async fn read_events(
    stdout: tokio::process::ChildStdout,
    progress: Arc<Mutex<ProgressSnapshot>>,
    done: oneshot::Sender<anyhow::Result<PoolResult>>,
) {
    let mut lines = BufReader::new(stdout).lines();
    let outcome = loop {
        match lines.next_line().await {
            Ok(Some(line)) => match serde_json::from_str::<Event>(&line) {
                Ok(Event::Progress(p)) => *progress.lock().expect("progress") = p,
                Ok(Event::Result(r)) => break Ok(*r),
                Ok(Event::Failed(e)) => break Err(anyhow::anyhow!("worker failed: {e}")),
                Err(e) => break Err(anyhow::anyhow!("bad worker line: {e}")),
            },
            Ok(None) => break Err(anyhow::anyhow!("worker exited early")),
            Err(e) => break Err(e.into()),
        }
    };
    let _ = done.send(outcome);
}

/// The `worker` subcommand for a rolling-restart plan.
pub async fn child_main(
    a: Assignment,
    mut stdin: Lines<BufReader<tokio::io::Stdin>>,
) -> anyhow::Result<()> {
    let pool = match Pool::start(a.plan, a.range) {
        Ok(p) => p,
        Err(e) => {
            worker::emit(&Event::Failed(format!("{e:#}"))).await?;
            bail!("{e:#}");
        }
    };
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = tick.tick() => worker::emit(&Event::Progress(pool.shared.snapshot())).await?,
            line = stdin.next_line() => {
                let Some(line) = line? else { bail!("parent closed stdin") };
                match serde_json::from_str::<Command>(&line)? {
                    Command::Restarting { on } => pool.set_restarting(on),
                    Command::Finish { streams, floors } => {
                        let result = pool.finish(&streams, &floors).await;
                        worker::emit(&Event::Result(Box::new(result))).await?;
                        return Ok(());
                    }
                }
            }
        }
    }
}
