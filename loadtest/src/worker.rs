//! Subscriber pools, in this process or in worker processes.
//!
//! One process holds at most ~19k sockets here (open-file limit 20,000), so
//! `--workers K` starts K copies of this binary (`worker` subcommand), each
//! with a slice of the subscribers. Protocol, one JSON object per line:
//! parent → child stdin: the `Assignment`, then `Command`s; child → parent
//! stdout: `Event`s (progress every 200 ms, then the result).

use std::ops::Range;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command as Process};
use tokio::sync::oneshot;

use crate::pool::{Pool, PoolResult, ProgressSnapshot};
use crate::scenario::Plan;

#[derive(Debug, Serialize, Deserialize)]
pub struct Assignment {
    pub plan: Plan,
    pub range: Range<u32>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Command {
    Begin,
    Finish { published: Vec<u64> },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Event {
    Progress(ProgressSnapshot),
    Result(Box<PoolResult>),
    Failed(String),
}

/// A pool the orchestrator drives, wherever it runs.
// One per run: the size difference between the variants costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum PoolHandle {
    Local(Pool),
    Child(ChildPool),
}

pub struct ChildPool {
    child: Child,
    stdin: ChildStdin,
    progress: Arc<Mutex<ProgressSnapshot>>,
    result: oneshot::Receiver<anyhow::Result<PoolResult>>,
}

impl PoolHandle {
    /// The process this pool runs in (its CPU counts as the client's).
    pub fn pid(&self) -> Option<u32> {
        match self {
            PoolHandle::Local(_) => Some(std::process::id()),
            PoolHandle::Child(c) => c.child.id(),
        }
    }

    /// Starts `workers` pools sharing the subscribers (in-process when 1).
    pub async fn start_all(plan: &Plan) -> anyhow::Result<Vec<PoolHandle>> {
        let n = plan.subscribers;
        if plan.workers <= 1 {
            return Ok(vec![PoolHandle::Local(Pool::start(plan.clone(), 0..n)?)]);
        }
        let mut out = Vec::new();
        for w in 0..plan.workers {
            let (child, stdin, stdout) = spawn(plan, w).await?;
            let progress = Arc::new(Mutex::new(ProgressSnapshot::default()));
            let (tx, rx) = oneshot::channel();
            tokio::spawn(read_events(stdout, progress.clone(), tx));
            out.push(PoolHandle::Child(ChildPool {
                child,
                stdin,
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

    pub async fn begin(&mut self) -> anyhow::Result<()> {
        match self {
            PoolHandle::Local(p) => {
                p.begin_publishing();
                Ok(())
            }
            PoolHandle::Child(c) => send(&mut c.stdin, &Command::Begin).await,
        }
    }

    pub async fn finish(self, published: &[u64]) -> anyhow::Result<PoolResult> {
        match self {
            PoolHandle::Local(p) => Ok(p.finish(published).await),
            PoolHandle::Child(mut c) => {
                let cmd = Command::Finish {
                    published: published.to_vec(),
                };
                send(&mut c.stdin, &cmd).await?;
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

/// Starts worker process `w` of `plan.workers` and hands it its share of
/// the subscribers (and of the runtime threads).
pub async fn spawn(plan: &Plan, w: u32) -> anyhow::Result<(Child, ChildStdin, ChildStdout)> {
    let exe = std::env::current_exe().context("locate own executable")?;
    let (n, k) = (plan.subscribers, plan.workers.max(1));
    let range = (n * w / k)..(n * (w + 1) / k);
    let mut child_plan = plan.clone();
    child_plan.threads = plan.threads.div_ceil(k as usize).max(1);
    let mut child = Process::new(&exe)
        .arg("worker")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("spawn worker process")?;
    let mut stdin = child.stdin.take().context("worker stdin")?;
    let stdout = child.stdout.take().context("worker stdout")?;
    let assignment = Assignment {
        plan: child_plan,
        range,
    };
    send(&mut stdin, &assignment).await?;
    Ok((child, stdin, stdout))
}

/// Writes one JSON line to a worker.
pub async fn send(stdin: &mut ChildStdin, cmd: &impl Serialize) -> anyhow::Result<()> {
    let line = serde_json::to_string(cmd)?;
    stdin
        .write_all(format!("{line}\n").as_bytes())
        .await
        .context("write to worker")
}

async fn read_events(
    stdout: ChildStdout,
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

/// The `worker` subcommand: runs one pool as told on stdin.
pub async fn child_main(first: Option<String>) -> anyhow::Result<()> {
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let first = match first {
        Some(f) => f,
        None => stdin.next_line().await?.context("no assignment on stdin")?,
    };
    let a: Assignment = serde_json::from_str(&first).context("assignment")?;
    if a.plan.rolling.is_some() {
        return crate::rolling::handle::child_main(a, stdin).await;
    }
    let pool = match Pool::start(a.plan, a.range) {
        Ok(p) => p,
        Err(e) => {
            emit(&Event::Failed(format!("{e:#}"))).await?;
            bail!("{e:#}");
        }
    };
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = tick.tick() => emit(&Event::Progress(pool.shared.snapshot())).await?,
            line = stdin.next_line() => {
                let Some(line) = line? else { bail!("parent closed stdin") };
                match serde_json::from_str::<Command>(&line)? {
                    Command::Begin => pool.begin_publishing(),
                    Command::Finish { published } => {
                        let result = pool.finish(&published).await;
                        emit(&Event::Result(Box::new(result))).await?;
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// Writes one JSON line to the parent.
pub async fn emit(e: &impl Serialize) -> anyhow::Result<()> {
    let mut out = tokio::io::stdout();
    let line = serde_json::to_string(e)?;
    out.write_all(format!("{line}\n").as_bytes()).await?;
    out.flush().await?;
    Ok(())
}
