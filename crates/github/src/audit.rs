//! Reading what GitHub recorded of a period's jobs, for the loss audit (`runner-lifecycle audit`,
//! docs/audit.md). The classification is [`crate::loss`]; this module only fetches:
//!
//! - the repositories of an organisation (`GET /orgs/{org}/repos`), or the one repository;
//! - the workflow runs created in the window (`GET /repos/{owner}/{repo}/actions/runs?created=A..B`).
//!   GitHub answers at most 1,000 runs for a query with `created` (the endpoint's description in
//!   GitHub's OpenAPI description), so a window whose `total_count` exceeds that is split in halves
//!   until each half fits;
//! - every attempt's jobs of each run (`GET .../actions/runs/{run_id}/jobs?filter=all`);
//! - the annotations of a job's check run (`GET /repos/{owner}/{repo}/check-runs/{id}/annotations`,
//!   the id being the last segment of the job's `check_run_url`), only for jobs that did not succeed.
//!
//! Every list follows `Link: rel="next"`; every page is fetched conditionally when an [`EtagCache`]
//! holds its `ETag` (a `304 Not Modified` answer does not count against the primary rate limit,
//! GitHub REST API "Best practices": conditional requests), and [`Fetcher::stats`] counts requests.

use crate::client::GitHubClient;
use crate::error::GitHubError;
use crate::Scope;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// GitHub's cap on the results of a runs query with `created`.
pub const RUNS_QUERY_CAP: u64 = 1000;
/// Pages followed at most for one list (100 per page).
const MAX_PAGES: usize = 1000;

/// One step of a job (`#/components/schemas/job`, `steps[]`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStep {
    /// The step's name.
    #[serde(default)]
    pub name: String,
    /// `queued`, `in_progress`, `completed`.
    #[serde(default)]
    pub status: String,
    /// `success`, `failure`, `skipped`, `cancelled`, ...; null while running.
    #[serde(default)]
    pub conclusion: Option<String>,
    /// 1-based.
    #[serde(default)]
    pub number: u64,
}

/// One job as the jobs API lists it (`#/components/schemas/job`), with the fields the audit reads.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditJob {
    /// The job's id.
    pub id: u64,
    /// Its run.
    #[serde(default)]
    pub run_id: u64,
    /// The run's attempt (1 for the first; higher after a re-run).
    #[serde(default)]
    pub run_attempt: Option<u64>,
    /// The job's name.
    #[serde(default)]
    pub name: String,
    /// The workflow's name.
    #[serde(default)]
    pub workflow_name: Option<String>,
    /// `queued`, `in_progress`, `completed`, `waiting`, `requested`, `pending`.
    #[serde(default)]
    pub status: String,
    /// `success`, `failure`, `neutral`, `cancelled`, `skipped`, `timed_out`, `action_required`; null
    /// while unfinished.
    #[serde(default)]
    pub conclusion: Option<String>,
    /// When the job was created (queued), RFC 3339.
    #[serde(default)]
    pub created_at: Option<String>,
    /// When it started, RFC 3339.
    #[serde(default)]
    pub started_at: Option<String>,
    /// When it completed, RFC 3339; null while unfinished.
    #[serde(default)]
    pub completed_at: Option<String>,
    /// The `runs-on` labels.
    #[serde(default)]
    pub labels: Vec<String>,
    /// The runner it was assigned to (null when none was).
    #[serde(default)]
    pub runner_id: Option<u64>,
    /// That runner's name.
    #[serde(default)]
    pub runner_name: Option<String>,
    /// That runner's group id.
    #[serde(default)]
    pub runner_group_id: Option<u64>,
    /// That runner's group name.
    #[serde(default)]
    pub runner_group_name: Option<String>,
    /// The job's check run (its annotations carry the runner's and the service's errors).
    #[serde(default)]
    pub check_run_url: Option<String>,
    /// Its steps.
    #[serde(default)]
    pub steps: Vec<JobStep>,
    /// `owner/repo` (filled in by the fetcher; not a field of GitHub's object).
    #[serde(default)]
    pub repository: String,
}

impl AuditJob {
    /// The check run id: the last path segment of `check_run_url`.
    pub fn check_run_id(&self) -> Option<u64> {
        self.check_run_url
            .as_deref()?
            .trim_end_matches('/')
            .rsplit('/')
            .next()?
            .parse()
            .ok()
    }
}

/// One check-run annotation (`#/components/schemas/check-annotation`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Annotation {
    /// `notice`, `warning`, `failure`.
    #[serde(default)]
    pub annotation_level: Option<String>,
    /// A title.
    #[serde(default)]
    pub title: Option<String>,
    /// The text: the runner's or the service's error message for job-level failures.
    #[serde(default)]
    pub message: Option<String>,
}

#[derive(Deserialize)]
struct RunsPage {
    #[serde(default)]
    total_count: u64,
    #[serde(default)]
    workflow_runs: Vec<RunRef>,
}

