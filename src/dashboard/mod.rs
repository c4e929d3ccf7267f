//! The dashboard's view of a persona, built from the atomic snapshot the
//! `pulse_snapshot` function returns: typed, enriched with Wilson intervals
//! and verdicts, and shaped for `initial_data` and the REST routes.

pub mod suggestions;
pub mod wilson;

use serde::{Deserialize, Serialize};

use crate::config::OptimizationConfig;

/// `pulse_snapshot`'s answer (lua/README.md documents it).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RawSnapshot {
    pub offset: Option<String>,
    /// Redis time of the snapshot, ms.
    pub now: i64,
    pub summary: Summary,
    #[serde(default)]
    pub active_variants: Vec<Variant>,
    #[serde(default)]
    pub active_variants_truncated: bool,
    #[serde(default)]
    pub patterns: Vec<PatternUsage>,
    #[serde(default)]
    pub recent_kills: Vec<Kill>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Summary {
    pub total_variants: u64,
    pub active_variants: u64,
    pub avg_engagement_rate: Option<f64>,
    pub kills_today: u64,
    pub avg_time_to_kill_minutes: Option<f64>,
    pub kill_rate: Option<f64>,
    pub posted_in_window: u64,
    pub killed_in_window: u64,
    pub kill_rate_window_ms: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Variant {
    pub variant_id: String,
    pub content: String,
    pub predicted_er: f64,
    pub pattern_used: Option<String>,
    pub posted_at: Option<i64>,
    pub status: String,
    pub view_count: u64,
    pub interaction_count: u64,
    pub current_er: f64,
    pub performance_vs_prediction: Option<f64>,
    pub last_updated: Option<i64>,
    pub er_5m: Option<f64>,
    pub er_15m: Option<f64>,
    pub er_60m: Option<f64>,
    #[serde(default)]
    pub er_series: Vec<Option<f64>>,
    pub er_series_start: Option<i64>,
    /// 95% Wilson interval of the ER (added here).
    #[serde(default)]
    pub er_interval: Option<[f64; 2]>,
    /// `over_performing`, `under_performing`, `as_predicted` or `insufficient_data`.
    #[serde(default)]
    pub verdict: Option<Verdict>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    OverPerforming,
    UnderPerforming,
    AsPredicted,
    InsufficientData,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct PatternUsage {
    pub pattern: String,
    pub usage_count: u64,
    pub fatigued: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Kill {
    pub variant_id: String,
    pub killed_at: Option<i64>,
    pub kill_reason: Option<String>,
    pub final_er: Option<f64>,
    pub sample_size: Option<u64>,
    pub time_to_kill_minutes: Option<f64>,
    pub posted_at: Option<i64>,
    pub pattern_used: Option<String>,
}

impl RawSnapshot {
    /// Adds each variant's interval and verdict.
    pub fn enrich(&mut self, cfg: &OptimizationConfig) {
        for v in &mut self.active_variants {
            let iv = wilson::interval(v.interaction_count, v.view_count);
            v.er_interval = iv.map(|(lo, hi)| [round6(lo), round6(hi)]);
            v.verdict = Some(match iv {
                _ if v.view_count < cfg.min_views => Verdict::InsufficientData,
                Some((lo, _)) if lo > v.predicted_er => Verdict::OverPerforming,
                Some((_, hi)) if hi < v.predicted_er => Verdict::UnderPerforming,
                Some(_) => Verdict::AsPredicted,
                None => Verdict::InsufficientData,
            });
        }
    }

    /// Active variants with enough views, best current ER first.
    pub fn leaders(&self, cfg: &OptimizationConfig) -> Vec<&Variant> {
        let mut judged: Vec<&Variant> = self
            .active_variants
            .iter()
            .filter(|v| v.view_count >= cfg.min_views)
            .collect();
        judged.sort_by(|a, b| b.current_er.total_cmp(&a.current_er));
        judged.truncate(cfg.leaders);
        judged
    }

    pub fn fatigued(&self) -> impl Iterator<Item = &PatternUsage> {
        self.patterns.iter().filter(|p| p.fatigued)
    }
}

pub fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// "2h 05m", "12m", "40s": how long ago, for people.
pub fn human_duration(ms: i64) -> String {
    let s = (ms.max(0) / 1000) as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86_400, (s % 86_400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(human_duration(5_000), "5s");
        assert_eq!(human_duration(125_000), "2m");
        assert_eq!(human_duration(7_500_000), "2h 05m");
        assert_eq!(human_duration(90_000_000), "1d 1h");
        assert_eq!(human_duration(-5), "0s");
    }
}
