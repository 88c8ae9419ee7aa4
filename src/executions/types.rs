//! Domain types of projects, executions and report files, parsed at the edge.

use serde::Serialize;
use utoipa::ToSchema;

use crate::analysis::store::AnalysisView;
use crate::timestamp::Timestamp;

pub use orgd_core::executions::{
    ReportPath, Status, TaskId, UPLOAD_TEMP_PREFIX, utf8_head, utf8_tail,
};

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Project {
    pub id: String,
    pub name: String,
    pub slug: String,
    pub created_at: Timestamp,
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
    pub analysis: Option<AnalysisView>,
}

/// The API's execution object.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Execution)]
pub struct ExecutionView {
    id: String,
    task_id: String,
    project_id: Option<String>,
    #[schema(pattern = "^(PENDING|RUNNING|PASSED|FAILED|ERROR|UNSTABLE)$")]
    status: &'static str,
    trigger: Option<String>,
    group_name: Option<String>,
    created_at: Timestamp,
    started_at: Option<Timestamp>,
    finished_at: Option<Timestamp>,
    /// The failure's message (at most 64 KiB).
    error: Option<String>,
    report_bytes: i64,
    linear_issues: Vec<LinearIssueLink>,
    monday_items: Vec<MondayItemLink>,
    analysis: Option<AnalysisView>,
    /// The run's log (its last 256 KiB); only in the single-execution view.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    output: Option<Option<String>>,
}

/// A Linear issue filed from the execution.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LinearIssueLink {
    issue_id: String,
    issue_url: String,
    title: String,
    created_at: Timestamp,
    created_by: Option<String>,
}

/// A Monday.com item filed from the execution.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MondayItemLink {
    item_id: String,
    item_url: String,
    title: String,
    created_at: Timestamp,
    created_by: Option<String>,
}

impl Execution {
    /// The API's execution object; `output` only when `with_output`.
    pub fn view(&self, with_output: bool) -> ExecutionView {
        let links =
            |provider: &'static str| self.links.iter().filter(move |l| l.provider == provider);
        ExecutionView {
            id: self.id.clone(),
            task_id: self.task_id.clone(),
            project_id: self.project_id.clone(),
            status: self.status.as_str(),
            trigger: self.trigger.clone(),
            group_name: self.group_name.clone(),
            created_at: Timestamp(self.created_at),
            started_at: self.started_at.map(Timestamp),
            finished_at: self.finished_at.map(Timestamp),
            error: self.error.clone(),
            report_bytes: self.report_bytes,
            linear_issues: links("linear")
                .map(|l| LinearIssueLink {
                    issue_id: l.external_id.clone(),
                    issue_url: l.url.clone(),
                    title: l.title.clone(),
                    created_at: Timestamp(l.created_at),
                    created_by: l.created_by.clone(),
                })
                .collect(),
            monday_items: links("monday")
                .map(|l| MondayItemLink {
                    item_id: l.external_id.clone(),
                    item_url: l.url.clone(),
                    title: l.title.clone(),
                    created_at: Timestamp(l.created_at),
                    created_by: l.created_by.clone(),
                })
                .collect(),
            analysis: self.analysis.clone(),
            output: with_output.then(|| self.output.clone()),
        }
    }
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
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReportFile {
    pub path: String,
    pub size: i64,
    pub updated_at: Timestamp,
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

    #[test]
    fn utf8_cuts() {
        assert_eq!(utf8_tail("aé", 1), "");
        assert_eq!(utf8_tail("aé", 2), "é");
        assert_eq!(utf8_tail("abc", 10), "abc");
        assert_eq!(utf8_head("éa", 1), "");
        assert_eq!(utf8_head("éa", 3), "éa");
    }
}
