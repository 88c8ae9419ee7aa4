//! Test runs ("executions"), their projects and their report files: identifiers, states and
//! paths parsed at the edge; runs created under the plan's limits and moved through their
//! states; files recorded against the storage limit.

mod files;
mod projects;
mod run_requests;
mod runs;

pub use files::{
    NewReport, Publish, ReportCommit, Reservation, commit_report, release_report_bytes,
    report_files, report_object, reserve_report_bytes,
};
pub use projects::{NewProjectOutcome, create_project, delete_project, projects};
pub use run_requests::{
    EnvVars, MAX_ENV_VALUE_BYTES, MAX_ENV_VARS, NewRunRequest, RunRequest, read_run_request,
};
pub use runs::{
    FinishNotice, Grouped, NewExecutionOutcome, RunGroup, UpdateOutcome, create_execution,
    delete_execution, execution, execution_exists, executions, grouped, run_stats,
    update_execution,
};

use crate::analysis::AnalysisRecord;

/// Where an execution is in its life. PENDING → RUNNING → one of the finished states
/// (PENDING may finish directly); a finished execution never moves again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pending,
    Running,
    Passed,
    Failed,
    Error,
    Unstable,
}

impl Status {
    pub const ALL: [Status; 6] = [
        Self::Pending,
        Self::Running,
        Self::Passed,
        Self::Failed,
        Self::Error,
        Self::Unstable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Running => "RUNNING",
            Self::Passed => "PASSED",
            Self::Failed => "FAILED",
            Self::Error => "ERROR",
            Self::Unstable => "UNSTABLE",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == s)
    }

    /// PENDING and RUNNING executions hold a concurrency slot; the others are finished.
    pub fn is_finished(self) -> bool {
        !matches!(self, Self::Pending | Self::Running)
    }

    /// The states a failure analysis is for.
    pub fn is_failure(self) -> bool {
        matches!(self, Self::Failed | Self::Error | Self::Unstable)
    }
}

impl TryFrom<String> for Status {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s).ok_or_else(|| format!("unknown execution status {s:?}"))
    }
}

/// Where a run came from (the original's `source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Reported by a CI system through `POST /api/executions`.
    ExternalCi,
    /// Requested through `POST /api/execution-request`, for a runner to start.
    AgnoxHosted,
}

impl Source {
    pub const ALL: [Source; 2] = [Self::ExternalCi, Self::AgnoxHosted];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ExternalCi => "external-ci",
            Self::AgnoxHosted => "agnox-hosted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|source| source.as_str() == s)
    }
}

impl TryFrom<String> for Source {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s).ok_or_else(|| format!("unknown execution source {s:?}"))
    }
}

/// The label of the group of runs without a `groupName` in the grouped view; it cannot be
/// given as a group name, so it always means "no group".
pub const UNGROUPED: &str = "__ungrouped__";

/// A run's group name: 1–128 characters, not `UNGROUPED`.
pub fn group_name(raw: &str) -> Option<String> {
    ((1..=128).contains(&raw.chars().count()) && raw != UNGROUPED).then(|| raw.to_string())
}

/// A run's environment (the run request's `config.environment`): 1–64 of `A-Za-z0-9._-`.
/// Compared without regard to ASCII case, which SQLite's `LOWER` and PostgreSQL's agree on.
pub fn environment(raw: &str) -> Option<String> {
    let valid = (1..=64).contains(&raw.len())
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    valid.then(|| raw.to_string())
}

/// A client-chosen run identifier: 1–128 of `A-Za-z0-9._:-`, unique within an organization.
/// It names a directory of report files, so `.` and `..` are refused; `grouped` is the path
/// of the grouped view (`GET /api/executions/grouped`), so no run may be called that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskId(String);

/// `TaskId::parse`'s rule as the API document states it (a pattern cannot also say "not `.` or
/// `..`").
pub const TASK_ID_PATTERN: &str = "^[A-Za-z0-9._:-]{1,128}$";

