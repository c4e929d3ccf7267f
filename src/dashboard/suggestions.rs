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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dashboard::{PatternUsage, Summary, Variant};

    fn variant(
        id: &str,
        predicted: f64,
        views: u64,
        interactions: u64,
        pattern: &str,
        last_updated: i64,
    ) -> Variant {
        let er = interactions as f64 / views.max(1) as f64;
        Variant {
            variant_id: id.into(),
            content: String::new(),
            predicted_er: predicted,
            pattern_used: Some(pattern.into()),
            posted_at: Some(0),
            status: "active".into(),
            view_count: views,
            interaction_count: interactions,
            current_er: er,
            performance_vs_prediction: Some((er - predicted) / predicted),
            last_updated: Some(last_updated),
            er_5m: None,
            er_15m: None,
            er_60m: None,
            er_series: Vec::new(),
            er_series_start: None,
            er_interval: None,
            verdict: None,
        }
    }

    fn snapshot(variants: Vec<Variant>) -> RawSnapshot {
        let mut s = RawSnapshot {
            offset: Some("1-0".into()),
            now: 1_000_000,
            summary: Summary::default(),
            active_variants: variants,
            active_variants_truncated: false,
            patterns: Vec::new(),
            recent_kills: Vec::new(),
        };
        s.enrich(&OptimizationConfig::default());
        s
    }

    fn kinds(s: &RawSnapshot) -> Vec<&'static str> {
        suggest(s, &OptimizationConfig::default())
            .iter()
            .map(|x| x.kind)
            .collect()
    }

    #[test]
    fn nothing_to_say_about_a_healthy_persona() {
        let s = snapshot(vec![
            variant("a", 0.05, 2000, 100, "p1", 999_000),
            variant("b", 0.05, 2000, 102, "p2", 999_000),
            variant("c", 0.05, 2000, 98, "p3", 999_000),
        ]);
        assert!(kinds(&s).is_empty(), "{:?}", kinds(&s));
    }

    #[test]
    fn kill_rate_rule() {
        let mut s = snapshot(vec![]);
        s.summary.posted_in_window = 10;
        s.summary.killed_in_window = 3; // 30%: not above
        assert!(!kinds(&s).contains(&"prediction_calibration"));
        s.summary.killed_in_window = 4; // 40%, but uncertain: medium
        let out = suggest(&s, &OptimizationConfig::default());
        assert_eq!(out[0].kind, "prediction_calibration");
        assert_eq!(out[0].priority, Priority::Medium);
        s.summary.posted_in_window = 100;
        s.summary.killed_in_window = 60; // the interval excludes 30%: high
        assert_eq!(
            suggest(&s, &OptimizationConfig::default())[0].priority,
            Priority::High
        );
        s.summary.posted_in_window = 4;
        s.summary.killed_in_window = 4; // too few posted to judge
        assert!(!kinds(&s).contains(&"prediction_calibration"));
    }

    #[test]
    fn bias_rule_needs_a_clear_shift() {
        let low = snapshot(vec![
            variant("a", 0.10, 2000, 100, "p1", 999_000),
            variant("b", 0.10, 2000, 110, "p2", 999_000),
            variant("c", 0.10, 2000, 90, "p3", 999_000),
        ]);
        assert!(kinds(&low).contains(&"prediction_bias_optimistic"));
        let high = snapshot(vec![
            variant("a", 0.02, 2000, 100, "p1", 999_000),
            variant("b", 0.02, 2000, 110, "p2", 999_000),
            variant("c", 0.02, 2000, 90, "p3", 999_000),
        ]);
        assert!(kinds(&high).contains(&"prediction_bias_pessimistic"));
        // Mean far from zero but all over the place: not clearly biased.
        let noisy = snapshot(vec![
            variant("a", 0.05, 2000, 400, "p1", 999_000),
            variant("b", 0.05, 2000, 20, "p2", 999_000),
            variant("c", 0.05, 2000, 5, "p3", 999_000),
        ]);
        assert!(
            !kinds(&noisy)
                .iter()
                .any(|k| k.starts_with("prediction_bias")),
            "{:?}",
            kinds(&noisy)
        );
        // Too few variants with enough views.
        let few = snapshot(vec![
            variant("a", 0.10, 2000, 50, "p1", 999_000),
            variant("b", 0.10, 50, 1, "p2", 999_000),
        ]);
        assert!(!kinds(&few).iter().any(|k| k.starts_with("prediction_bias")));
    }

    #[test]
    fn fatigue_and_leader_rules() {
        let mut s = snapshot(vec![
            variant("star", 0.05, 5000, 500, "hook", 999_000),
            variant("ok", 0.05, 2000, 100, "story", 999_000),
            variant("ok2", 0.05, 2000, 100, "list", 999_000),
        ]);
        let k = kinds(&s);
        assert!(k.contains(&"replicate_leader"), "{k:?}");
        assert!(!k.contains(&"pattern_fatigue"));
        s.patterns = vec![PatternUsage {
            pattern: "hook".into(),
            usage_count: 9,
            fatigued: true,
        }];
        let k = kinds(&s);
        assert!(k.contains(&"pattern_fatigue"));
        // The leader's pattern is fatigued: do not advise repeating it.
        assert!(!k.contains(&"replicate_leader"), "{k:?}");
    }

    #[test]
    fn leaders_need_confidence() {
        // 10% on 100 views vs 5% predicted: the interval [0.055, 0.174] excludes 5%.
        let s = snapshot(vec![variant("a", 0.05, 100, 10, "hook", 999_000)]);
        assert_eq!(s.active_variants[0].verdict, Some(Verdict::OverPerforming));
        // 8% on 100 views: the interval includes 5%.
        let s = snapshot(vec![variant("a", 0.05, 100, 8, "hook", 999_000)]);
        assert_eq!(s.active_variants[0].verdict, Some(Verdict::AsPredicted));
        assert!(!kinds(&s).contains(&"replicate_leader"));
        let s = snapshot(vec![variant("a", 0.05, 99, 50, "hook", 999_000)]);
        assert_eq!(
            s.active_variants[0].verdict,
            Some(Verdict::InsufficientData)
        );
        let s = snapshot(vec![variant("a", 0.10, 2000, 100, "hook", 999_000)]);
        assert_eq!(s.active_variants[0].verdict, Some(Verdict::UnderPerforming));
    }

    #[test]
    fn stale_rule() {
        let fresh = snapshot(vec![variant("a", 0.05, 2000, 100, "p", 1_000_000 - 60_000)]);
        assert!(!kinds(&fresh).contains(&"stale_variants"));
        let stale = snapshot(vec![variant(
            "a",
            0.05,
            2000,
            100,
            "p",
            1_000_000 - 31 * 60_000,
        )]);
        let out = suggest(&stale, &OptimizationConfig::default());
        assert_eq!(
            out.last().map(|x| (x.kind, x.priority)),
            Some(("stale_variants", Priority::Low))
        );
    }
}
