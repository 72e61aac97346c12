//! The report page: one self-contained HTML file (inline CSS and SVG, no
//! script, nothing loaded from anywhere), rendered with `maud`, which
//! escapes every interpolated string. Every string that comes from the
//! vault, the custody log or a signature (file names, link targets,
//! actors, hosts, reasons, principals, stanza types) also goes through
//! [`crate::sanitize::sanitize`] first, so control and bidirectional
//! characters show as visible `\u{…}` escapes instead of acting.

use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::{CustodyFacts, EntryFacts, Folder, Report, SignatureFacts, MAX_BARS};
use crate::sanitize::sanitize;
use crate::verify::Sidecar;

/// Hostile text, made visible (the template engine escapes it for HTML).
fn t(s: &str) -> String {
    sanitize(s)
}

/// Bytes with thousands separators and a binary-unit hint.
fn bytes(n: u64) -> String {
    let digits = n.to_string();
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{grouped} bytes");
    }
    let mut v = n as f64 / 1024.0;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{grouped} bytes ({v:.1} {})", UNITS[u])
}

const CSS: &str = r#"
:root { color-scheme: light; }
body { font: 14px/1.45 "DejaVu Sans", "Liberation Sans", Arial, sans-serif; color: #111; background: #fff; margin: 24px auto; max-width: 1180px; padding: 0 16px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 26px 0 8px; border-bottom: 2px solid #333; padding-bottom: 2px; break-after: avoid; page-break-after: avoid; }
.sub { color: #444; margin: 0 0 14px; }
.status { border: 2px solid; padding: 10px 14px; margin: 12px 0; break-inside: avoid; }
.status.ok { border-color: #1a7f37; background: #eaf6ec; }
.status.partial { border-color: #9a6700; background: #fff8e5; }
.status.fail { border-color: #cf222e; background: #ffebe9; }
.status strong { font-size: 16px; }
table { border-collapse: collapse; width: 100%; table-layout: fixed; margin: 6px 0; }
th, td { border: 1px solid #bbb; padding: 3px 6px; text-align: left; vertical-align: top; overflow-wrap: anywhere; }
th { background: #eee; }
table.facts th { width: 24%; }
td, th { unicode-bidi: isolate; }
.mono, code, pre { font-family: "DejaVu Sans Mono", "Liberation Mono", monospace; font-size: 12px; }
.hash { font-family: "DejaVu Sans Mono", "Liberation Mono", monospace; font-size: 11px; word-break: break-all; }
.num { text-align: right; white-space: nowrap; }
.bad { color: #cf222e; font-weight: bold; }
.good { color: #1a7f37; }
.note { color: #444; font-size: 13px; }
pre { background: #f6f6f6; border: 1px solid #ccc; padding: 6px 8px; white-space: pre-wrap; overflow-wrap: anywhere; margin: 2px 0 10px; }
svg { display: block; max-width: 100%; height: auto; margin: 6px 0; }
.nw { white-space: nowrap; }
.generated { color: #555; font-size: 12px; margin-top: 28px; border-top: 1px solid #ccc; padding-top: 6px; }
col.c-path { width: 33%; } col.c-type { width: 8%; } col.c-size { width: 8%; } col.c-sha { width: 27%; } col.c-mode { width: 6%; } col.c-mtime { width: 18%; }
@page { margin: 14mm 12mm; }
@media print {
  body { margin: 0; max-width: none; padding: 0; font-size: 10pt; }
  thead { display: table-header-group; }
  tfoot { display: table-footer-group; }
  tr, .keep, pre, svg, li { break-inside: avoid; page-break-inside: avoid; }
  h2 { break-after: avoid; page-break-after: avoid; }
  .status { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  th, td { padding: 2px 4px; font-size: 8pt; }
  td.mono, td .mono { font-size: 7.5pt; }
  .hash, td.hash { font-size: 7pt; }
  col.c-path { width: 26%; } col.c-type { width: 7%; } col.c-size { width: 7%; } col.c-sha { width: 29%; } col.c-mode { width: 6%; } col.c-mtime { width: 25%; }
}
"#;

/// The whole page.
pub fn render(r: &Report) -> String {
    let title = format!("Evidence vault report: {}", t(&r.vault.name));
    let page: Markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                // Defence in depth: nothing may load or run, whatever a
                // name held.
                meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                style { (PreEscaped(CSS)) }
            }
            body {
                h1 { "Evidence vault report" }
                p.sub { "Vault " span.mono { (t(&r.vault.name)) }
                    @if let Some(c) = &r.case { ", case " span.mono { (t(&c.case_id)) } } }
                (status(r))
                (vault_section(r))
                (signature_section(r))
                (totals_section(r))
                @if let Some(e) = &r.entries { (entries_section(e)) }
                @if let Some(c) = &r.custody { (custody_section(c)) }
                (stock_section(r))
                p.generated { "Generated at " (r.generated_at) " by " (r.generated_by) "." }
            }
        }
    };
    page.into_string()
}

fn status(r: &Report) -> Markup {
    html! {
        @if !r.ok {
            div.status.fail {
                strong { "VERIFICATION FAILED" }
                p { "Do not rely on this vault before the failures below are explained. "
                    @if r.contents_checked { "Every file was decrypted and checked." }
                    @else { "The contents could not be checked, or were not (no identity given)." } }
                ul { @for f in &r.failures { li { (t(f)) } } }
            }
        } @else if r.contents_checked {
            div.status.ok {
                strong { "VERIFIED: every file was decrypted and checked." }
                p { "Every file's SHA-256 matched the manifest sealed into the vault, the bag is complete, and the vault file matches its sidecar"
                    @if r.vault.sidecar == Sidecar::Missing { " (no sidecar was present)" } "." }
            }
        } @else {
            div.status.partial {
                strong { "Contents NOT checked: no identity was given." }
                p { "Only the checks that need no key were made: the vault file against its .sha256 sidecar, the age header, and the vault's outer signature. Nothing inside the vault was decrypted or compared. Give -i IDENTITY_FILE to check every file." }
            }
        }
    }
}

fn vault_section(r: &Report) -> Markup {
    let v = &r.vault;
    let rc = &r.recipients;
    let unknown = "not known without -i (inside the encryption)";
    html! {
        h2 { "The vault" }
        table.facts {
            tbody {
                tr { th { "Case id" } td.mono { @if let Some(c) = &r.case { (t(&c.case_id)) } @else { (unknown) } } }
                tr { th { "Vault file" } td.mono { (t(&v.name)) } }
                tr { th { "Size" } td { (bytes(v.size)) } }
                tr { th { "SHA-256" } td.hash { (v.sha256) } }
                tr { th { "Sidecar (.sha256)" } td {
                    @match v.sidecar {
                        Sidecar::Ok => span.good { "matches the vault file" },
                        Sidecar::Missing => span.bad { "missing" },
                        Sidecar::Mismatch => span.bad { "DOES NOT MATCH the vault file" },
                    } } }
                tr { th { "Recipients (age header)" } td {
                    (rc.count) " recipient stanza" @if rc.count != 1 { "s" }
                    @if !rc.types.is_empty() { ": "
                        @for (i, (k, n)) in rc.types.iter().enumerate() {
                            @if i > 0 { ", " } span.mono { (t(k)) } " × " (n) } }
                    @if rc.grease > 0 { " (and " (rc.grease) " grease stanza" @if rc.grease != 1 { "s" } ": random padding age adds, which no key opens)" }
                    @if rc.armored { " (ASCII-armored)" }
                    @if let Some(p) = &rc.problem { br; span.bad { (t(p)) } } } }
                @if let Some(c) = &r.case {
                    tr { th { "Format version" } td { (t(&format!("casevault {}", c.format_version))) } }
                    tr { th { "Compression" } td { (c.compression) } }
                    tr { th { "Sealed at (UTC)" } td { (t(&c.sealed_at)) } }
                    tr { th { "Sealed with" } td { (t(&c.tool)) } }
                } @else {
                    tr { th { "Format version, compression, sealing time, tool" } td { (unknown) } }
                }
            }
        }
    }
}

fn signature_row(label: &str, s: &SignatureFacts) -> Markup {
    html! {
        tr {
            th { (label) }
            td {
                @if s.outcome.starts_with("FAILED") { span.bad { (t(&s.outcome)) } }
                @else if s.outcome.starts_with("valid, trusted") { span.good { (t(&s.outcome)) } }
                @else { (t(&s.outcome)) }
                @if let Some(p) = &s.principal { br; "Principal: " span.mono { (t(p)) } }
                @if let Some(f) = &s.fingerprint { br; "Key fingerprint: " span.hash { (t(f)) } }
            }
        }
    }
}

fn signature_section(r: &Report) -> Markup {
    let s = &r.signatures;
    html! {
        h2 { "Signatures" }
        p.note {
            @if s.checked_against_signers { "Checked against the allowed_signers file given with --signers." }
            @else { "Not checked against a list of trusted signers (no --signers): a valid signature shows only which key made it, not whose key that is." }
        }
        table.facts {
            tbody {
                (signature_row("Vault file (VAULT.sig)", &s.outer))
                @if let Some(i) = &s.inner { (signature_row("Case manifest (casevault.sig, inside)", i)) }
                @if let Some(sg) = r.case.as_ref().and_then(|c| c.signer.as_ref()) {
                    tr { th { "Signer named at sealing" } td {
                        @if let Some(p) = &sg.principal { span.mono { (t(p)) } br; }
                        "Key fingerprint: " span.hash { (t(&sg.fingerprint)) } } }
                }
            }
        }
    }
}

fn totals_section(r: &Report) -> Markup {
    html! {
        h2 { "Contents" }
        @if let Some(tt) = &r.totals {
            table.facts {
                tbody {
                    tr { th { "Files" } td { (tt.files) } }
                    tr { th { "Directories" } td { (tt.dirs) } }
                    tr { th { "Symbolic links" } td { (tt.symlinks) } }
                    tr { th { "Bytes in files" } td { (bytes(tt.bytes)) } }
                }
            }
        } @else {
            p { "The contents were not checked, so nothing is said about them here." }
        }
        @if let Some(e) = &r.entries { @if !e.folders.is_empty() {
            h2 { "Bytes per top-level folder" }
            (bar_chart(&e.folders))
        } }
    }
}

/// The largest folders as bars, the rest summed as one.
fn bar_chart(folders: &[Folder]) -> Markup {
    let mut sorted: Vec<&Folder> = folders.iter().collect();
    sorted.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.name.cmp(&b.name)));
    let mut bars: Vec<(String, u64)> = sorted
        .iter()
        .take(MAX_BARS)
        .map(|f| (f.name.clone(), f.bytes))
        .collect();
    if sorted.len() > MAX_BARS {
        let rest: u64 = sorted[MAX_BARS..].iter().map(|f| f.bytes).sum();
        bars.push((format!("({} more folders)", sorted.len() - MAX_BARS), rest));
    }
    let max = bars.iter().map(|b| b.1).max().unwrap_or(0).max(1);
    let (label_w, bar_w, row_h) = (300u64, 520u64, 24u64);
    let height = row_h * bars.len() as u64 + 10;
    let width = label_w + bar_w + 230;
    html! {
        svg width=(width) height=(height) viewBox=(format!("0 0 {width} {height}")) role="img" {
            title { "Bytes per top-level folder" }
            @for (i, (name, b)) in bars.iter().enumerate() {
                @let y = 5 + row_h * i as u64;
                @let w = if *b == 0 { 0 } else { (b * bar_w / max).max(1) };
                @let label = t(name);
                @let label = if label.chars().count() > 38 { format!("{}…", label.chars().take(37).collect::<String>()) } else { label };
                text x=(label_w - 8) y=(y + 16) text-anchor="end" font-size="13" font-family="DejaVu Sans, sans-serif" { (label) }
                rect x=(label_w) y=(y + 3) width=(w) height=(row_h - 6) fill="#3b6ea5" {}
                text x=(label_w + w + 6) y=(y + 16) font-size="12" font-family="DejaVu Sans, sans-serif" { (bytes(*b)) }
            }
        }
    }
}

/// An RFC 3339 time that breaks, if it must, only before its fraction.
fn mtime(s: &str) -> Markup {
    let s = t(s);
    match s.split_once('.') {
        Some((secs, frac)) => html! { span.nw { (secs) } wbr; span.nw { "." (frac) } },
        None => html! { span.nw { (s) } },
    }
}

fn entries_section(e: &EntryFacts) -> Markup {
    html! {
        h2 { "Entries" }
        @if e.all_listed {
            p.note { "All " (e.count) " entries of the case, in the vault's order. Sizes in bytes; SHA-256 of each file's contents; mode in octal; times UTC. A symbolic link shows its target. Characters that could hide or reorder text show as \\u{…} escapes."
                @if let Some(l) = &e.listing { " The same listing is in " span.mono { (t(l)) } " (CSV)." } }
            table {
                colgroup { col.c-path; col.c-type; col.c-size; col.c-sha; col.c-mode; col.c-mtime; }
                thead { tr { th { "Path" } th { "Type" } th.num { "Size" } th { "SHA-256" } th { "Mode" } th { "Modified (UTC)" } } }
                tbody {
                    @for row in &e.rows {
                        tr {
                            td.mono { (t(&row.path)) @if let Some(target) = &row.target { " → " (t(target)) } }
                            td { (row.kind.as_str()) }
                            td.num { @if let Some(s) = row.size { (s) } }
                            td.hash { @if let Some(h) = &row.sha256 { (t(h)) } }
                            td.mono { (row.mode) }
                            td.mono { (mtime(&row.mtime)) }
                        }
                    }
                }
            }
        } @else {
            p { "The case holds " (e.count) " entries, more than the " (e.cut) " this page lists one by one: a page of that size no longer opens or prints comfortably in a browser. "
                @if let Some(l) = &e.listing { "Every entry (path, type, size, SHA-256, mode, time, link target) is in " span.mono { (t(l)) } " (CSV, RFC 4180), written with this report." }
                @else { "Run the report again with --listing FILE.csv for the complete listing." }
                " Below, the totals per top-level folder." }
        }
        @if !e.all_listed {
            table {
                thead { tr { th { "Top-level folder" } th.num { "Files" } th.num { "Directories" } th.num { "Symbolic links" } th.num { "Bytes" } } }
                tbody {
                    @for f in &e.folders {
                        tr { td.mono { (t(&f.name)) } td.num { (f.files) } td.num { (f.dirs) } td.num { (f.symlinks) } td.num { (f.bytes) } }
                    }
                }
            }
        }
    }
}

/// Milliseconds since the epoch of an RFC 3339 time, if it is one.
fn epoch(s: &str) -> Option<i64> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// The custody events on a time line: position by time, colour by outcome.
fn timeline(c: &CustodyFacts) -> Markup {
    let times: Vec<Option<i64>> = c.records.iter().map(|r| epoch(&r.time)).collect();
    let known: Vec<i64> = times.iter().flatten().copied().collect();
    let (lo, hi) = (
        known.iter().min().copied().unwrap_or(0),
        known.iter().max().copied().unwrap_or(0),
    );
    let (left, width, axis_y) = (60i64, 1000i64, 40i64);
    let n = c.records.len().max(1) as i64;
    let x_of = |i: usize, tm: Option<i64>| -> i64 {
        match tm {
            Some(tm) if hi > lo => left + (tm - lo) * width / (hi - lo),
            _ if n > 1 => left + i as i64 * width / (n - 1),
            _ => left + width / 2,
        }
    };
    let rows = (c.records.len() as i64).clamp(1, 4);
    let height = axis_y + 24 + rows * 18 + 30;
    let first = c.records.first().map(|r| t(&r.time)).unwrap_or_default();
    let last = c.records.last().map(|r| t(&r.time)).unwrap_or_default();
    html! {
        svg width=(left * 2 + width) height=(height) viewBox=(format!("0 0 {} {height}", left * 2 + width)) role="img" {
            title { "Custody events on a time line" }
            line x1=(left) y1=(axis_y) x2=(left + width) y2=(axis_y) stroke="#333" stroke-width="2" {}
            text x=(left) y=(axis_y - 14) font-size="12" font-family="DejaVu Sans, sans-serif" { (first) }
            text x=(left + width) y=(axis_y - 14) font-size="12" text-anchor="end" font-family="DejaVu Sans, sans-serif" { (last) }
            @for (i, rec) in c.records.iter().enumerate() {
                @let x = x_of(i, times[i]);
                @let ly = axis_y + 24 + (i as i64 % rows) * 18;
                @let colour = if rec.outcome == "ok" { "#1a7f37" } else { "#cf222e" };
                circle cx=(x) cy=(axis_y) r="6" fill=(colour) {}
                line x1=(x) y1=(axis_y + 6) x2=(x) y2=(ly - 11) stroke="#999" stroke-width="1" {}
                text x=(x) y=(ly) font-size="12" text-anchor="middle" font-family="DejaVu Sans, sans-serif" fill=(colour) {
                    (rec.seq) " " (t(&rec.action)) }
            }
        }
    }
}

fn custody_section(c: &CustodyFacts) -> Markup {
    html! {
        h2 { "Chain of custody" }
        p {
            "Custody log " span.mono { (t(&c.log)) } ": "
            @if c.intact {
                span.good { "chain intact" } ", " (c.records_in_log) " records"
                @if c.signatures_checked { ", every record signed by a trusted key" }
            } @else {
                span.bad { "chain BROKEN" }
                @if let Some(l) = c.broken_line { " at line " (l) }
                ": " (t(c.problem.as_deref().unwrap_or(""))) " (records before it are intact: " (c.records_in_log) ")"
            }
            "; head SHA-256 " span.hash { (c.head_sha256) } "."
        }
        p.note { (c.records.len()) " record(s) name this vault, by file name or SHA-256." }
        @if !c.records.is_empty() {
            (timeline(c))
            table {
                thead { tr { th style="width:5%" { "Line" } th style="width:5%" { "Seq" } th style="width:17%" { "Time (UTC)" } th style="width:9%" { "Action" } th style="width:11%" { "Actor" } th style="width:8%" { "Host" } th style="width:9%" { "Outcome" } th style="width:13%" { "Reason" } th style="width:23%" { "Signature" } } }
                tbody {
                    @for rec in &c.records {
                        tr {
                            td.num { (rec.line) }
                            td.num { (rec.seq) }
                            td.mono { (t(&rec.time)) }
                            td { (t(&rec.action)) }
                            td.mono { (t(&rec.actor)) }
                            td.mono { (t(&rec.host)) }
                            td { @if rec.outcome == "ok" { span.good { "ok" } } @else { span.bad { (t(&rec.outcome)) } } }
                            td { @if let Some(why) = &rec.reason { (t(why)) } }
                            td { @if rec.signature.starts_with("FAILED") { span.bad { (t(&rec.signature)) } } @else { (t(&rec.signature)) } }
                        }
                    }
                }
            }
        }
    }
}

fn stock_section(r: &Report) -> Markup {
    html! {
        h2 { "Check this without casevault" }
        p.note { "The vault is a plain age file holding a tar stream (zstd-compressed unless sealed with --compress none) of one BagIt bag. These stock commands check it independently; run them in the directory that holds the vault. Words in capitals are to be replaced: IDENTITY_FILE by a recipient's age identity, ALLOWED_SIGNERS_FILE by the OpenSSH allowed_signers file, PRINCIPAL by the signer's name." }
        @for c in &r.stock_commands {
            div.keep {
                p { (t(&c.purpose)) ":" }
                pre { (t(&c.command)) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts() {
        assert_eq!(bytes(0), "0 bytes");
        assert_eq!(bytes(999), "999 bytes");
        assert_eq!(bytes(1024), "1,024 bytes (1.0 KiB)");
        assert_eq!(bytes(1_234_567), "1,234,567 bytes (1.2 MiB)");
    }
}
