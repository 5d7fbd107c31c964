//! Which `events` files a job run reads: pure decisions over the commits after the
//! cursor, no I/O (the runner reads the commits and acts on the plan).
//!
//! - Files added with `dataChange = true` (the flusher's appends) are new rows.
//! - A commit that only rewrites files (`dataChange = false`: OPTIMIZE) adds no rows. When
//!   it removes a file this run still has to read, the run stops just before it, so the
//!   run's snapshot still holds every file it reads; the next run starts at the rewrite.
//! - A `DELETE` (erasure) removes rows whose derived rows the erasure retracts itself; its
//!   rewritten files hold rows that were already counted, so they are skipped.
//! - Any other commit that removes rows cannot be applied incrementally: the plan says so
//!   and the runner asks for `tidemark jobs rebuild`.

use std::collections::HashSet;

use deltalake::kernel::{Action, Add};

/// One commit of `events`: its version and its actions.
#[derive(Debug, Clone)]
pub struct Commit {
    pub version: i64,
    pub actions: Vec<Action>,
}

/// What one run reads.
#[derive(Debug, Clone, PartialEq)]
pub struct RunPlan {
    /// The first version after the cursor.
    pub from_version: i64,
    /// The last version this run covers: the new cursor.
    pub to_version: i64,
    /// Files holding the new rows, all live in the snapshot at `to_version`.
    pub adds: Vec<Add>,
    /// Rows in `adds`, from the file statistics (0 when a file has none).
    pub rows: i64,
}

/// Why a plan cannot be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanError {
    /// The commit at `version` removed rows (operation `operation`) in a way that only a
    /// rebuild can account for.
    NeedsRebuild { version: i64, operation: String },
}

fn operation(actions: &[Action]) -> String {
    actions
        .iter()
        .find_map(|a| match a {
            Action::CommitInfo(ci) => ci.operation.clone(),
            _ => None,
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Plans a run over `commits`, which must be consecutive versions starting right after
/// the cursor `cursor`. `None` when there is no commit to cover.
pub fn plan(cursor: i64, commits: &[Commit]) -> Result<Option<RunPlan>, PlanError> {
    let Some(first) = commits.first() else {
        return Ok(None);
    };
    debug_assert_eq!(first.version, cursor + 1);
    let mut adds: Vec<Add> = Vec::new();
    let mut reading: HashSet<&str> = HashSet::new();
    let mut to_version = cursor;
    for commit in commits {
        let op = operation(&commit.actions);
        let removes_rows = commit
            .actions
            .iter()
            .any(|a| matches!(a, Action::Remove(r) if r.data_change));
        if removes_rows && op != "DELETE" {
            return Err(PlanError::NeedsRebuild {
                version: commit.version,
                operation: op,
            });
        }
        let removes_needed = commit.actions.iter().any(|a| match a {
            Action::Remove(r) => reading.contains(r.path.as_str()),
            _ => false,
        });
        if removes_needed {
            break;
        }
        if !removes_rows {
            for action in &commit.actions {
                if let Action::Add(add) = action
                    && add.data_change
                {
                    adds.push(add.clone());
                }
            }
            reading = adds.iter().map(|a| a.path.as_str()).collect();
        }
        to_version = commit.version;
    }
    let rows = adds
        .iter()
        .map(|a| a.get_stats().ok().flatten().map_or(0, |s| s.num_records))
        .sum();
    Ok(Some(RunPlan {
        from_version: first.version,
        to_version,
        adds,
        rows,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::kernel::{CommitInfo, Remove};

    fn add(path: &str, data_change: bool) -> Action {
        Action::Add(Add {
            path: path.into(),
            data_change,
            stats: Some(r#"{"numRecords":10}"#.into()),
            ..Default::default()
        })
    }

    fn remove(path: &str, data_change: bool) -> Action {
        Action::Remove(Remove {
            path: path.into(),
            data_change,
            ..Default::default()
        })
    }

    fn info(op: &str) -> Action {
        Action::CommitInfo(CommitInfo {
            operation: Some(op.into()),
            ..Default::default()
        })
    }

    fn paths(p: &RunPlan) -> Vec<&str> {
        p.adds.iter().map(|a| a.path.as_str()).collect()
    }

    #[test]
    fn appends_are_read_and_the_cursor_moves_to_the_last_commit() {
        let commits = vec![
            Commit {
                version: 4,
                actions: vec![info("WRITE"), add("a", true)],
            },
            Commit {
                version: 5,
                actions: vec![info("WRITE"), add("b", true), add("c", true)],
            },
        ];
        let p = plan(3, &commits).unwrap().unwrap();
        assert_eq!((p.from_version, p.to_version, p.rows), (4, 5, 30));
        assert_eq!(paths(&p), ["a", "b", "c"]);
        assert_eq!(plan(5, &[]).unwrap(), None);
    }

    #[test]
    fn optimize_of_files_being_read_ends_the_run_before_it() {
        let commits = vec![
            Commit {
                version: 1,
                actions: vec![add("a", true)],
            },
            Commit {
                version: 2,
                actions: vec![add("b", true)],
            },
            Commit {
                version: 3,
                actions: vec![
                    info("OPTIMIZE"),
                    remove("a", false),
                    remove("b", false),
                    add("ab", false),
                ],
            },
            Commit {
                version: 4,
                actions: vec![add("c", true)],
            },
        ];
        let p = plan(0, &commits).unwrap().unwrap();
        assert_eq!(p.to_version, 2);
        assert_eq!(paths(&p), ["a", "b"]);
        // The next run starts at the rewrite, which adds no rows.
        let p = plan(2, &commits[2..]).unwrap().unwrap();
        assert_eq!(p.to_version, 4);
        assert_eq!(paths(&p), ["c"]);
    }

    #[test]
    fn optimize_of_older_files_does_not_stop_the_run() {
        let commits = vec![
            Commit {
                version: 7,
                actions: vec![add("new", true)],
            },
            Commit {
                version: 8,
                actions: vec![remove("old", false), add("old2", false)],
            },
        ];
        let p = plan(6, &commits).unwrap().unwrap();
        assert_eq!((p.to_version, paths(&p)), (8, vec!["new"]));
    }

    #[test]
    fn deletes_are_skipped_and_other_row_removals_need_a_rebuild() {
        let commits = vec![
            Commit {
                version: 1,
                actions: vec![add("a", true)],
            },
            Commit {
                version: 2,
                actions: vec![info("DELETE"), remove("a", true), add("a2", true)],
            },
        ];
        // The delete removes a file this run reads: the run ends before it...
        let p = plan(0, &commits).unwrap().unwrap();
        assert_eq!((p.to_version, paths(&p)), (1, vec!["a"]));
        // ...and the next run skips its rewritten file (those rows were counted).
        let p = plan(1, &commits[1..]).unwrap().unwrap();
        assert_eq!((p.to_version, p.adds.len()), (2, 0));

        let commits = vec![Commit {
            version: 1,
            actions: vec![info("MERGE"), remove("a", true), add("a2", true)],
        }];
        assert_eq!(
            plan(0, &commits),
            Err(PlanError::NeedsRebuild {
                version: 1,
                operation: "MERGE".into()
            })
        );
    }
}
