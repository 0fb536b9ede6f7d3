//! detect: the statistics `beacon`'s two detectors share (connection series and quiet
//! flows): medians and quantiles of sorted samples, Bowley's quartile skew, the robust
//! relative spread (MAD over median) and the coefficient of variation.

/// The median of sorted values (0 for none).
pub(super) fn median(sorted: &[f64]) -> f64 {
    quantile(sorted, 0.5)
}

/// The `p` quantile of sorted values, interpolating linearly between ranks (0 for none).
pub(super) fn quantile(sorted: &[f64], p: f64) -> f64 {
    let Some(last) = sorted.len().checked_sub(1) else {
        return 0.0;
    };
    let rank = p.clamp(0.0, 1.0) * last as f64;
    let below = rank.floor() as usize;
    let above = rank.ceil() as usize;
    sorted[below] + (sorted[above] - sorted[below]) * (rank - below as f64)
}

/// Bowley's quartile skewness `(Q3 + Q1 - 2 Q2) / (Q3 - Q1)` of sorted values, in -1..1.
/// As in RITA it is 0 when the median equals a quartile: intervals that take two values
/// (whole-second timestamps: mostly 60 s, some 61 s) are a rhythm, not a skew.
pub(super) fn bowley_skew(sorted: &[f64]) -> f64 {
    let (q1, q2, q3) = (
        quantile(sorted, 0.25),
        quantile(sorted, 0.5),
        quantile(sorted, 0.75),
    );
    if q2 == q1 || q2 == q3 {
        return 0.0;
    }
    ((q3 + q1 - 2.0 * q2) / (q3 - q1)).clamp(-1.0, 1.0)
}

/// `min(1, MAD / median)`, the robust relative spread (0: all alike). Sorts `values`. A zero
/// median counts as alike only when the deviations are zero too.
pub(super) fn dispersion(values: &mut [f64]) -> f64 {
    values.sort_unstable_by(f64::total_cmp);
    let middle = median(values);
    for value in values.iter_mut() {
        *value = (*value - middle).abs();
    }
    values.sort_unstable_by(f64::total_cmp);
    let mad = median(values);
    if middle > 0.0 {
        (mad / middle).min(1.0)
    } else if mad > 0.0 {
        1.0
    } else {
        0.0
    }
}

/// Standard deviation over mean (0 for none or all zero).
pub(super) fn coefficient_of_variation(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    if mean <= 0.0 {
        return 0.0;
    }
    let variance = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    variance.sqrt() / mean
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics() {
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[1.0, 2.0, 10.0]), 2.0);
        assert_eq!(median(&[1.0, 2.0, 4.0, 10.0]), 3.0);
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0, 5.0], 0.25), 2.0);
        assert_eq!(bowley_skew(&[60.0; 10]), 0.0);
        assert_eq!(bowley_skew(&[1.0, 2.0, 3.0, 4.0, 5.0]), 0.0);
        assert_eq!(
            bowley_skew(&[1.0, 1.0, 1.0, 2.0, 100.0]),
            0.0,
            "median = Q1"
        );
        assert_eq!(bowley_skew(&[1.0, 2.0, 3.0, 10.0, 100.0]), 0.75);
        assert_eq!(bowley_skew(&[1.0, 9.0, 10.0, 13.0, 100.0]), 0.5);
        assert_eq!(bowley_skew(&[1.0, 7.0, 10.0, 11.0, 100.0]), -0.5);
        assert_eq!(dispersion(&mut [100.0, 100.0, 100.0, 500.0]), 0.0);
        assert_eq!(dispersion(&mut [50.0, 100.0, 150.0]), 0.5);
        assert_eq!(dispersion(&mut [0.0, 0.0, 0.0]), 0.0);
        assert_eq!(coefficient_of_variation(&[60.0; 5]), 0.0);
        assert_eq!(coefficient_of_variation(&[50.0, 150.0]), 0.5);
    }
}
