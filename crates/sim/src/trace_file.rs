//! Job traces: replay a team's own GitHub Actions jobs instead of the synthetic workload.
//!
//! Two formats, told apart by content (the first non-blank character is `{` for JSONL):
//!
//! - CSV with a header row naming `queued_at`, `started_at`, `completed_at` and optionally `labels`,
//!   `id` and `conclusion`, in any order; other columns are ignored.
//! - JSONL, one job per line: GitHub's workflow-jobs REST object (`created_at` is the queued time), a
//!   `workflow_job` webhook payload, or one page of the jobs API (`{"jobs": [...]}`) on one line.
//!
//! A job arrives at its queued time minus the earliest queued time of the kept jobs and runs for
//! `completed_at - started_at`. `docs/simulation-traces.md` describes the formats field by field.
//!
//! Parsing never panics and never reads the clock: every problem is a [`TraceError`] naming the line.

use crate::workload::JobSpec;
use lifecycle_core::Time;
use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Shortest job kept: a zero-length job (started and completed in the same second) still takes a runner.
pub const MIN_JOB: Duration = Duration::from_secs(1);
/// Longest job kept: GitHub stops self-hosted jobs after 5 days at most; longer means a broken record.
pub const MAX_JOB: Duration = Duration::from_secs(5 * 24 * 3600);
/// Longest trace accepted: beyond this, a mistyped year is far likelier than a real trace.
pub const MAX_SPAN: Duration = Duration::from_secs(400 * 24 * 3600);

/// What to keep from a trace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceOptions {
    /// Keep only jobs whose labels include all of these (ASCII case-insensitive, as GitHub matches
    /// runner labels). Empty keeps every job.
    pub labels: Vec<String>,
}

impl TraceOptions {
    /// Options from a comma-separated label list as a command line gives it (`self-hosted,gpu`).
    pub fn from_label_list(list: &str) -> TraceOptions {
        TraceOptions {
            labels: list
                .split(',')
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect(),
        }
    }
}

/// A parsed trace, ready for the driver.
#[derive(Clone, Debug, PartialEq)]
pub struct Trace {
    /// The kept jobs, sorted by arrival (jobs queued at the same time keep their file order).
    pub jobs: Vec<JobSpec>,
    /// When the latest-finishing job ends, measured from the first arrival: size the run with it.
    pub span: Duration,
    /// What was left out or adjusted, for a summary line.
    pub skipped: TraceSkips,
}

/// Counts of jobs left out of a trace (and of kept jobs whose duration was clamped).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TraceSkips {
    /// No `started_at`: cancelled before a runner took it, or still queued.
    pub not_started: u64,
    /// A `started_at` but no `completed_at`: still running when exported.
    pub unfinished: u64,
    /// `conclusion` is `skipped`, or `runner_name` is null: the job never needed a runner.
    pub never_ran: u64,
    /// Webhook deliveries whose `action` is not `completed` (the `completed` delivery carries the job).
    pub not_completed_event: u64,
    /// A job `id` already seen (redelivered webhooks, overlapping exports).
    pub duplicate: u64,
    /// Labels that do not include every label of [`TraceOptions::labels`].
    pub label_mismatch: u64,
    /// Kept, but ran for less than [`MIN_JOB`] and was lengthened to it.
    pub clamped_short: u64,
    /// Kept, but ran for more than [`MAX_JOB`] and was cut to it.
    pub clamped_long: u64,
}

impl TraceSkips {
    /// Jobs left out, all causes together (clamped jobs are kept, so they do not count).
    pub fn total(&self) -> u64 {
        self.not_started
            + self.unfinished
            + self.never_ran
            + self.not_completed_event
            + self.duplicate
            + self.label_mismatch
    }
}

impl fmt::Display for TraceSkips {
    /// One line, for example `skipped 5 (3 not started, 2 label mismatch); clamped 1 to 1 s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = [
            (self.not_started, "not started"),
            (self.unfinished, "unfinished"),
            (self.never_ran, "never ran"),
            (self.not_completed_event, "not-completed webhook events"),
            (self.duplicate, "duplicate"),
            (self.label_mismatch, "label mismatch"),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
        if parts.is_empty() {
            write!(f, "skipped 0")?;
        } else {
            write!(f, "skipped {} ({})", self.total(), parts.join(", "))?;
        }
        if self.clamped_short > 0 {
            write!(f, "; clamped {} to 1 s", self.clamped_short)?;
        }
        if self.clamped_long > 0 {
            write!(f, "; clamped {} to 5 days", self.clamped_long)?;
        }
        Ok(())
    }
}

