//! One table for every measurement: our number, the peer's number from the same run, and
//! their ratio.

use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub name: String,
    pub sealpost: f64,
    /// The peer's number, where the row compares against one.
    pub peer: Option<f64>,
    /// sealpost / peer.
    pub ratio: Option<f64>,
    pub unit: String,
    /// Extra context (target, what bounds it).
    pub note: String,
    /// Every run's figure when the measurement was repeated (`sealpost` is their median).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<f64>,
    /// The peer's figure in each of those runs, measured interleaved with ours.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub peer_runs: Vec<f64>,
}

impl Row {
    pub fn ratio(name: String, ours: f64, peer: f64, unit: &str) -> Row {
        Row {
            name,
            sealpost: ours,
            peer: Some(peer),
            ratio: (peer > 0.0).then(|| ours / peer),
            unit: unit.into(),
            note: String::new(),
            runs: Vec::new(),
            peer_runs: Vec::new(),
        }
    }

    /// A measurement repeated in rounds, the peer measured in the same rounds (interleaved):
    /// our median and the peer's, and as the ratio the median of the rounds' own ratios, so
    /// that a slow moment of the machine weighs on both sides of one round alike.
    pub fn repeated(name: String, ours: &[f64], peer: &[f64], unit: &str) -> Row {
        assert_eq!(ours.len(), peer.len(), "one peer figure per round");
        let ratios = round_ratios(ours, peer);
        Row {
            name,
            sealpost: median(ours),
            peer: Some(median(peer)),
            ratio: (!ratios.is_empty()).then(|| median(&ratios)),
            unit: unit.into(),
            note: String::new(),
            runs: ours.to_vec(),
            peer_runs: peer.to_vec(),
        }
    }

    pub fn single(name: String, value: f64, unit: &str) -> Row {
        Row {
            name,
            sealpost: value,
            peer: None,
            ratio: None,
            unit: unit.into(),
            note: String::new(),
            runs: Vec::new(),
            peer_runs: Vec::new(),
        }
    }

    pub fn note(mut self, note: impl Into<String>) -> Row {
        self.note = note.into();
        self
    }
}

/// The median (the mean of the middle two for an even count); 0 for none.
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Each round's ratio, ours ÷ the peer's (rounds where the peer measured 0 left out).
fn round_ratios(ours: &[f64], peer: &[f64]) -> Vec<f64> {
    ours.iter()
        .zip(peer)
        .filter(|(_, p)| **p > 0.0)
        .map(|(o, p)| o / p)
        .collect()
}

/// The smallest and the largest figure.
fn extent(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

/// A median with its runs' range: "5765 (5210–5980)"; just the figure for one run.
fn with_range(median: f64, runs: &[f64]) -> String {
    let (min, max) = extent(runs);
    if runs.len() < 2 || min == max {
        return fmt(median);
    }
    format!("{} ({}–{})", fmt(median), fmt(min), fmt(max))
}

pub fn markdown(rows: &[Row]) -> String {
    let mut s = String::from(
        "| measurement | Sealpost | peer | ratio | unit | note |\n|---|---:|---:|---:|---|---|\n",
    );
    for r in rows {
        let ratios = round_ratios(&r.runs, &r.peer_runs);
        let ratio = match (r.ratio, ratios.len()) {
            (None, _) => "–".into(),
            (Some(x), n) if n < 2 => format!("{x:.2}×"),
            (Some(x), _) => {
                let (min, max) = extent(&ratios);
                format!("{x:.2}× ({min:.2}–{max:.2})")
            }
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            r.name,
            with_range(r.sealpost, &r.runs),
            r.peer
                .map(|p| with_range(p, &r.peer_runs))
                .unwrap_or_else(|| "–".into()),
            ratio,
            r.unit,
            r.note
        ));
    }
    s
}

fn fmt(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 1.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_rows_take_medians_and_the_median_of_per_round_ratios() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
        // Round 2 ran on a slow moment for both sides: its ratio is still 10.
        let r = Row::repeated("x".into(), &[100.0, 50.0, 90.0], &[10.0, 5.0, 10.0], "u");
        assert_eq!(
            (r.sealpost, r.peer, r.ratio),
            (90.0, Some(10.0), Some(10.0))
        );
        let table = markdown(&[r]);
        assert!(
            table.contains("| x | 90.0 (50.0–100) | 10.0 (5.0–10.0) | 10.00× (9.00–10.00) |"),
            "{table}"
        );
    }
}