/// A workflow run's id and attempt count.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct RunRef {
    /// Its id.
    pub id: u64,
    /// Its latest attempt.
    #[serde(default)]
    pub run_attempt: Option<u64>,
}

#[derive(Deserialize)]
struct JobsPage {
    #[serde(default)]
    jobs: Vec<AuditJob>,
}

#[derive(Deserialize)]
struct RepoItem {
    name: String,
    #[serde(default)]
    owner: Option<RepoOwner>,
}

#[derive(Deserialize)]
struct RepoOwner {
    login: String,
}

/// Pages remembered by URL with their `ETag`, to ask again with `If-None-Match`. Serialisable, so a
/// cache file carries it from one audit to the next.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct EtagCache {
    entries: BTreeMap<String, CachedPage>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct CachedPage {
    etag: String,
    body: String,
    next: Option<String>,
}

impl EtagCache {
    /// Pages held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// What the fetcher did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FetchStats {
    /// Pages asked for.
    pub pages: u64,
    /// Of those, answered `304 Not Modified` (served from the cache, free of rate limit).
    pub not_modified: u64,
    /// Runs windows split because GitHub caps a `created` query at 1,000 runs.
    pub window_splits: u64,
    /// Repositories read.
    pub repositories: u64,
    /// Workflow runs read.
    pub runs: u64,
    /// Jobs read (all attempts).
    pub jobs: u64,
    /// Annotation lists read.
    pub annotation_lists: u64,
}

/// A progress sink: called with a short line now and then.
pub type Progress<'a> = Box<dyn FnMut(&str) + Send + 'a>;

/// Reads a scope's runs, jobs and annotations.
pub struct Fetcher<'a> {
    client: &'a GitHubClient,
    /// The conditional-request cache.
    pub cache: EtagCache,
    stats: FetchStats,
    /// Called with a short line now and then on long runs (stderr in the CLI).
    pub progress: Option<Progress<'a>>,
}

impl std::fmt::Debug for Fetcher<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

pub use crate::time::format_rfc3339;