/// Why a trace could not be used.
#[derive(Debug)]
pub enum TraceError {
    /// The file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// One line (1-based; a quoted CSV record spanning lines reports its first) is wrong.
    Invalid {
        /// The line.
        line: usize,
        /// What is wrong.
        problem: String,
        /// What to do about it.
        fix: String,
    },
    /// Nothing usable: every job was skipped, or the file holds no jobs.
    Empty {
        /// Why the jobs that were there were skipped.
        skipped: TraceSkips,
    },
    /// The kept jobs span more than [`MAX_SPAN`].
    TooLong {
        /// From the first arrival to the end of the latest-finishing job.
        span: Duration,
        /// The line of the earliest queued job.
        first_line: usize,
        /// The line of the latest-finishing job.
        last_line: usize,
    },
}

impl TraceError {
    /// The line the error is about, if it is about one.
    pub fn line(&self) -> Option<usize> {
        match self {
            TraceError::Invalid { line, .. } => Some(*line),
            _ => None,
        }
    }

    fn invalid(line: usize, problem: impl Into<String>, fix: impl Into<String>) -> TraceError {
        TraceError::Invalid {
            line,
            problem: problem.into(),
            fix: fix.into(),
        }
    }
}

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TraceError::Read { path, source } => {
                write!(f, "cannot read trace {}: {source}", path.display())
            }
            TraceError::Invalid { line, problem, fix } => write!(f, "line {line}: {problem}; {fix}"),
            TraceError::Empty { skipped } => write!(
                f,
                "the trace holds no usable job ({skipped}); export completed jobs, and check that \
                 --trace-labels names labels the jobs really request"
            ),
            TraceError::TooLong {
                span,
                first_line,
                last_line,
            } => write!(
                f,
                "the trace spans {} days (earliest job on line {first_line}, latest-ending on line \
                 {last_line}), more than {}; check those lines for a mistyped date, or split the trace",
                span.as_secs() / 86_400,
                MAX_SPAN.as_secs() / 86_400
            ),
        }
    }
}

impl std::error::Error for TraceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TraceError::Read { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Read and parse a trace file (UTF-8, CSV or JSONL).
pub fn load_trace(path: &Path, opts: &TraceOptions) -> Result<Trace, TraceError> {
    let bytes = std::fs::read(path).map_err(|source| TraceError::Read {
        path: path.to_owned(),
        source,
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = 1 + good.iter().filter(|&&b| b == b'\n').count();
        TraceError::invalid(line, "the text is not valid UTF-8", "save the trace as UTF-8")
    })?;
    parse_trace(&text, opts)
}

/// Parse a trace held in memory. See the module documentation for the formats.
pub fn parse_trace(text: &str, opts: &TraceOptions) -> Result<Trace, TraceError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let raw = if text.trim_start().starts_with('{') {
        jsonl_jobs(text)?
    } else {
        csv_jobs(text)?
    };
    assemble(raw, opts)
}

/// Which format a job came from, for the field names in messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Csv,
    Json,
}

impl Format {
    fn queued_field(self) -> &'static str {
        match self {
            Format::Csv => "queued_at",
            Format::Json => "created_at",
        }
    }
}

/// One job as the file states it, before validation.
#[derive(Debug, Default)]
struct RawJob {
    line: usize,
    id: Option<String>,
    queued: Option<String>,
    started: Option<String>,
    completed: Option<String>,
    labels: Vec<String>,
    never_ran: bool,
    /// A webhook delivery other than `completed`.
    not_completed_event: bool,
}

/// A validated job: milliseconds since the Unix epoch.
#[derive(Clone, Copy, Debug)]
struct Kept {
    line: usize,
    queued_ms: i64,
    duration: Duration,
}

