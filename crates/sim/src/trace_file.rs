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
//! The file is read line by line as it is parsed, so memory grows with the jobs kept, not with the
//! file; and it is bounded: [`MAX_TRACE_BYTES`], [`MAX_LINE_BYTES`], [`MAX_TRACE_JOBS`] and
//! [`MAX_CSV_FIELDS`] say how far, and why.

use crate::workload::JobSpec;
use lifecycle_core::Time;
use std::collections::BTreeSet;
use std::fmt;
use std::io::{BufRead, BufReader, Read};
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
/// Most jobs in one trace: CSV rows and JSON job objects, skipped ones included (webhook deliveries
/// other than `completed` do not count). 1.6 times the simulator's benchmark month (1,000 instances
/// for 30 days: 1.25 M jobs, `simulate --instances 1000 --days 30` in 8 s), or a year of a
/// 100-runner fleet. Parsing holds about 140 bytes a job (its times, and its id to spot duplicates:
/// 171 MB for 1.25 M jobs, measured), so under 300 MB at the limit.
pub const MAX_TRACE_JOBS: u64 = 2_000_000;
/// Largest trace read, in bytes (1 GiB). [`MAX_TRACE_JOBS`] jobs in the JSONL the docs' export
/// writes take about 440 MB (217 bytes a job); the rest leaves room for lines that are skipped, such
/// as webhook deliveries other than `completed`. Memory does not grow with it (the file is read a line
/// at a time); it bounds the time spent reading: a release build parses that JSONL at 60 MB/s, so
/// about 20 s.
pub const MAX_TRACE_BYTES: u64 = 1 << 30;
/// Longest line read (16 MiB), or CSV record, which may span lines inside quotes. A jobs-API page of
/// 100 jobs, steps included, takes some hundreds of KiB, and a webhook delivery tens of KiB. It
/// bounds what a file without line breaks (`/dev/zero`) makes the reader hold.
pub const MAX_LINE_BYTES: usize = 16 << 20;
/// Most fields in one CSV record. The simulator reads 6 columns; a thousand leaves room for any
/// spreadsheet export and bounds the memory of a row of empty fields (`,,,,`), which cost far more
/// held apart than as text.
pub const MAX_CSV_FIELDS: usize = 1000;

/// The limits a trace is read with: the constants above, smaller in tests.
#[derive(Clone, Copy, Debug)]
struct Limits {
    bytes: u64,
    line_bytes: usize,
    jobs: u64,
    csv_fields: usize,
}