impl<'a> Fetcher<'a> {
    /// A fetcher over `client` with an empty cache.
    pub fn new(client: &'a GitHubClient) -> Fetcher<'a> {
        Fetcher {
            client,
            cache: EtagCache::default(),
            stats: FetchStats::default(),
            progress: None,
        }
    }

    /// What it did so far.
    pub fn stats(&self) -> FetchStats {
        self.stats
    }

    fn say(&mut self, line: &str) {
        if let Some(p) = self.progress.as_mut() {
            p(line);
        }
    }

    /// One page, conditionally when cached: its body and the next page's URL.
    async fn page(&mut self, url: &str, what: &str) -> Result<(String, Option<String>), GitHubError> {
        self.stats.pages += 1;
        let etag = self.cache.entries.get(url).map(|c| c.etag.clone());
        let (status, tag, next, body) = self.client.get_conditional(url, etag.as_deref(), what).await?;
        if status == 304 {
            if let Some(c) = self.cache.entries.get(url) {
                self.stats.not_modified += 1;
                return Ok((c.body.clone(), c.next.clone()));
            }
            return Err(GitHubError::Decode(format!("{what}: 304 for a page not in the cache")));
        }
        let body = String::from_utf8(body.to_vec()).map_err(|e| GitHubError::Decode(format!("{what}: {e}")))?;
        if let Some(tag) = tag {
            self.cache.entries.insert(
                url.to_string(),
                CachedPage {
                    etag: tag,
                    body: body.clone(),
                    next: next.clone(),
                },
            );
        }
        Ok((body, next))
    }

    /// Every page of a list; `items` takes a page apart. The first page's parsed value is returned
    /// too (for `total_count`).
    async fn all<P: DeserializeOwned, T>(
        &mut self,
        first: String,
        what: &str,
        mut items: impl FnMut(P) -> Vec<T>,
    ) -> Result<Vec<T>, GitHubError> {
        let mut url = first;
        let mut out = Vec::new();
        for _ in 0..MAX_PAGES {
            let (body, next) = self.page(&url, what).await?;
            let page: P = serde_json::from_str(&body).map_err(|e| GitHubError::Decode(format!("{what}: {e}")))?;
            out.extend(items(page));
            match next {
                Some(n) => url = n,
                None => return Ok(out),
            }
        }
        Err(GitHubError::Decode(format!("{what}: more than {MAX_PAGES} pages")))
    }

    /// The repositories of the scope: `(owner, repo)`.
    pub async fn repositories(&mut self, scope: &Scope) -> Result<Vec<(String, String)>, GitHubError> {
        let repos = match scope {
            Scope::Repo { owner, repo } => vec![(owner.clone(), repo.clone())],
            Scope::Org(org) => {
                let url = format!("{}/orgs/{org}/repos?per_page=100", self.client.api_base());
                let what = format!("the repositories of organisation {org}");
                let org2 = org.clone();
                self.all(url, &what, move |page: Vec<RepoItem>| {
                    page.into_iter()
                        .map(|r| (r.owner.map_or_else(|| org2.clone(), |o| o.login), r.name))
                        .collect()
                })
                .await?
            }
        };
        self.stats.repositories += repos.len() as u64;
        Ok(repos)
    }

    /// The runs of `owner/repo` created in `[since, until)` (epoch seconds), windows split until
    /// each fits GitHub's 1,000-result cap.
    pub async fn runs(&mut self, owner: &str, repo: &str, since: i64, until: i64) -> Result<Vec<RunRef>, GitHubError> {
        let mut out = Vec::new();
        let mut windows = vec![(since, until)];
        while let Some((a, b)) = windows.pop() {
            if b <= a {
                continue;
            }
            let created = format!("{}..{}", format_rfc3339(a), format_rfc3339(b - 1));
            let first = format!(
                "{}/repos/{owner}/{repo}/actions/runs?created={created}&per_page=100",
                self.client.api_base()
            );
            let what = format!("the workflow runs of {owner}/{repo} created {created}");
            let (body, next) = self.page(&first, &what).await?;
            let page: RunsPage =
                serde_json::from_str(&body).map_err(|e| GitHubError::Decode(format!("{what}: {e}")))?;
            if page.total_count > RUNS_QUERY_CAP && b - a > 1 {
                self.stats.window_splits += 1;
                let mid = a + (b - a) / 2;
                windows.push((mid, b));
                windows.push((a, mid));
                continue;
            }
            out.extend(page.workflow_runs);
            if let Some(n) = next {
                let rest = self.all(n, &what, |p: RunsPage| p.workflow_runs).await?;
                out.extend(rest);
            }
        }
        out.sort_by_key(|r| r.id);
        out.dedup_by_key(|r| r.id);
        self.stats.runs += out.len() as u64;
        Ok(out)
    }

    /// Every attempt's jobs of one run.
    pub async fn jobs(&mut self, owner: &str, repo: &str, run_id: u64) -> Result<Vec<AuditJob>, GitHubError> {
        let url = format!(
            "{}/repos/{owner}/{repo}/actions/runs/{run_id}/jobs?filter=all&per_page=100",
            self.client.api_base()
        );
        let what = format!("the jobs of run {run_id} of {owner}/{repo}");
        let full = format!("{owner}/{repo}");
        let mut jobs = self.all(url, &what, |p: JobsPage| p.jobs).await?;
        for j in &mut jobs {
            j.repository = full.clone();
            if j.run_id == 0 {
                j.run_id = run_id;
            }
        }
        self.stats.jobs += jobs.len() as u64;
        Ok(jobs)
    }

    /// The annotations of one check run.
    pub async fn annotations(
        &mut self,
        owner: &str,
        repo: &str,
        check_run_id: u64,
    ) -> Result<Vec<Annotation>, GitHubError> {
        let url = format!(
            "{}/repos/{owner}/{repo}/check-runs/{check_run_id}/annotations?per_page=100",
            self.client.api_base()
        );
        let what = format!("the annotations of check run {check_run_id} of {owner}/{repo}");
        self.stats.annotation_lists += 1;
        self.all(url, &what, |p: Vec<Annotation>| p).await
    }

    /// Everything of the scope in `[since, until)`: jobs of all attempts, and the annotations of
    /// those `wants_annotations` selects (by job), keyed by job id.
    pub async fn collect(
        &mut self,
        scope: &Scope,
        since: i64,
        until: i64,
        wants_annotations: impl Fn(&AuditJob) -> bool,
    ) -> Result<(Vec<AuditJob>, BTreeMap<u64, Vec<Annotation>>), GitHubError> {
        let repos = self.repositories(scope).await?;
        let mut jobs = Vec::new();
        let mut notes = BTreeMap::new();
        let total_repos = repos.len();
        for (i, (owner, repo)) in repos.iter().enumerate() {
            let runs = self.runs(owner, repo, since, until).await?;
            self.say(&format!(
                "{owner}/{repo} ({}/{total_repos}): {} runs",
                i + 1,
                runs.len()
            ));
            for (k, run) in runs.iter().enumerate() {
                let run_jobs = self.jobs(owner, repo, run.id).await?;
                for j in run_jobs {
                    if wants_annotations(&j) {
                        if let Some(cr) = j.check_run_id() {
                            let a = self.annotations(owner, repo, cr).await?;
                            notes.insert(j.id, a);
                        }
                    }
                    jobs.push(j);
                }
                if (k + 1) % 200 == 0 {
                    let s = self.stats;
                    self.say(&format!(
                        "{owner}/{repo}: {}/{} runs, {} jobs, {} requests",
                        k + 1,
                        runs.len(),
                        jobs.len(),
                        s.pages
                    ));
                }
            }
        }
        Ok((jobs, notes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_run_id_from_the_url() {
        let j = AuditJob {
            check_run_url: Some("https://api.github.com/repos/o/r/check-runs/4242".into()),
            ..AuditJob::default()
        };
        assert_eq!(j.check_run_id(), Some(4242));
        assert_eq!(AuditJob::default().check_run_id(), None);
    }
}
