//! `pulsegate simulate`: a demo monitor that reports realistic events for a
//! few personas through `FCALL pulse_ingest`, exactly as a real monitor in
//! any language would: variants are posted, gather views and interactions,
//! and the weak ones are killed early.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use fred::prelude::*;
use serde_json::json;

mod tasks;

use crate::cli::SimulateArgs;
use crate::keys::{Keys, PersonaId};
use crate::redis::functions;

const PATTERNS: &[&str] = &[
    "question_hook",
    "contrarian_take",
    "listicle",
    "personal_story",
    "data_reveal",
    "behind_the_scenes",
];
const HOOKS: &[&str] = &[
    "Nobody talks about this, but",
    "Three things I learned from",
    "Hot take:",
    "What happens when you stop",
    "The numbers behind",
    "A quick story about",
];
const TOPICS: &[&str] = &[
    "shipping on Fridays",
    "morning routines",
    "remote teams",
    "pricing experiments",
    "writing every day",
    "the first 1,000 users",
];
const MAX_ACTIVE: usize = 10;

/// A tiny deterministic PRNG (xorshift); the demo needs variety, not crypto.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

struct Variant {
    id: String,
    predicted: f64,
    /// The rate the audience really engages at (unknown to the monitor).
    true_er: f64,
    views: u64,
    interactions: u64,
}

#[derive(Default)]
struct Persona {
    active: Vec<Variant>,
    posted: u64,
}

pub async fn run(args: SimulateArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.rate > 0.0 && args.rate <= 100_000.0,
        "--rate must be in (0, 100000]"
    );
    let keys = Keys::new(&args.key_prefix);
    let personas: Vec<PersonaId> = args
        .personas
        .iter()
        .map(|p| PersonaId::parse(p, 64).with_context(|| format!("persona id `{p}`")))
        .collect::<Result<_, _>>()?;
    anyhow::ensure!(
        !personas.is_empty(),
        "--personas must name at least one persona"
    );
    let config = fred::prelude::Config::from_url(&args.redis_url).context("--redis-url")?;
    let client = Client::new(config, None, None, None);
    client.init().await.context("cannot connect to Redis")?;
    // The gateway loads the library with the deployment's defaults; only
    // load the built-in one when no gateway has done so yet.
    let loaded: Result<String, _> = client
        .fcall_ro("pulse_version", Vec::<String>::new(), Vec::<String>::new())
        .await;
    if loaded.is_err() {
        functions::load(&client)
            .await
            .context("cannot load lua/pulse.lua")?;
    }

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(42)
        | 1;
    let mut rng = Rng(seed);
    let mut state: HashMap<PersonaId, Persona> = personas
        .iter()
        .map(|p| (p.clone(), Persona::default()))
        .collect();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let deadline = args
        .duration
        .map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
    let (mut sent, mut refused) = (0u64, 0u64);
    let running = if args.task_rate > 0.0 { args.tasks } else { 0 };
    let mut tasks = tasks::Tasks::new(&args.task_namespace, running);
    // A line every 1/task_rate s, beside the persona events.
    let task_period = Duration::from_secs_f64(1.0 / args.task_rate.clamp(1e-3, 1e5));
    let mut task_tick = tokio::time::interval(task_period);
    task_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(personas = ?args.personas, rate = args.rate, tasks = args.tasks, "simulating monitors");
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = task_tick.tick() => {
                tasks.step(&client, &keys, &mut rng).await;
                continue;
            }
            _ = tokio::signal::ctrl_c() => break,
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d)
            || args.events.is_some_and(|n| sent >= n)
        {
            break;
        }
        let persona = &personas[(rng.next() % personas.len() as u64) as usize];
        let Some(p) = state.get_mut(persona) else {
            continue;
        };
        let event = next_event(p, persona, &mut rng);
        let result: Result<String, _> = client
            .fcall(
                "pulse_ingest",
                vec![keys.base(persona)],
                vec![event.to_string()],
            )
            .await;
        match result {
            Ok(_) => sent += 1,
            Err(e) => {
                refused += 1;
                tracing::warn!(error = %e, "event refused");
            }
        }
        if (sent + refused) % 500 == 0 {
            tracing::info!(sent, refused, "progress");
        }
    }
    tracing::info!(sent, refused, "simulation stopped");
    let _ = client.quit().await;
    Ok(())
}

/// Decides what happens next to one persona and returns the event.
fn next_event(p: &mut Persona, persona: &PersonaId, rng: &mut Rng) -> serde_json::Value {
    let now = now_ms();
    if p.active.len() < 3 || (p.active.len() < MAX_ACTIVE && rng.unit() < 0.08) {
        p.posted += 1;
        let predicted = 0.02 + rng.unit() * 0.08;
        // Some variants beat their prediction, many fall short.
        let true_er = (predicted * (0.35 + rng.unit() * 1.1)).max(0.002);
        let id = format!("{}_v{}_{}", persona, p.posted, now % 100_000);
        let content = format!("{} {}", rng.pick(HOOKS), rng.pick(TOPICS));
        p.active.push(Variant {
            id: id.clone(),
            predicted,
            true_er,
            views: 0,
            interactions: 0,
        });
        return json!({
            "type": "variant_posted",
            "variant_id": id,
            "content": content,
            "predicted_er": (predicted * 1e4).round() / 1e4,
            "pattern_used": rng.pick(PATTERNS),
            "posted_at": now,
        });
    }
    let idx = (rng.next() % p.active.len() as u64) as usize;
    let v = &mut p.active[idx];
    let er = if v.views > 0 {
        v.interactions as f64 / v.views as f64
    } else {
        0.0
    };
    if v.views > 800 && er < v.predicted * 0.6 && rng.unit() < 0.3 {
        let v = p.active.swap_remove(idx);
        return json!({
            "type": "early_kill",
            "variant_id": v.id,
            "reason": "low_engagement",
            "final_engagement_rate": (er * 1e6).round() / 1e6,
            "sample_size": v.views,
        });
    }
    let new_views = 20 + rng.next() % 180;
    let mut new_interactions = 0;
    for _ in 0..new_views {
        if rng.unit() < v.true_er {
            new_interactions += 1;
        }
    }
    v.views += new_views;
    v.interactions += new_interactions;
    json!({
        "type": "performance_update",
        "variant_id": v.id,
        "view_count": v.views,
        "interaction_count": v.interactions,
    })
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