const LIMITS: Limits = Limits {
    bytes: MAX_TRACE_BYTES,
    line_bytes: MAX_LINE_BYTES,
    jobs: MAX_TRACE_JOBS,
    csv_fields: MAX_CSV_FIELDS,
};

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
    /// The trace is larger than [`MAX_TRACE_BYTES`].
    TooLarge {
        /// Its size, when the file says it (a regular file); a pipe is read up to the limit.
        size: Option<u64>,
        /// The limit, in bytes.
        limit: u64,
    },
    /// The trace holds more than [`MAX_TRACE_JOBS`] jobs.
    TooManyJobs {
        /// The line of the first job over the limit.
        line: usize,
        /// The limit.
        limit: u64,
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
            TraceError::Invalid { line, .. } | TraceError::TooManyJobs { line, .. } => Some(*line),
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
            TraceError::TooLarge { size, limit } => {
                match size {
                    Some(size) => write!(
                        f,
                        "the trace is {size} bytes, more than the {limit} bytes a trace may hold"
                    )?,
                    None => write!(f, "the trace holds more than the {limit} bytes a trace may hold")?,
                }
                write!(
                    f,
                    "; keep only the fields the simulator reads (docs/simulation-traces.md), or split the trace"
                )
            }
            TraceError::TooManyJobs { line, limit } => write!(
                f,
                "line {line}: the trace holds more than {limit} jobs; split it, or keep one group's jobs \
                 (--trace-labels does that only after reading them)"
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

/// Read and parse a trace file (UTF-8, CSV or JSONL), a line at a time. A regular file larger than
/// [`MAX_TRACE_BYTES`] is refused before it is read; anything else (a pipe: `--trace <(jq ...)`) is
/// read up to that limit.
pub fn load_trace(path: &Path, opts: &TraceOptions) -> Result<Trace, TraceError> {
    let read_error = |source| TraceError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let meta = file.metadata().map_err(read_error)?;
    if meta.is_file() && meta.len() > LIMITS.bytes {
        return Err(TraceError::TooLarge {
            size: Some(meta.len()),
            limit: LIMITS.bytes,
        });
    }
    read_trace(BufReader::new(file), path, opts, LIMITS)
}

/// Parse a trace held in memory. See the module documentation for the formats.
pub fn parse_trace(text: &str, opts: &TraceOptions) -> Result<Trace, TraceError> {
    read_trace(text.as_bytes(), Path::new("(text)"), opts, LIMITS)
}

/// Parse a trace as it is read. The format is told by the first non-blank character: `{` for JSONL.
///
/// Which error is reported when a file has several: the checks come in stages, and an error of an
/// earlier stage wins wherever it is in the file, as when the whole file was checked stage by stage.
/// In order: the file itself (UTF-8, and the limits, which stop the reading at once); the syntax
/// (CSV quoting, JSON, field types); the CSV header and row widths; then each job's times. The
/// first error of a stage stops that stage and the later ones; the earlier ones check the rest.
fn read_trace(reader: impl BufRead, path: &Path, opts: &TraceOptions, limits: Limits) -> Result<Trace, TraceError> {
    let mut lines = Lines {
        reader,
        path,
        limits,
        number: 0,
        total: 0,
    };
    let mut jobs = Assembler::new(opts, limits.jobs);
    let mut line = loop {
        match lines.next_line()? {
            Some((_, text)) if text.trim().is_empty() => {}
            Some(first) => break first,
            None => return jobs.finish(),
        }
    };
    let mut syntax_error = None;
    if line.1.trim_start().starts_with('{') {
        loop {
            if syntax_error.is_none() {
                syntax_error = stage(jsonl_line(line.0, &line.1, &mut jobs))?;
            }
            match lines.next_line()? {
                Some(next) => line = next,
                None => break,
            }
        }
    } else {
        let mut csv = CsvJobs::new(limits);
        loop {
            if syntax_error.is_none() {
                syntax_error = stage(csv.feed(line.0, &line.1, &mut jobs))?;
            }
            match lines.next_line()? {
                Some(next) => line = next,
                None => break,
            }
        }
        if syntax_error.is_none() {
            syntax_error = stage(csv.finish(&mut jobs))?;
        }
        if let (None, Some(e)) = (&syntax_error, csv.row_error) {
            return Err(e);
        }
    }
    match syntax_error {
        Some(e) => Err(e),
        None => jobs.finish(),
    }
}

/// A syntax error to keep while the rest of the file is read (see [`read_trace`]); the job limit
/// stops the reading at once.
fn stage(result: Result<(), TraceError>) -> Result<Option<TraceError>, TraceError> {
    match result {
        Ok(()) => Ok(None),
        Err(e @ TraceError::TooManyJobs { .. }) => Err(e),
        Err(e) => Ok(Some(e)),
    }
}

/// A trace's lines, with their numbers, each at most [`MAX_LINE_BYTES`], the whole at most
/// [`MAX_TRACE_BYTES`].
struct Lines<'p, R> {
    reader: R,
    path: &'p Path,
    limits: Limits,
    /// The number of the last line read (1-based).
    number: usize,
    /// Bytes read so far.
    total: u64,
}

impl<R: BufRead> Lines<'_, R> {
    /// The next line and its number, its line break kept (the last line may lack one); `None` at the
    /// end. A byte-order mark at the start of the file is dropped.
    fn next_line(&mut self) -> Result<Option<(usize, String)>, TraceError> {
        let mut bytes = Vec::new();
        let cap = u64::try_from(self.limits.line_bytes)
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let n = (&mut self.reader)
            .take(cap)
            .read_until(b'\n', &mut bytes)
            .map_err(|source| TraceError::Read {
                path: self.path.to_owned(),
                source,
            })?;
        if n == 0 {
            return Ok(None);
        }
        self.number += 1;
        self.total = self.total.saturating_add(n as u64);
        if self.total > self.limits.bytes {
            return Err(TraceError::TooLarge {
                size: None,
                limit: self.limits.bytes,
            });
        }
        if bytes.len() > self.limits.line_bytes && bytes.last() != Some(&b'\n') {
            return Err(TraceError::invalid(
                self.number,
                format!("the line is longer than {} bytes", self.limits.line_bytes),
                "give one job per line (jq -c); is this a trace file?",
            ));
        }
        let text = String::from_utf8(bytes)
            .map_err(|_| TraceError::invalid(self.number, "the text is not valid UTF-8", "save the trace as UTF-8"))?;
        Ok(Some(match text.strip_prefix('\u{feff}') {
            Some(rest) if self.number == 1 => (1, rest.to_owned()),
            _ => (self.number, text),
        }))
    }
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

/// Jobs as they are read: validated, counted, kept or skipped one at a time.
struct Assembler {
    wanted: Vec<String>,
    skipped: TraceSkips,
    seen_ids: BTreeSet<String>,
    kept: Vec<Kept>,
    /// Jobs added so far, and the most allowed.
    jobs: u64,
    max_jobs: u64,
    /// The first job found wrong: reported at the end, unless an earlier stage fails (see
    /// [`read_trace`]). Jobs after it are not looked at.
    error: Option<TraceError>,
}

impl Assembler {
    fn new(opts: &TraceOptions, max_jobs: u64) -> Assembler {
        Assembler {
            wanted: opts
                .labels
                .iter()
                .map(|l| l.trim().to_ascii_lowercase())
                .filter(|l| !l.is_empty())
                .collect(),
            skipped: TraceSkips::default(),
            seen_ids: BTreeSet::new(),
            kept: Vec::new(),
            jobs: 0,
            max_jobs,
            error: None,
        }
    }

    /// One job as the file states it: kept, or counted as skipped, or kept as the trace's error. Only
    /// the job limit is an error at once.
    fn add(&mut self, format: Format, job: RawJob) -> Result<(), TraceError> {
        if self.error.is_some() {
            return Ok(());
        }
        match self.take(format, job) {
            Err(e @ TraceError::TooManyJobs { .. }) => Err(e),
            Err(e) => {
                self.error = Some(e);
                Ok(())
            }
            Ok(()) => Ok(()),
        }
    }

    fn take(&mut self, format: Format, job: RawJob) -> Result<(), TraceError> {
        if job.not_completed_event {
            self.skipped.not_completed_event += 1;
            return Ok(());
        }
        let line = job.line;
        self.jobs += 1;
        if self.jobs > self.max_jobs {
            return Err(TraceError::TooManyJobs {
                line,
                limit: self.max_jobs,
            });
        }
        let skipped = &mut self.skipped;
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
            return Ok(());
        };
        let started = timestamp(line, "started_at", started_text)?;
        let Some(completed_text) = job.completed.as_deref() else {
            skipped.unfinished += 1;
            return Ok(());
        };
        let completed = timestamp(line, "completed_at", completed_text)?;
        if job.never_ran {
            skipped.never_ran += 1;
            return Ok(());
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
            if !self.seen_ids.insert(id) {
                skipped.duplicate += 1;
                return Ok(());
            }
        }
        if !self
            .wanted
            .iter()
            .all(|w| job.labels.iter().any(|l| l.eq_ignore_ascii_case(w)))
        {
            skipped.label_mismatch += 1;
            return Ok(());
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
        self.kept.push(Kept {
            line,
            queued_ms: queued,
            duration,
        });
        Ok(())
    }

    /// The kept jobs as the driver takes them, sorted by arrival.
    fn finish(self) -> Result<Trace, TraceError> {
        let Assembler {
            skipped,
            mut kept,
            error,
            ..
        } = self;
        if let Some(e) = error {
            return Err(e);
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

/// CSV jobs as the lines come: the header row names the columns, then each record is one job.
struct CsvJobs {
    split: CsvRecords,
    /// The header row: the columns it names, and how many; `None` until it is read.
    header: Option<(Columns, usize)>,
    /// The first error in the header or a row's width: reported at the end unless the CSV syntax
    /// fails (see [`read_trace`]). Rows after it are not looked at.
    row_error: Option<TraceError>,
}

impl CsvJobs {
    fn new(limits: Limits) -> CsvJobs {
        CsvJobs {
            split: CsvRecords::new(limits),
            header: None,
            row_error: None,
        }
    }

    /// One line of the file (line break kept).
    fn feed(&mut self, line: usize, text: &str, jobs: &mut Assembler) -> Result<(), TraceError> {
        match self.split.feed(line, text)? {
            Some((record_line, fields)) => self.record(record_line, fields, jobs),
            None => Ok(()),
        }
    }

    /// The end of the file: the last record, if its line had no line break.
    fn finish(&mut self, jobs: &mut Assembler) -> Result<(), TraceError> {
        match self.split.finish()? {
            Some((record_line, fields)) => self.record(record_line, fields, jobs),
            None => Ok(()),
        }
    }

    fn record(&mut self, line: usize, fields: Vec<String>, jobs: &mut Assembler) -> Result<(), TraceError> {
        if self.row_error.is_some() {
            return Ok(());
        }
        let Some((cols, width)) = &self.header else {
            match header_columns(line, &fields) {
                Ok(cols) => self.header = Some((cols, fields.len())),
                Err(e) => self.row_error = Some(e),
            }
            return Ok(());
        };
        if fields.len() != *width {
            self.row_error = Some(TraceError::invalid(
                line,
                format!("{} fields where the header has {width}", fields.len()),
                "give every row one field per header column, and quote fields that contain commas",
            ));
            return Ok(());
        }
        let get = |i: usize| {
            fields
                .get(i)
                .map(|f| f.trim())
                .filter(|f| !f.is_empty())
                .map(str::to_owned)
        };
        let job = RawJob {
            line,
            id: cols.id.and_then(get),
            queued: cols.queued.and_then(get),
            started: cols.started.and_then(get),
            completed: cols.completed.and_then(get),
            labels: cols.labels.and_then(get).map(|l| split_labels(&l)).unwrap_or_default(),
            never_ran: cols
                .conclusion
                .and_then(get)
                .is_some_and(|c| c.eq_ignore_ascii_case("skipped")),
            not_completed_event: false,
        };
        jobs.add(Format::Csv, job)
    }
}

/// The columns a header row names; an error unless it names the three times (so a row's missing
/// time is an empty field, never a missing column).
fn header_columns(header_line: usize, header: &[String]) -> Result<Columns, TraceError> {
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
    if cols.queued.is_none() || cols.started.is_none() || cols.completed.is_none() {
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
    }
    Ok(cols)
}

/// Splits CSV into records (RFC 4180 quoting, `""` inside quotes, CRLF or LF) as lines come, each
/// record with the line it starts on. Blank lines are dropped. A record holds at most
/// [`MAX_CSV_FIELDS`] fields and [`MAX_LINE_BYTES`] bytes.
struct CsvRecords {
    limits: Limits,
    fields: Vec<String>,
    field: String,
    record_line: usize,
    /// Bytes of the record so far (it spans lines only inside quotes).
    record_bytes: usize,
    in_quotes: bool,
    quote_line: usize,
    /// The current field was quoted and its quote closed: only whitespace may follow before a separator.
    after_quote: bool,
    quoted_any: bool,
}

impl CsvRecords {
    fn new(limits: Limits) -> CsvRecords {
        CsvRecords {
            limits,
            fields: Vec::new(),
            field: String::new(),
            record_line: 1,
            record_bytes: 0,
            in_quotes: false,
            quote_line: 1,
            after_quote: false,
            quoted_any: false,
        }
    }

    /// One line, its line break kept: the record it completes, if any. A line break outside quotes
    /// ends a record, and a line holds no other line break, so a line completes at most one.
    fn feed(&mut self, line: usize, text: &str) -> Result<Option<(usize, Vec<String>)>, TraceError> {
        if !self.in_quotes {
            self.record_line = line;
            self.record_bytes = 0;
        }
        self.record_bytes += text.len();
        // As long as the longest line and its line break.
        if self.record_bytes > self.limits.line_bytes.saturating_add(1) {
            return Err(TraceError::invalid(
                self.quote_line,
                format!("a quoted field runs on for more than {} bytes", self.limits.line_bytes),
                "close the quote, and double any quote inside the field (\"\")",
            ));
        }
        let mut chars = text.chars().peekable();
        while let Some(ch) = chars.next() {
            if self.in_quotes {
                match ch {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        self.field.push('"');
                    }
                    '"' => {
                        self.in_quotes = false;
                        self.after_quote = true;
                    }
                    _ => self.field.push(ch),
                }
                continue;
            }
            match ch {
                ',' => {
                    self.end_field()?;
                    self.after_quote = false;
                }
                '\r' if chars.peek() == Some(&'\n') => {}
                '\n' => return self.end_record(),
                '"' if !self.after_quote && self.field.trim().is_empty() => {
                    self.field.clear();
                    self.in_quotes = true;
                    self.quoted_any = true;
                    self.quote_line = line;
                }
                _ if self.after_quote => {
                    if !ch.is_whitespace() {
                        return Err(TraceError::invalid(
                            line,
                            "text after the closing quote of a field",
                            "put the whole field inside the quotes and double any quote within it (\"\")",
                        ));
                    }
                }
                _ => self.field.push(ch),
            }
        }
        Ok(None)
    }

    /// The end of the text: the last record, if its line had no line break.
    fn finish(&mut self) -> Result<Option<(usize, Vec<String>)>, TraceError> {
        if self.in_quotes {
            return Err(TraceError::invalid(
                self.quote_line,
                "a quoted field is never closed",
                "close the quote, and double any quote inside the field (\"\")",
            ));
        }
        self.end_record()
    }

    fn end_field(&mut self) -> Result<(), TraceError> {
        if self.fields.len() >= self.limits.csv_fields {
            return Err(TraceError::invalid(
                self.record_line,
                format!("more than {} fields in one row", self.limits.csv_fields),
                "keep the columns the simulator reads (queued_at, started_at, completed_at, labels, id, conclusion)",
            ));
        }
        self.fields.push(std::mem::take(&mut self.field));
        Ok(())
    }

    /// The record ends (a line break outside quotes, or the end of the text); blank ones are dropped.
    fn end_record(&mut self) -> Result<Option<(usize, Vec<String>)>, TraceError> {
        self.end_field()?;
        let fields = std::mem::take(&mut self.fields);
        let blank = !self.quoted_any && fields.len() == 1 && fields.iter().all(|f| f.trim().is_empty());
        self.after_quote = false;
        self.quoted_any = false;
        Ok((!blank).then_some((self.record_line, fields)))
    }
}

// ---------------------------------------------------------------------------------------------------
// JSONL

/// One JSONL line: a job object, a webhook delivery, or a page of the jobs API.
fn jsonl_line(line: usize, text: &str, jobs: &mut Assembler) -> Result<(), TraceError> {
    use serde_json::Value;
    let text = text.trim();
    if text.is_empty() {
        return Ok(());
    }
    let value: Value = serde_json::from_str(text).map_err(|e| {
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
            let delivery = RawJob {
                line,
                not_completed_event: true,
                ..RawJob::default()
            };
            return jobs.add(Format::Json, delivery);
        }
        jobs.add(Format::Json, json_job(line, job)?)
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
            jobs.add(Format::Json, json_job(line, job)?)?;
        }
        Ok(())
    } else {
        jobs.add(Format::Json, json_job(line, &obj)?)
    }
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

    /// An error of an earlier stage wins wherever it is in the file, as when the whole file was
    /// checked stage by stage (`read_trace`): text, then syntax, then the header and row widths, then
    /// each job's times.
    #[test]
    fn the_earliest_stage_decides_which_error_is_reported() {
        let read = |bytes: &[u8]| read_trace(bytes, Path::new("t"), &all(), LIMITS).expect_err("invalid");
        let head = "queued_at,started_at,completed_at\n";
        let bad_time = "yesterday,2026-11-02T10:00:00Z,2026-11-02T10:04:00Z\n";
        let narrow = "a,b\n";
        let bad_quote = "\"a\"b,c,d\n";
        let cases: [(String, &[u8], usize); 3] = [
            (format!("{head}{bad_time}{narrow}"), b"", 3),
            (format!("{head}{bad_time}{narrow}{bad_quote}"), b"", 4),
            (format!("{head}{bad_quote}"), b"\xff\n", 3),
        ];
        for (text, tail, line) in cases {
            let bytes = [text.as_bytes(), tail].concat();
            let err = read(&bytes);
            assert_eq!(err.line(), Some(line), "{err}");
        }
    }

    /// `/dev/zero` is one endless line: refused at the line limit, not read until memory runs out.
    #[cfg(unix)]
    #[test]
    fn an_endless_file_is_refused_at_the_line_limit() {
        let err = load_trace(Path::new("/dev/zero"), &all()).expect_err("endless");
        assert_eq!(err.line(), Some(1), "{err}");
        assert!(
            err.to_string().contains(&format!("longer than {MAX_LINE_BYTES} bytes")),
            "{err}"
        );
    }

    /// A regular file over the limit is refused before it is read (this one is sparse: it takes no disk).
    #[test]
    fn an_oversized_file_is_refused_before_it_is_read() {
        let dir = std::env::temp_dir().join(format!("lifecycle-sim-trace-big-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let big = dir.join("big.csv");
        let file = std::fs::File::create(&big).expect("create");
        file.set_len(MAX_TRACE_BYTES + 1).expect("sparse file");
        let err = load_trace(&big, &all()).expect_err("too large");
        assert!(
            matches!(err, TraceError::TooLarge { size: Some(s), limit: MAX_TRACE_BYTES } if s == MAX_TRACE_BYTES + 1),
            "{err}"
        );
        assert!(err.to_string().contains("more than the 1073741824"), "{err}");
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    /// Every limit holds as the text streams in (smaller limits, so the test stays small).
    #[test]
    fn every_limit_is_enforced_as_the_trace_is_read() {
        let read = |text: &str, limits: Limits| read_trace(text.as_bytes(), Path::new("t"), &all(), limits);
        let len = CSV.len() as u64;
        assert!(read(CSV, Limits { bytes: len, ..LIMITS }).is_ok());
        let err = read(
            CSV,
            Limits {
                bytes: len - 1,
                ..LIMITS
            },
        )
        .expect_err("bytes");
        assert!(matches!(err, TraceError::TooLarge { size: None, .. }), "{err}");
        // Three rows, the third not started: skipped jobs count too.
        assert!(read(CSV, Limits { jobs: 3, ..LIMITS }).is_ok());
        let err = read(CSV, Limits { jobs: 2, ..LIMITS }).expect_err("jobs");
        assert!(matches!(err, TraceError::TooManyJobs { line: 4, limit: 2 }), "{err}");
        let longest = CSV.lines().map(str::len).max().unwrap_or(0);
        assert!(read(
            CSV,
            Limits {
                line_bytes: longest,
                ..LIMITS
            }
        )
        .is_ok());
        let err = read(
            CSV,
            Limits {
                line_bytes: longest - 1,
                ..LIMITS
            },
        )
        .expect_err("line");
        assert!(err.to_string().contains("longer than"), "{err}");
        // Six columns.
        assert!(read(
            CSV,
            Limits {
                csv_fields: 6,
                ..LIMITS
            }
        )
        .is_ok());
        let err = read(
            CSV,
            Limits {
                csv_fields: 5,
                ..LIMITS
            },
        )
        .expect_err("fields");
        assert_eq!(err.line(), Some(1), "{err}");
        assert!(err.to_string().contains("more than 5 fields"), "{err}");
        // A quoted field that never closes is refused once it runs past the line limit.
        let open = format!(
            "queued_at,started_at,completed_at\n\"{}",
            "a long line of text\n".repeat(10)
        );
        let err = read(
            &open,
            Limits {
                line_bytes: 100,
                ..LIMITS
            },
        )
        .expect_err("open quote");
        assert_eq!(err.line(), Some(2), "{err}");
        assert!(err.to_string().contains("runs on for more than 100 bytes"), "{err}");
        // Each job of a jobs-API page counts; webhook deliveries other than `completed` do not.
        let page = r#"{"jobs":[{"created_at":"2026-11-02T10:00:00Z"},{"created_at":"2026-11-02T10:00:00Z"}]}"#;
        let err = read(page, Limits { jobs: 1, ..LIMITS }).expect_err("page");
        assert!(matches!(err, TraceError::TooManyJobs { line: 1, limit: 1 }), "{err}");
        let queued = r#"{"action":"queued","workflow_job":{}}"#;
        let deliveries = format!("{queued}\n{queued}\n{queued}\n");
        let err = read(&deliveries, Limits { jobs: 1, ..LIMITS }).expect_err("nothing usable");
        assert!(
            matches!(err, TraceError::Empty { skipped } if skipped.not_completed_event == 3),
            "{err}"
        );
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
