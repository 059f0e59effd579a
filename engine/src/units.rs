//! Sizes for people: the one formatter every message, report and screen uses (`bytesize`'s
//! binary units with one decimal: `812 B`, `11.7 KiB`, `40.0 MiB`, `1.2 GiB`), so a figure
//! reads the same everywhere and against the limits, which are set in MiB. Where the exact
//! figure matters (a crossed limit), messages give the byte count beside it. Also the one
//! nearest-rank percentile that reports and benches use.

/// The nearest-rank percentile `p` (0-100] of a sorted, non-empty sample: the smallest
/// value with at least `p`% of the sample at or below it.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    assert!(!sorted.is_empty(), "percentile of an empty sample");
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// `1536` -> `1.5 KiB`.
pub fn human_bytes(bytes: u64) -> String {
    bytesize::ByteSize::b(bytes).display().iec().to_string()
}

/// A difference that may be negative (space reclaimed can be less than space written):
/// `-1.5 KiB`; never `-0.0`, a rounding of nothing to a negative zero.
pub fn human_bytes_signed(delta: i64) -> String {
    if delta < 0 {
        format!("-{}", human_bytes(delta.unsigned_abs()))
    } else {
        human_bytes(delta as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_units_one_decimal() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(812), "812 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(40 * 1024 * 1024), "40.0 MiB");
        assert_eq!(human_bytes(1288 * 1024 * 1024), "1.3 GiB");
        assert_eq!(human_bytes_signed(-100), "-100 B");
        assert_eq!(human_bytes_signed(-1536), "-1.5 KiB");
        assert_eq!(human_bytes_signed(2048), "2.0 KiB");
    }
}
