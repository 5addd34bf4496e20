//! The page: one HTML file with its styles, scripts and data inlined. A Content Security Policy
//! of `default-src 'none'` (inline scripts and styles allowed) keeps it from loading anything,
//! from the network or from disk.

use serde_json::Value;

/// uPlot (npm `uplot`, MIT; see assets/uplot/LICENSE and the README for version and checksum).
const UPLOT_JS: &str = include_str!("../../assets/uplot/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("../../assets/uplot/uPlot.min.css");
const REPORT_JS: &str = include_str!("assets/report.js");
const REPORT_CSS: &str = include_str!("assets/report.css");

pub const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'";

/// Text safe inside an HTML element or attribute.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// JSON safe inside a `<script>` element: no `<` at all (only strings can hold one, where
/// `\u003c` means the same), so no `</script>` or `<!--` can end or confuse it.
pub fn script_json(data: &Value) -> String {
    data.to_string().replace('<', "\\u003c")
}

pub fn html(title: &str, data: &Value) -> String {
    let title = escape(title);
    let data = script_json(data);
    format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{UPLOT_CSS}</style>
<style>{REPORT_CSS}</style>
</head>
<body data-rendered="0">
<noscript>This report draws its tables and charts with JavaScript.</noscript>
<main id="report"></main>
<script id="data" type="application/json">{data}</script>
<script>{UPLOT_JS}</script>
<script>{REPORT_JS}</script>
</body>
</html>
"#
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn data_cannot_close_its_script_element() {
        let page = html(
            "a <b> run",
            &json!({"q": "SELECT '</script><script>alert(1)</script>' <!--"}),
        );
        assert_eq!(
            page.matches("</script>").count(),
            3,
            "one per script element"
        );
        assert!(page.contains("<title>a &lt;b&gt; run</title>"));
        let blob = script_json(&json!({"q": "</script>"}));
        let back: Value = serde_json::from_str(&blob).expect("still JSON");
        assert_eq!(back["q"], "</script>");
    }

    #[test]
    fn the_page_names_nothing_to_load() {
        let page = html("r", &json!({}));
        assert!(page.contains(r#"content="default-src 'none'; script-src 'unsafe-inline'"#));
        assert!(!page.contains(" src=") && !page.contains(" href="));
        // The only URL is uPlot's home in its licence comment.
        let urls = page.matches("http://").count() + page.matches("https://").count();
        assert_eq!(
            urls,
            page.matches("https://github.com/leeoniya/uPlot").count()
        );
    }
}
