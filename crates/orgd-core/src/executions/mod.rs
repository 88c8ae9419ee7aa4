//! Test runs ("executions"), their projects and their report files: identifiers, states and
//! paths parsed at the edge; runs created under the plan's limits and moved through their
//! states; files recorded against the storage limit.

mod files;
mod projects;
mod runs;

pub use files::{
    Publish, ReportCommit, Reservation, commit_report, release_report_bytes, report_files,
    reserve_report_bytes,
};
pub use projects::{NewProjectOutcome, create_project, delete_project, projects};
pub use runs::{
    FinishNotice, NewExecutionOutcome, UpdateOutcome, create_execution, delete_execution,
    execution, execution_exists, executions, update_execution,
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

/// A client-chosen run identifier: 1–128 of `A-Za-z0-9._:-`, unique within an organization.
/// It names a directory of report files, so `.` and `..` are refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskId(String);

/// `TaskId::parse`'s rule as the API document states it (a pattern cannot also say "not `.` or
/// `..`").
pub const TASK_ID_PATTERN: &str = "^[A-Za-z0-9._:-]{1,128}$";

impl TaskId {
    pub fn parse(raw: &str) -> Option<Self> {
        let valid = (1..=128).contains(&raw.len())
            && raw != "."
            && raw != ".."
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
}

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
}

/// A PATCH of an execution; `None` leaves the field alone.
#[derive(Debug, Clone, Default)]
pub struct ExecutionChange {
    pub status: Option<Status>,
    pub error: Option<String>,
    pub output: Option<String>,
}

/// Which page of executions to list.
#[derive(Debug, Clone)]
pub struct ExecutionFilter {
    pub statuses: Vec<Status>,
    pub limit: i64,
    pub offset: i64,
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
        for bad in ["", ".", "..", "a/b", "a b", "é", &"x".repeat(129), "a\0"] {
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
    fn finished_states() {
        assert!(!Status::Pending.is_finished() && !Status::Running.is_finished());
        assert!(Status::ALL[2..].iter().all(|s| s.is_finished()));
        assert_eq!(Status::parse("UNSTABLE"), Some(Status::Unstable));
        assert_eq!(Status::parse("passed"), None);
    }
}
