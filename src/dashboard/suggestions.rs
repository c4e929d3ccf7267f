//! Rule-based optimization suggestions. Each rule states the condition it
//! fires on and why; docs/api.md lists them with their thresholds.

use serde::Serialize;

use super::{wilson, RawSnapshot, Verdict};
use crate::config::OptimizationConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    High,
    Medium,
    Low,
}

#[derive(Debug, Clone, Serialize)]
pub struct Suggestion {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub priority: Priority,
    pub title: String,
    pub description: String,
    pub action: String,
}

/// Every rule, highest priority first.
pub fn suggest(s: &RawSnapshot, cfg: &OptimizationConfig) -> Vec<Suggestion> {
    let mut out = Vec::new();
    kill_rate(s, cfg, &mut out);
    prediction_bias(s, cfg, &mut out);
    fatigue(s, &mut out);
    leaders(s, &mut out);
    stale(s, cfg, &mut out);
    out.sort_by_key(|x| x.priority);
    out
}

/// Many early kills mean predictions promise more than variants deliver.
/// High priority when even the interval's lower bound is over the threshold.
fn kill_rate(s: &RawSnapshot, cfg: &OptimizationConfig, out: &mut Vec<Suggestion>) {
    let (posted, killed) = (s.summary.posted_in_window, s.summary.killed_in_window);
    if posted < cfg.kill_rate_min_posted || posted == 0 {
        return;
    }
    let rate = killed as f64 / posted as f64;
    if rate <= cfg.kill_rate_threshold {
        return;
    }
    let lower = wilson::interval(killed, posted).map_or(0.0, |(lo, _)| lo);
    out.push(Suggestion {
        kind: "prediction_calibration",
        priority: if lower > cfg.kill_rate_threshold { Priority::High } else { Priority::Medium },
        title: "High early-kill rate".into(),
        description: format!(
            "{killed} of {posted} variants posted in the window were killed early ({:.0}%, above {:.0}%).",
            rate * 100.0,
            cfg.kill_rate_threshold * 100.0
        ),
        action: "Recalibrate the engagement predictions against recent actuals before posting more variants.".into(),
    });
}

/// Predictions that are systematically off: the mean performance against
/// prediction is past the threshold and more than two standard errors from 0.
fn prediction_bias(s: &RawSnapshot, cfg: &OptimizationConfig, out: &mut Vec<Suggestion>) {
    let xs: Vec<f64> = s
        .active_variants
        .iter()
        .filter(|v| v.view_count >= cfg.min_views)
        .filter_map(|v| v.performance_vs_prediction)
        .collect();
    if xs.len() < cfg.bias_min_variants.max(2) {
        return;
    }
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let se = (var / n).sqrt();
    if mean.abs() <= cfg.bias_threshold || (se > 0.0 && mean.abs() < 2.0 * se) {
        return;
    }
    let (kind, title, action) = if mean < 0.0 {
        (
            "prediction_bias_optimistic",
            "Predictions are too optimistic",
            "Lower predicted engagement rates, or review what the model overrates.",
        )
    } else {
        (
            "prediction_bias_pessimistic",
            "Predictions are too pessimistic",
            "Raise predicted engagement rates so kill thresholds do not spare weak variants.",
        )
    };
    out.push(Suggestion {
        kind,
        priority: Priority::Medium,
        title: title.into(),
        description: format!(
            "Across {} variants, actual engagement is {:+.0}% against prediction on average (±{:.0}% standard error).",
            xs.len(),
            mean * 100.0,
            se * 100.0
        ),
        action: action.into(),
    });
}

/// A pattern used past the fatigue threshold wears its audience out.
fn fatigue(s: &RawSnapshot, out: &mut Vec<Suggestion>) {
    for p in s.fatigued() {
        out.push(Suggestion {
            kind: "pattern_fatigue",
            priority: Priority::Medium,
            title: format!("Pattern '{}' is overused", p.pattern),
            description: format!(
                "'{}' was used {} times in the rolling window.",
                p.pattern, p.usage_count
            ),
            action: format!(
                "Diversify: pause '{}' and try other patterns for a while.",
                p.pattern
            ),
        });
    }
}

/// Variants that beat their prediction with confidence show a pattern worth repeating.
fn leaders(s: &RawSnapshot, out: &mut Vec<Suggestion>) {
    let mut best: Vec<(&str, &str, f64)> = s
        .active_variants
        .iter()
        .filter(|v| v.verdict == Some(Verdict::OverPerforming))
        .filter_map(|v| {
            Some((
                v.pattern_used.as_deref()?,
                v.variant_id.as_str(),
                v.current_er,
            ))
        })
        .collect();
    best.sort_by(|a, b| b.2.total_cmp(&a.2));
    let fatigued: Vec<&str> = s.fatigued().map(|p| p.pattern.as_str()).collect();
    if let Some((pattern, variant, er)) = best.into_iter().find(|(p, _, _)| !fatigued.contains(p)) {
        out.push(Suggestion {
            kind: "replicate_leader",
            priority: Priority::Medium,
            title: format!("Replicate '{pattern}'"),
            description: format!(
                "{variant} ({pattern}) engages at {:.1}%, above its prediction with 95% confidence.",
                er * 100.0
            ),
            action: format!("Post more variants built on '{pattern}'."),
        });
    }
}

/// Active variants without updates may have a broken monitor.
fn stale(s: &RawSnapshot, cfg: &OptimizationConfig, out: &mut Vec<Suggestion>) {
    let limit = cfg.stale_after.as_millis() as i64;
    let stale: Vec<&str> = s
        .active_variants
        .iter()
        .filter(|v| {
            let last = v.last_updated.or(v.posted_at).unwrap_or(s.now);
            s.now - last > limit
        })
        .map(|v| v.variant_id.as_str())
        .collect();
    if stale.is_empty() {
        return;
    }
    let shown: Vec<&str> = stale.iter().take(5).copied().collect();
    out.push(Suggestion {
        kind: "stale_variants",
        priority: Priority::Low,
        title: format!("{} active variant(s) without updates", stale.len()),
        description: format!(
            "No performance update for over {} minutes: {}{}.",
            limit / 60_000,
            shown.join(", "),
            if stale.len() > shown.len() {
                ", …"
            } else {
                ""
            }
        ),
        action:
            "Check the monitors feeding these variants, or kill variants that are no longer live."
                .into(),
    });
}