impl TaskId {
    /// Names no run may have.
    pub const RESERVED: [&'static str; 3] = [".", "..", "grouped"];

    pub fn parse(raw: &str) -> Option<Self> {
        let valid = (1..=128).contains(&raw.len())
            && !Self::RESERVED.contains(&raw)
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
        valid.then(|| Self(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Prefix of the names the report storage uses for uploads in progress; refused in paths.
pub const UPLOAD_TEMP_PREFIX: &str = ".orgd-upload-";

/// The relative path of a report file below its execution's directory: `/`-separated
/// segments, none empty, `.` or `..`, no NUL, backslash or control character, not absolute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportPath(String);

impl ReportPath {
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        if raw.is_empty() {
            return Err("The report path is empty");
        }
        if raw.len() > 1024 {
            return Err("The report path is longer than 1024 bytes");
        }
        if raw.starts_with('/') {
            return Err("The report path must be relative");
        }
        if raw.chars().any(|c| c == '\\' || c.is_control()) {
            return Err("The report path contains a backslash, NUL or control character");
        }
        for segment in raw.split('/') {
            match segment {
                "" => return Err("The report path has an empty segment"),
                "." | ".." => return Err("The report path may not contain . or .. segments"),
                s if s.len() > 255 => return Err("A report path segment is longer than 255 bytes"),
                s if s.starts_with(UPLOAD_TEMP_PREFIX) => {
                    return Err("Report path segments may not start with .orgd-upload-");
                }
                _ => {}
            }
        }
        Ok(Self(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn segments(&self) -> impl DoubleEndedIterator<Item = &str> {
        self.0.split('/')
    }

    /// The `Content-Type` a download of this file is served with.
    pub fn content_type(&self) -> &'static str {
        let file_name = self.segments().next_back().unwrap_or_default();
        let extension = file_name
            .rsplit_once('.')
            .map(|(_, ext)| ext.to_ascii_lowercase());
        match extension.as_deref() {
            Some("html" | "htm") => "text/html; charset=utf-8",
            Some("css") => "text/css; charset=utf-8",
            Some("js" | "mjs") => "text/javascript; charset=utf-8",
            Some("json") => "application/json",
            Some("xml") => "application/xml",
            Some("txt" | "log") => "text/plain; charset=utf-8",
            Some("csv") => "text/csv; charset=utf-8",
            Some("md") => "text/markdown; charset=utf-8",
            Some("png") => "image/png",
            Some("jpg" | "jpeg") => "image/jpeg",
            Some("gif") => "image/gif",
            Some("svg") => "image/svg+xml",
            Some("webp") => "image/webp",
            Some("ico") => "image/x-icon",
            Some("webm") => "video/webm",
            Some("mp4") => "video/mp4",
            Some("pdf") => "application/pdf",
            Some("zip") => "application/zip",
            Some("gz") => "application/gzip",
            Some("woff") => "font/woff",
            Some("woff2") => "font/woff2",
            Some("ttf") => "font/ttf",
            _ => "application/octet-stream",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Project {
    pub id: String,
    pub name: String,
    pub slug: String,
    pub created_at: i64,
}

/// A project's name: trimmed, 1–100 characters.
pub fn project_name(raw: &str) -> Option<String> {
    let name = raw.trim();
    (1..=100)
        .contains(&name.chars().count())
        .then(|| name.to_string())
}

/// A ticket filed from an execution (`execution_links`).
#[derive(Debug, Clone)]
pub struct ExecutionLink {
    pub execution_id: String,
    pub provider: String,
    pub external_id: String,
    pub url: String,
    pub title: String,
    pub created_by: Option<String>,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct Execution {
    pub id: String,
    pub task_id: String,
    pub project_id: Option<String>,
    pub status: Status,
    pub trigger: Option<String>,
    pub group_name: Option<String>,
    pub source: Source,
    /// The run request's `config.environment`.
    pub environment: Option<String>,
    pub error: Option<String>,
    /// Read only for the single-execution view.
    pub output: Option<String>,
    pub report_bytes: i64,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub links: Vec<ExecutionLink>,
    /// The execution's analysis, when there is one.
    pub analysis: Option<AnalysisRecord>,
    /// Read only for the single-execution view (its envVars values stay sealed).
    pub run_request: Option<RunRequest>,
    /// The pull request the run reports to.
    pub ci: Option<crate::pull_requests::Ci>,
}

impl Execution {
    /// When the run started: `startedAt`, else `createdAt` (the original's `startTime`).
    pub fn start_time(&self) -> i64 {
        start_time(self.created_at, self.started_at)
    }

    /// Milliseconds from its start time to its end, once it has ended.
    pub fn duration_ms(&self) -> Option<i64> {
        duration_ms(self.created_at, self.started_at, self.finished_at)
    }
}

/// A run's start time: `started_at`, else `created_at`. The same expression is
/// `START_TIME_SQL` in queries and in the indexes of migration 0011.
pub fn start_time(created_at: i64, started_at: Option<i64>) -> i64 {
    started_at.unwrap_or(created_at)
}

/// A run's duration: from its start time to `finished_at`, once finished.
pub fn duration_ms(
    created_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
) -> Option<i64> {
    finished_at.map(|end| end - start_time(created_at, started_at))
}

/// `start_time` in SQL, written exactly as the indexes of migration 0011 are.
pub const START_TIME_SQL: &str = "COALESCE(started_at, created_at)";

/// An execution to create, already validated.
#[derive(Debug, Clone)]
pub struct NewExecution {
    pub id: String,
    pub task_id: TaskId,
    pub project_id: Option<String>,
    pub status: Status,
    pub trigger: Option<String>,
    pub group_name: Option<String>,
    pub created_by: String,
    pub ci: Option<crate::pull_requests::Ci>,
    /// For a run requested through `POST /api/execution-request` (source `agnox-hosted`).
    pub run_request: Option<NewRunRequest>,
}

impl NewExecution {
    pub fn source(&self) -> Source {
        if self.run_request.is_some() {
            Source::AgnoxHosted
        } else {
            Source::ExternalCi
        }
    }
}

/// A PATCH of an execution; `None` leaves the field alone.
#[derive(Debug, Clone, Default)]
pub struct ExecutionChange {
    pub status: Option<Status>,
    pub error: Option<String>,
    pub output: Option<String>,
}

/// Which executions to list (a page of them in `limit`/`offset`).
#[derive(Debug, Clone, Default)]
pub struct ExecutionFilter {
    pub statuses: Vec<Status>,
    /// Compared without regard to ASCII case.
    pub environment: Option<String>,
    pub group: Option<GroupFilter>,
    pub source: Option<Source>,
    /// Start time at or after this millisecond.
    pub start_after: Option<i64>,
    /// Start time at or before this millisecond.
    pub start_before: Option<i64>,
    pub limit: i64,
    pub offset: i64,
    /// Only executions older than this (the previous page's last).
    pub after: Option<crate::cursor::Cursor>,
}

/// A page of executions.
#[derive(Debug)]
pub struct ExecutionPage {
    pub executions: Vec<Execution>,
    /// Live executions matching the status filter (all pages).
    pub total: i64,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<crate::cursor::Cursor>,
}

impl ExecutionFilter {
    /// Whether nothing but statuses narrows the runs: then a list's `total` is read from
    /// the live-run counters instead of counting rows.
    pub fn by_status_only(&self) -> bool {
        self.group.is_none()
            && self.environment.is_none()
            && self.source.is_none()
            && self.start_after.is_none()
            && self.start_before.is_none()
    }

    /// Whether only the group narrows the runs: then the grouped view is read from the
    /// group counters instead of the runs themselves.
    pub fn by_group_only(&self) -> bool {
        self.statuses.is_empty()
            && self.environment.is_none()
            && self.source.is_none()
            && self.start_after.is_none()
            && self.start_before.is_none()
    }
}

/// Runs of one group, or runs without a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupFilter {
    Named(String),
    Ungrouped,
}

impl GroupFilter {
    /// `UNGROUPED` selects the runs without a group.
    pub fn parse(raw: &str) -> Option<Self> {
        if raw == UNGROUPED {
            Some(Self::Ungrouped)
        } else {
            group_name(raw).map(Self::Named)
        }
    }

    /// The key of the group in `run_groups` (`''` for no group).
    pub fn key(&self) -> &str {
        match self {
            Self::Named(name) => name,
            Self::Ungrouped => "",
        }
    }

    pub fn from_key(key: String) -> Self {
        if key.is_empty() {
            Self::Ungrouped
        } else {
            Self::Named(key)
        }
    }

    /// The name the API shows: the group name, or `UNGROUPED`.
    pub fn label(&self) -> &str {
        match self {
            Self::Named(name) => name,
            Self::Ungrouped => UNGROUPED,
        }
    }
}

/// A report file as the store knows it.
#[derive(Debug, Clone)]
pub struct ReportFile {
    pub path: String,
    pub size: i64,
    pub updated_at: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids() {
        for ok in ["a", "run-42", "ci:build.7_x", &"x".repeat(128), "..."] {
            assert!(TaskId::parse(ok).is_some(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "grouped",
            "a/b",
            "a b",
            "é",
            &"x".repeat(129),
            "a\0",
        ] {
            assert!(TaskId::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn report_paths_are_confined() {
        for ok in [
            "index.html",
            "data/trace.zip",
            "a/b/c.png",
            "..hidden",
            "x..y/z",
        ] {
            assert!(ReportPath::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/./b",
            "a//b",
            "a/",
            "a\\b",
            "a\0b",
            "..",
            "a/\u{7}",
            ".orgd-upload-123",
            "d/.orgd-upload-x",
        ] {
            assert!(ReportPath::parse(bad).is_err(), "{bad:?}");
        }
        assert!(ReportPath::parse(&"a".repeat(256)).is_err());
        assert!(ReportPath::parse(&"a/".repeat(600)).is_err());
    }

    #[test]
    fn content_types_follow_extensions() {
        let ct = |p: &str| ReportPath::parse(p).unwrap().content_type();
        assert_eq!(ct("index.HTML"), "text/html; charset=utf-8");
        assert_eq!(ct("shot.png"), "image/png");
        assert_eq!(ct("trace"), "application/octet-stream");
        assert_eq!(ct("dir.html/file"), "application/octet-stream");
    }

    #[test]
    fn groups_environments_and_sources() {
        assert_eq!(group_name("nightly"), Some("nightly".into()));
        assert_eq!(group_name(UNGROUPED), None);
        assert_eq!(group_name(""), None);
        assert!(group_name(&"é".repeat(128)).is_some());
        assert_eq!(GroupFilter::parse(UNGROUPED), Some(GroupFilter::Ungrouped));
        assert_eq!(GroupFilter::from_key(String::new()).label(), UNGROUPED);
        assert_eq!(
            GroupFilter::parse("a").map(|g| g.key().to_string()),
            Some("a".into())
        );
        assert!(environment("Staging-2").is_some());
        assert!(environment("prod uction").is_none() && environment("").is_none());
        assert_eq!(Source::parse("agnox-hosted"), Some(Source::AgnoxHosted));
        assert_eq!(Source::parse("hosted"), None);
    }

    #[test]
    fn start_times_and_durations() {
        assert_eq!(start_time(10, None), 10);
        assert_eq!(start_time(10, Some(15)), 15);
        assert_eq!(duration_ms(10, Some(15), None), None);
        assert_eq!(duration_ms(10, Some(15), Some(40)), Some(25));
        assert_eq!(duration_ms(10, None, Some(40)), Some(30));
    }

    #[test]
    fn finished_states() {
        assert!(!Status::Pending.is_finished() && !Status::Running.is_finished());
        assert!(Status::ALL[2..].iter().all(|s| s.is_finished()));
        assert_eq!(Status::parse("UNSTABLE"), Some(Status::Unstable));
        assert_eq!(Status::parse("passed"), None);
    }
}