fn assemble(raw: Vec<(Format, RawJob)>, opts: &TraceOptions) -> Result<Trace, TraceError> {
    let wanted: Vec<String> = opts
        .labels
        .iter()
        .map(|l| l.trim().to_ascii_lowercase())
        .filter(|l| !l.is_empty())
        .collect();
    let mut skipped = TraceSkips::default();
    let mut seen_ids = BTreeSet::new();
    let mut kept = Vec::new();
    for (format, job) in raw {
        if job.not_completed_event {
            skipped.not_completed_event += 1;
            continue;
        }
        let line = job.line;
        let queued_name = format.queued_field();
        let Some(queued_text) = job.queued.as_deref() else {
            return Err(TraceError::invalid(
                line,
                format!("the job has no {queued_name}"),
                format!("every job needs its queued time in {queued_name}"),
            ));
        };
        let queued = timestamp(line, queued_name, queued_text)?;
        let Some(started_text) = job.started.as_deref() else {
            skipped.not_started += 1;
            continue;
        };
        let started = timestamp(line, "started_at", started_text)?;
        let Some(completed_text) = job.completed.as_deref() else {
            skipped.unfinished += 1;
            continue;
        };
        let completed = timestamp(line, "completed_at", completed_text)?;
        if job.never_ran {
            skipped.never_ran += 1;
            continue;
        }
        if started < queued {
            return Err(TraceError::invalid(
                line,
                format!("started_at {started_text} is before {queued_name} {queued_text}"),
                "a job starts after it is queued: fix the timestamps or drop the line",
            ));
        }
        if completed < started {
            return Err(TraceError::invalid(
                line,
                format!("completed_at {completed_text} is before started_at {started_text}"),
                "a job completes after it starts: fix the timestamps or drop the line",
            ));
        }
        if let Some(id) = job.id {
            if !seen_ids.insert(id) {
                skipped.duplicate += 1;
                continue;
            }
        }
        if !wanted
            .iter()
            .all(|w| job.labels.iter().any(|l| l.eq_ignore_ascii_case(w)))
        {
            skipped.label_mismatch += 1;
            continue;
        }
        // Both fit in i64 milliseconds (years 1 to 9999), so the difference is non-negative and exact.
        let ran = Duration::from_millis(u64::try_from(completed - started).unwrap_or(0));
        let duration = if ran < MIN_JOB {
            skipped.clamped_short += 1;
            MIN_JOB
        } else if ran > MAX_JOB {
            skipped.clamped_long += 1;
            MAX_JOB
        } else {
            ran
        };
        kept.push(Kept {
            line,
            queued_ms: queued,
            duration,
        });
    }
    let Some(first) = kept.iter().map(|k| k.queued_ms).min() else {
        return Err(TraceError::Empty { skipped });
    };
    // Stable: jobs queued in the same millisecond keep their file order.
    kept.sort_by_key(|k| k.queued_ms);
    let mut jobs = Vec::with_capacity(kept.len());
    let mut span = Duration::ZERO;
    let mut last_line = 0;
    for k in &kept {
        let offset = u64::try_from(k.queued_ms.saturating_sub(first)).unwrap_or(0);
        let arrival = Time::ZERO + Duration::from_millis(offset);
        let end = (arrival + k.duration).since(Time::ZERO);
        if end >= span {
            span = end;
            last_line = k.line;
        }
        jobs.push(JobSpec {
            arrival,
            duration: k.duration,
        });
    }
    if span > MAX_SPAN {
        let first_line = kept.first().map_or(0, |k| k.line);
        return Err(TraceError::TooLong {
            span,
            first_line,
            last_line,
        });
    }
    Ok(Trace { jobs, span, skipped })
}

/// An RFC 3339 timestamp as milliseconds since the Unix epoch.
fn timestamp(line: usize, field: &str, text: &str) -> Result<i64, TraceError> {
    let bad = |why: String| {
        TraceError::invalid(
            line,
            format!("{field} `{}` is not an RFC 3339 timestamp ({why})", shorten(text)),
            "write it like 2026-11-02T10:31:04Z or 2026-11-02T12:31:04.250+02:00",
        )
    };
    let t = OffsetDateTime::parse(text, &Rfc3339).map_err(|e| bad(e.to_string()))?;
    i64::try_from(t.unix_timestamp_nanos().div_euclid(1_000_000)).map_err(|_| bad("out of range".to_owned()))
}

