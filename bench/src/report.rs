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
        }
    }

    pub fn note(mut self, note: impl Into<String>) -> Row {
        self.note = note.into();
        self
    }
}

pub fn markdown(rows: &[Row]) -> String {
    let mut s = String::from(
        "| measurement | Sealpost | peer | ratio | unit | note |\n|---|---:|---:|---:|---|---|\n",
    );
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            r.name,
            fmt(r.sealpost),
            r.peer.map(fmt).unwrap_or_else(|| "–".into()),
            r.ratio
                .map(|x| format!("{x:.2}×"))
                .unwrap_or_else(|| "–".into()),
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
