//! Rendering tables for humans: aligned text for terminals, Markdown for review comments.

use clap::ValueEnum;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns for a terminal.
    Table,
    /// GitHub-flavoured Markdown (paste into a review comment).
    Markdown,
    /// JSON for machines.
    Json,
}

/// A table of text cells; numeric columns are right-aligned.
pub struct TextTable {
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
    /// Per column: right-align (numbers).
    pub numeric: Vec<bool>,
}

impl TextTable {
    pub fn new(headers: &[&str], numeric: &[bool]) -> TextTable {
        TextTable {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
            numeric: numeric.to_vec(),
        }
    }

    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Markdown => self.markdown(),
            _ => self.text(),
        }
    }

    fn text(&self) -> String {
        let widths: Vec<usize> = (0..self.headers.len())
            .map(|c| {
                self.rows
                    .iter()
                    .map(|r| r[c].chars().count())
                    .chain([self.headers[c].chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: &[String]| {
            let parts: Vec<String> = cells
                .iter()
                .enumerate()
                .map(|(c, s)| {
                    let pad = widths[c].saturating_sub(s.chars().count());
                    if self.numeric[c] {
                        format!("{}{s}", " ".repeat(pad))
                    } else {
                        format!("{s}{}", " ".repeat(pad))
                    }
                })
                .collect();
            parts.join("  ").trim_end().to_owned()
        };
        let mut out = line(&self.headers);
        out.push('\n');
        for r in &self.rows {
            out.push_str(&line(r));
            out.push('\n');
        }
        out
    }

    fn markdown(&self) -> String {
        let esc = |s: &str| s.replace('|', "\\|");
        let mut out = format!(
            "| {} |\n",
            self.headers
                .iter()
                .map(|h| esc(h))
                .collect::<Vec<_>>()
                .join(" | ")
        );
        let seps: Vec<&str> = self
            .numeric
            .iter()
            .map(|n| if *n { "---:" } else { "---" })
            .collect();
        out.push_str(&format!("|{}|\n", seps.join("|")));
        for r in &self.rows {
            out.push_str(&format!(
                "| {} |\n",
                r.iter().map(|c| esc(c)).collect::<Vec<_>>().join(" | ")
            ));
        }
        out
    }
}

/// A duration in ns, readable: 850ns, 12.3µs, 4.56ms, 1.23s.
pub fn duration(ns: f64) -> String {
    let ns = ns.max(0.0);
    if ns < 1e3 {
        format!("{ns:.0}ns")
    } else if ns < 1e6 {
        format!("{:.1}µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2}ms", ns / 1e6)
    } else {
        format!("{:.2}s", ns / 1e9)
    }
}

/// A count with thousands separators.
pub fn count(n: i64) -> String {
    let s = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    if n < 0 { format!("-{out}") } else { out }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(count(1234567), "1,234,567");
        assert_eq!(count(-1000), "-1,000");
        assert_eq!(count(12), "12");
        assert_eq!(duration(850.0), "850ns");
        assert_eq!(duration(12_340.0), "12.3µs");
        assert_eq!(duration(4_560_000.0), "4.56ms");
        assert_eq!(duration(1_230_000_000.0), "1.23s");
    }

    #[test]
    fn renders_text_and_markdown() {
        let mut t = TextTable::new(&["name", "calls"], &[false, true]);
        t.rows.push(vec!["read".into(), "10".into()]);
        t.rows.push(vec!["getppid".into(), "1,000".into()]);
        assert_eq!(
            t.render(Format::Table),
            "name     calls\nread        10\ngetppid  1,000\n"
        );
        assert_eq!(
            t.render(Format::Markdown),
            "| name | calls |\n|---|---:|\n| read | 10 |\n| getppid | 1,000 |\n"
        );
    }
}