/// At most 40 characters of `s`, for messages.
fn shorten(s: &str) -> String {
    let mut out: String = s.chars().take(40).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

/// Labels from a CSV field: separated by `;`, `,` or whitespace.
fn split_labels(field: &str) -> Vec<String> {
    field
        .split(|c: char| c == ';' || c == ',' || c.is_whitespace())
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

// ---------------------------------------------------------------------------------------------------
// CSV

/// The columns the parser knows, by position in a record.
#[derive(Debug, Default)]
struct Columns {
    queued: Option<usize>,
    started: Option<usize>,
    completed: Option<usize>,
    labels: Option<usize>,
    id: Option<usize>,
    conclusion: Option<usize>,
}

fn csv_jobs(text: &str) -> Result<Vec<(Format, RawJob)>, TraceError> {
    let records = csv_records(text)?;
    let mut records = records.into_iter();
    let Some((header_line, header)) = records.next() else {
        return Ok(Vec::new());
    };
    let mut cols = Columns::default();
    for (i, name) in header.iter().enumerate() {
        let name = name.trim().to_ascii_lowercase();
        let slot = match name.as_str() {
            "queued_at" | "created_at" => &mut cols.queued,
            "started_at" => &mut cols.started,
            "completed_at" => &mut cols.completed,
            "labels" => &mut cols.labels,
            "id" => &mut cols.id,
            "conclusion" => &mut cols.conclusion,
            _ => continue,
        };
        if slot.is_some() {
            return Err(TraceError::invalid(
                header_line,
                format!("the header names the column `{name}` twice (queued_at and created_at are the same column)"),
                "keep one of them",
            ));
        }
        *slot = Some(i);
    }
    let (Some(q), Some(s), Some(c)) = (cols.queued, cols.started, cols.completed) else {
        let missing: Vec<&str> = [
            (cols.queued, "queued_at"),
            (cols.started, "started_at"),
            (cols.completed, "completed_at"),
        ]
        .iter()
        .filter(|(col, _)| col.is_none())
        .map(|(_, name)| *name)
        .collect();
        return Err(TraceError::invalid(
            header_line,
            format!("the header row lacks the column(s) {}", missing.join(", ")),
            "the first line must name the columns, e.g. queued_at,started_at,completed_at,labels",
        ));
    };
    let mut jobs = Vec::new();
    for (line, fields) in records {
        if fields.len() != header.len() {
            return Err(TraceError::invalid(
                line,
                format!("{} fields where the header has {}", fields.len(), header.len()),
                "give every row one field per header column, and quote fields that contain commas",
            ));
        }
        let get = |i: usize| {
            fields
                .get(i)
                .map(|f| f.trim())
                .filter(|f| !f.is_empty())
                .map(str::to_owned)
        };
        jobs.push((
            Format::Csv,
            RawJob {
                line,
                id: cols.id.and_then(get),
                queued: get(q),
                started: get(s),
                completed: get(c),
                labels: cols.labels.and_then(get).map(|l| split_labels(&l)).unwrap_or_default(),
                never_ran: cols
                    .conclusion
                    .and_then(get)
                    .is_some_and(|c| c.eq_ignore_ascii_case("skipped")),
                not_completed_event: false,
            },
        ));
    }
    Ok(jobs)
}

/// Split CSV text into records (RFC 4180 quoting, `""` inside quotes, CRLF or LF), each with the line
/// it starts on. Blank lines are dropped.
fn csv_records(text: &str) -> Result<Vec<(usize, Vec<String>)>, TraceError> {
    let mut records = Vec::new();
    let mut fields: Vec<String> = Vec::new();
    let mut field = String::new();
    let mut line = 1;
    let mut record_line = 1;
    let mut in_quotes = false;
    let mut quote_line = 1;
    // The current field was quoted and its quote closed: only whitespace may follow before a separator.
    let mut after_quote = false;
    let mut quoted_any = false;
    let mut chars = text.chars().peekable();
    while let Some(ch) = chars.next() {
        if in_quotes {
            match ch {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => {
                    in_quotes = false;
                    after_quote = true;
                }
                '\n' => {
                    line += 1;
                    field.push('\n');
                }
                _ => field.push(ch),
            }
            continue;
        }
        match ch {
            ',' => {
                fields.push(std::mem::take(&mut field));
                after_quote = false;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                fields.push(std::mem::take(&mut field));
                let blank = !quoted_any && fields.len() == 1 && fields.iter().all(|f| f.trim().is_empty());
                if !blank {
                    records.push((record_line, std::mem::take(&mut fields)));
                }
                fields.clear();
                after_quote = false;
                quoted_any = false;
                line += 1;
                record_line = line;
            }
            '"' if !after_quote && field.trim().is_empty() => {
                field.clear();
                in_quotes = true;
                quoted_any = true;
                quote_line = line;
            }
            _ if after_quote => {
                if !ch.is_whitespace() {
                    return Err(TraceError::invalid(
                        line,
                        "text after the closing quote of a field",
                        "put the whole field inside the quotes and double any quote within it (\"\")",
                    ));
                }
            }
            _ => field.push(ch),
        }
    }
    if in_quotes {
        return Err(TraceError::invalid(
            quote_line,
            "a quoted field is never closed",
            "close the quote, and double any quote inside the field (\"\")",
        ));
    }
    fields.push(field);
    let blank = !quoted_any && fields.len() == 1 && fields.iter().all(|f| f.trim().is_empty());
    if !blank {
        records.push((record_line, fields));
    }
    Ok(records)
}

// ---------------------------------------------------------------------------------------------------
// JSONL

fn jsonl_jobs(text: &str) -> Result<Vec<(Format, RawJob)>, TraceError> {
    use serde_json::Value;
    let mut jobs = Vec::new();
    for (i, text_line) in text.lines().enumerate() {
        let line = i + 1;
        let text_line = text_line.trim();
        if text_line.is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(text_line).map_err(|e| {
            TraceError::invalid(
                line,
                format!("not a JSON object ({e})"),
                "write one job object per line (jq -c), not pretty-printed JSON",
            )
        })?;
        let Value::Object(obj) = value else {
            return Err(TraceError::invalid(
                line,
                format!("a JSON {} where a job object was expected", kind(&value)),
                "write one job object per line (jq -c '.jobs[]')",
            ));
        };
        if let Some(wj) = obj.get("workflow_job") {
            let Value::Object(job) = wj else {
                return Err(TraceError::invalid(
                    line,
                    format!("workflow_job is a JSON {}, not an object", kind(wj)),
                    "give the webhook payload as GitHub delivered it",
                ));
            };
            let action = obj.get("action").and_then(Value::as_str);
            if action.is_some_and(|a| a != "completed") {
                jobs.push((
                    Format::Json,
                    RawJob {
                        line,
                        not_completed_event: true,
                        ..RawJob::default()
                    },
                ));
                continue;
            }
            jobs.push((Format::Json, json_job(line, job)?));
        } else if let (Some(Value::Array(page)), false) = (obj.get("jobs"), obj.contains_key("created_at")) {
            // A whole page of the jobs API on one line (`gh api ... | jq -c .`).
            for job in page {
                let Value::Object(job) = job else {
                    return Err(TraceError::invalid(
                        line,
                        format!("an element of jobs is a JSON {}, not an object", kind(job)),
                        "give the jobs API page as GitHub returned it",
                    ));
                };
                jobs.push((Format::Json, json_job(line, job)?));
            }
        } else {
            jobs.push((Format::Json, json_job(line, &obj)?));
        }
    }
    Ok(jobs)
}

fn json_job(line: usize, obj: &serde_json::Map<String, serde_json::Value>) -> Result<RawJob, TraceError> {
    use serde_json::Value;
    let ts = |key: &str| -> Result<Option<String>, TraceError> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.trim().to_owned())),
            Some(other) => Err(TraceError::invalid(
                line,
                format!("{key} is a JSON {}", kind(other)),
                format!("give {key} as an RFC 3339 string, or null if the job has none"),
            )),
        }
    };
    let queued = match ts("created_at")? {
        Some(q) => Some(q),
        None => ts("queued_at")?,
    };
    let labels = match obj.get("labels") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => {
            let mut labels = Vec::with_capacity(items.len());
            for item in items {
                let Value::String(l) = item else {
                    return Err(TraceError::invalid(
                        line,
                        format!("labels holds a JSON {}", kind(item)),
                        "give labels as an array of strings, e.g. [\"self-hosted\",\"linux\"]",
                    ));
                };
                labels.push(l.trim().to_owned());
            }
            labels
        }
        Some(other) => {
            return Err(TraceError::invalid(
                line,
                format!("labels is a JSON {}", kind(other)),
                "give labels as an array of strings, e.g. [\"self-hosted\",\"linux\"]",
            ))
        }
    };
    let id = match obj.get("id") {
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    };
    let skipped = obj
        .get("conclusion")
        .and_then(Value::as_str)
        .is_some_and(|c| c.eq_ignore_ascii_case("skipped"));
    let no_runner = matches!(obj.get("runner_name"), Some(Value::Null));
    Ok(RawJob {
        line,
        id,
        queued,
        started: ts("started_at")?,
        completed: ts("completed_at")?,
        labels,
        never_ran: skipped || no_runner,
        not_completed_event: false,
    })
}

fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lifecycle_core::Rng;

    fn all() -> TraceOptions {
        TraceOptions::default()
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn at(s: u64) -> Time {
        Time::ZERO + secs(s)
    }

    fn line_of(r: Result<Trace, TraceError>) -> (usize, String) {
        match r {
            Err(e) => (e.line().unwrap_or(0), e.to_string()),
            Ok(t) => panic!("expected an error, got {t:?}"),
        }
    }

    const CSV: &str = "\
id,queued_at,started_at,completed_at,labels,workflow
1,2026-11-02T10:00:00Z,2026-11-02T10:00:20Z,2026-11-02T10:05:20Z,self-hosted;linux;x64,build
2,2026-11-02T09:59:00Z,2026-11-02T10:00:00Z,2026-11-02T10:01:00Z,self-hosted linux gpu,\"test, nightly\"
3,2026-11-02T10:02:00Z,,,self-hosted;linux;x64,cancelled
";

    #[test]
    fn csv_jobs_are_offset_from_the_earliest_and_sorted() {
        let t = parse_trace(CSV, &all()).expect("valid csv");
        assert_eq!(
            t.jobs,
            vec![
                JobSpec {
                    arrival: at(0),
                    duration: secs(60)
                },
                JobSpec {
                    arrival: at(60),
                    duration: secs(300)
                },
            ]
        );
        assert_eq!(t.span, secs(360));
        assert_eq!(t.skipped.not_started, 1);
        assert_eq!(t.skipped.total(), 1);
    }

    #[test]
    fn csv_columns_in_any_order_with_crlf_bom_and_quoted_commas() {
        let text = "\u{feff}labels,completed_at,extra,started_at,created_at\r\n\
                    \"self-hosted,gpu\",2026-11-02T10:10:00Z,\"a, \"\"b\"\"\",2026-11-02T10:00:00Z,2026-11-02T10:00:00Z\r\n\
                    \r\n";
        let t = parse_trace(text, &TraceOptions::from_label_list("gpu")).expect("valid csv");
        assert_eq!(t.jobs.len(), 1);
        assert_eq!(t.jobs[0].duration, secs(600));
    }

    #[test]
    fn label_filter_needs_all_labels_case_insensitively() {
        let opts = TraceOptions::from_label_list(" Self-Hosted , x64 ,");
        assert_eq!(opts.labels, vec!["Self-Hosted", "x64"]);
        let t = parse_trace(CSV, &opts).expect("one job matches");
        assert_eq!(t.jobs.len(), 1);
        assert_eq!(t.jobs[0].duration, secs(300));
        // The kept job is the first arrival, whatever was queued before it.
        assert_eq!(t.jobs[0].arrival, at(0));
        assert_eq!(t.skipped.label_mismatch, 1);
        assert_eq!(t.skipped.not_started, 1);
        let err = parse_trace(CSV, &TraceOptions::from_label_list("arm64")).expect_err("nothing matches");
        assert!(matches!(err, TraceError::Empty { skipped } if skipped.label_mismatch == 2));
    }

    #[test]
    fn jsonl_rest_and_webhook_shapes() {
        let text = r#"
{"id":10,"created_at":"2026-11-02T10:00:00Z","started_at":"2026-11-02T10:00:05Z","completed_at":"2026-11-02T10:02:05Z","labels":["self-hosted","linux"],"runner_name":"i-0abc"}

{"action":"queued","workflow_job":{"id":11,"created_at":"2026-11-02T10:01:00Z","started_at":null,"completed_at":null,"labels":["self-hosted"]}}
{"action":"completed","workflow_job":{"id":11,"created_at":"2026-11-02T10:01:00Z","started_at":"2026-11-02T10:01:30Z","completed_at":"2026-11-02T10:03:30Z","labels":["self-hosted"],"runner_name":"i-0def"}}
{"action":"completed","workflow_job":{"id":11,"created_at":"2026-11-02T10:01:00Z","started_at":"2026-11-02T10:01:30Z","completed_at":"2026-11-02T10:03:30Z","labels":["self-hosted"]}}
{"action":"completed","workflow_job":{"id":12,"created_at":"2026-11-02T10:01:00Z","started_at":"2026-11-02T10:01:00Z","completed_at":"2026-11-02T10:01:00Z","conclusion":"skipped","runner_name":null,"labels":[]}}
{"id":13,"created_at":"2026-11-02T10:04:00Z","started_at":"2026-11-02T10:04:10Z","completed_at":null,"labels":["self-hosted"]}
"#;
        let t = parse_trace(text, &all()).expect("valid jsonl");
        assert_eq!(
            t.jobs,
            vec![
                JobSpec {
                    arrival: at(0),
                    duration: secs(120)
                },
                JobSpec {
                    arrival: at(60),
                    duration: secs(120)
                },
            ]
        );
        let s = t.skipped;
        assert_eq!(
            (s.not_completed_event, s.duplicate, s.never_ran, s.unfinished),
            (1, 1, 1, 1)
        );
        assert_eq!(
            s.to_string(),
            "skipped 4 (1 unfinished, 1 never ran, 1 not-completed webhook events, 1 duplicate)"
        );
    }

    #[test]
    fn jsonl_accepts_a_whole_jobs_page_on_one_line() {
        let text = r#"{"total_count":2,"jobs":[{"created_at":"2026-11-02T10:00:00Z","started_at":"2026-11-02T10:00:00Z","completed_at":"2026-11-02T10:01:00Z","labels":["a"]},{"created_at":"2026-11-02T10:00:30Z","started_at":"2026-11-02T10:00:40Z","completed_at":"2026-11-02T10:01:00Z","labels":["b"]}]}"#;
        let t = parse_trace(text, &TraceOptions::from_label_list("b")).expect("valid page");
        assert_eq!(t.jobs.len(), 1);
        assert_eq!(t.jobs[0].duration, secs(20));
    }

    #[test]
    fn offsets_fractions_and_clamps() {
        // The same instant three ways; durations of 250 ms (clamped up) and 6 days (clamped down).
        let text = "queued_at,started_at,completed_at\n\
                    2026-11-02T12:00:00+02:00,2026-11-02T10:00:00Z,2026-11-02T10:00:00.250Z\n\
                    2026-11-02T05:00:00.5-05:00,2026-11-02T10:00:01Z,2026-11-08T10:00:01Z\n\
                    2026-11-02T10:00:01.750Z,2026-11-02T10:00:02Z,2026-11-02T10:00:04.5Z\n";
        let t = parse_trace(text, &all()).expect("valid");
        assert_eq!(t.jobs[0].arrival, Time::ZERO);
        assert_eq!(t.jobs[0].duration, MIN_JOB);
        assert_eq!(t.jobs[1].arrival, Time::from_millis(500));
        assert_eq!(t.jobs[1].duration, MAX_JOB);
        assert_eq!(t.jobs[2].arrival, Time::from_millis(1750));
        assert_eq!(t.jobs[2].duration, Duration::from_millis(2500));
        assert_eq!((t.skipped.clamped_short, t.skipped.clamped_long), (1, 1));
        assert_eq!(t.span, Duration::from_millis(500) + MAX_JOB);
        assert_eq!(
            t.skipped.to_string(),
            "skipped 0; clamped 1 to 1 s; clamped 1 to 5 days"
        );
    }

    #[test]
    fn ties_keep_file_order() {
        let text = "queued_at,started_at,completed_at\n\
                    2026-11-02T10:00:00Z,2026-11-02T10:00:00Z,2026-11-02T10:00:03Z\n\
                    2026-11-02T09:00:00Z,2026-11-02T10:00:00Z,2026-11-02T10:00:09Z\n\
                    2026-11-02T10:00:00Z,2026-11-02T10:00:00Z,2026-11-02T10:00:02Z\n";
        let t = parse_trace(text, &all()).expect("valid");
        let d: Vec<u64> = t.jobs.iter().map(|j| j.duration.as_secs()).collect();
        assert_eq!(d, vec![9, 3, 2]);
    }

    #[test]
    fn errors_name_the_line() {
        let head = "queued_at,started_at,completed_at\n";
        let cases: Vec<(String, usize, &str)> = vec![
            (
                format!("{head}\n2026-11-02T10:00:00Z,2026-11-02T10:05:00Z,2026-11-02T10:04:00Z\n"),
                3,
                "before started_at",
            ),
            (
                format!("{head}2026-11-02T10:00:00Z,2026-11-02T09:59:00Z,2026-11-02T10:04:00Z\n"),
                2,
                "before queued_at",
            ),
            (
                format!("{head}2026-11-02 10:00,2026-11-02T10:00:00Z,2026-11-02T10:04:00Z\n"),
                2,
                "not an RFC 3339 timestamp",
            ),
            (
                format!("{head},2026-11-02T10:00:00Z,2026-11-02T10:04:00Z\n"),
                2,
                "no queued_at",
            ),
            (format!("{head}a,b\n"), 2, "2 fields where the header has 3"),
            (format!("{head}\"2026,b,c\n\nx\n"), 2, "never closed"),
            (format!("{head}\"a\"b,c,d\n"), 2, "after the closing quote"),
            (
                "queued_at,start,completed_at\n".to_owned(),
                1,
                "lacks the column(s) started_at",
            ),
            ("created_at,queued_at,started_at,completed_at\n".to_owned(), 1, "twice"),
            ("{\"created_at\":1}\n".to_owned(), 1, "created_at is a JSON number"),
            ("\n{\"created_at\":\"x\"}\n[1]\n".to_owned(), 3, "a JSON array"),
            ("{\"labels\":\"a\"}\n".to_owned(), 1, "labels is a JSON string"),
            ("{}\n{\"a\":\n".to_owned(), 2, "not a JSON object"),
            (
                "{\"created_at\":\"2026-11-02T10:00:00Z\",\"started_at\":\"2026-11-02T10:01:00Z\",\
                 \"completed_at\":\"2026-11-02T10:00:30Z\"}\n"
                    .to_owned(),
                1,
                "completed_at 2026-11-02T10:00:30Z is before started_at 2026-11-02T10:01:00Z",
            ),
        ];
        for (text, line, what) in cases {
            let (got, msg) = line_of(parse_trace(&text, &all()));
            assert_eq!(got, line, "{msg}\n--- for ---\n{text}");
            assert!(msg.contains(what), "{msg:?} lacks {what:?}");
            assert!(msg.starts_with(&format!("line {line}: ")), "{msg}");
            assert!(msg.contains("; "), "says what to do: {msg}");
        }
    }

    #[test]
    fn empty_and_absurd_traces_are_errors() {
        for text in [
            "",
            "  \n\n",
            "queued_at,started_at,completed_at\n",
            "{}\n",
            "{\"created_at\":\"2026-11-02T10:00:00Z\"}",
        ] {
            match parse_trace(text, &all()) {
                Err(TraceError::Empty { .. }) => {}
                // `{}` has no queued time: an error naming line 1 is as good.
                Err(e) if e.line() == Some(1) => {}
                other => panic!("{text:?}: {other:?}"),
            }
        }
        let text = "queued_at,started_at,completed_at\n\
                    2025-10-01T10:00:00Z,2025-10-01T10:00:00Z,2025-10-01T10:00:09Z\n\
                    2026-12-02T10:00:00Z,2026-12-02T10:00:00Z,2026-12-02T10:00:09Z\n";
        let err = parse_trace(text, &all()).expect_err("427 days");
        assert!(
            matches!(
                err,
                TraceError::TooLong {
                    first_line: 2,
                    last_line: 3,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn load_trace_reports_missing_files_and_bad_utf8() {
        let dir = std::env::temp_dir().join(format!("lifecycle-sim-trace-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let missing = dir.join("missing.csv");
        assert!(matches!(load_trace(&missing, &all()), Err(TraceError::Read { .. })));
        let bad = dir.join("bad.csv");
        std::fs::write(&bad, b"queued_at,started_at,completed_at\nab\xffcd\n").expect("write");
        let err = load_trace(&bad, &all()).expect_err("not utf-8");
        assert_eq!(err.line(), Some(2), "{err}");
        let good = dir.join("good.csv");
        std::fs::write(&good, CSV).expect("write");
        assert_eq!(load_trace(&good, &all()).expect("valid").jobs.len(), 2);
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn the_example_trace_parses() {
        let text = include_str!("../traces/example.csv");
        let t = parse_trace(text, &all()).expect("example trace");
        // docs/simulation-traces.md quotes these figures.
        assert_eq!(t.jobs.len(), 260);
        assert_eq!(
            (t.skipped.not_started, t.skipped.never_ran, t.skipped.total()),
            (6, 3, 9)
        );
        assert!(
            t.span > secs(24 * 3600) && t.span <= secs(3 * 24 * 3600),
            "{:?}",
            t.span
        );
        assert!(t.jobs.windows(2).all(|w| w[0].arrival <= w[1].arrival));
        let gpu = parse_trace(text, &TraceOptions::from_label_list("self-hosted,gpu")).expect("gpu jobs");
        assert_eq!(gpu.jobs.len(), 17);
        assert_eq!(gpu.skipped.label_mismatch + gpu.jobs.len() as u64, t.jobs.len() as u64);
    }

    /// Random text, and valid traces mangled at random, must give Ok or Err: never a panic.
    #[test]
    fn arbitrary_input_never_panics() {
        let mut rng = Rng::new(0x7ace);
        let seeds = [
            CSV.to_owned(),
            include_str!("../traces/example.csv").chars().take(2000).collect(),
            r#"{"action":"completed","workflow_job":{"id":1,"created_at":"2026-11-02T10:00:00Z","started_at":"2026-11-02T10:00:01Z","completed_at":"2026-11-02T10:00:09.5+01:00","labels":["x"]}}"#.to_owned(),
        ];
        let alphabet: Vec<char> = "{}[]\",:;\n\r 0123456789-+TZ.:ézqueud_atlbsn\u{feff}\u{0}"
            .chars()
            .collect();
        let opts = [all(), TraceOptions::from_label_list("x,gpu")];
        for round in 0..3000u64 {
            let text: String = match round % 3 {
                0 => {
                    let n = rng.below(200) as usize;
                    let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
                    String::from_utf8_lossy(&bytes).into_owned()
                }
                1 => {
                    let n = rng.below(300) as usize;
                    (0..n)
                        .map(|_| alphabet[rng.below(alphabet.len() as u64) as usize])
                        .collect()
                }
                _ => {
                    let mut chars: Vec<char> = seeds[rng.below(seeds.len() as u64) as usize].chars().collect();
                    for _ in 0..1 + rng.below(8) {
                        let at = rng.below(chars.len() as u64 + 1) as usize;
                        match rng.below(3) {
                            0 => chars.insert(at, alphabet[rng.below(alphabet.len() as u64) as usize]),
                            1 if at < chars.len() => {
                                chars.remove(at);
                            }
                            _ => {
                                if let Some(c) = chars.get_mut(at) {
                                    *c = char::from(rng.next_u64() as u8);
                                }
                            }
                        }
                    }
                    chars.into_iter().collect()
                }
            };
            let r = parse_trace(&text, &opts[(round % 2) as usize]);
            if let Ok(t) = r {
                assert!(!t.jobs.is_empty());
                assert!(t.jobs.iter().all(|j| j.duration >= MIN_JOB && j.duration <= MAX_JOB));
                assert!(t.span <= MAX_SPAN);
            }
        }
    }
}
