//! The Wilson score interval: an engagement rate with its uncertainty, so a
//! variant is called over- or under-performing only when the evidence says so.

/// z for a two-sided 95% interval.
pub const Z95: f64 = 1.959_963_984_540_054;

/// 95% Wilson interval of `successes` out of `trials`; `None` without trials.
pub fn interval(successes: u64, trials: u64) -> Option<(f64, f64)> {
    if trials == 0 {
        return None;
    }
    // Interactions may exceed views on some platforms; the interval is for a
    // proportion, so clamp.
    let n = trials as f64;
    let p = (successes.min(trials) as f64) / n;
    let z2 = Z95 * Z95;
    let denom = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denom;
    let half = Z95 * ((p * (1.0 - p) / n) + z2 / (4.0 * n * n)).sqrt() / denom;
    Some(((centre - half).max(0.0), (centre + half).min(1.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-4
    }

    #[test]
    fn known_values() {
        // 150 of 2500: p = 0.06, interval ≈ [0.0513, 0.0701]
        let (lo, hi) = interval(150, 2500).unwrap();
        assert!(close(lo, 0.05131), "{lo}");
        assert!(close(hi, 0.07006), "{hi}");
        let (lo, hi) = interval(0, 10).unwrap();
        assert_eq!(lo, 0.0);
        assert!(close(hi, 0.27753), "{hi}");
        assert_eq!(interval(0, 0), None);
        let (lo, hi) = interval(20, 10).unwrap();
        assert!(close(hi, 1.0) && lo > 0.7);
    }
}
