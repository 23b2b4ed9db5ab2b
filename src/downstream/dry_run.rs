//! The dry-run target: records what would be sent, one JSON line per delivery, and succeeds.
//! For trying a new configuration without touching the app.

use std::io::Write;
use std::path::PathBuf;

use serde_json::json;

use super::{Job, Outcome, representation};

pub struct DryRun {
    /// JSON lines file the would-be deliveries are appended to.
    pub path: PathBuf,
}

impl DryRun {
    pub async fn deliver(&self, job: &Job) -> Outcome {
        let line = json!({
            "at": crate::model::now(),
            "idempotency_key": job.idempotency_key,
            "resource_type": job.kind.as_str(),
            "id": job.resource_id,
            "ops": job.ops.iter().map(|o| o.as_str()).collect::<Vec<_>>(),
            "action": if job.is_delete() {
                "deprovision"
            } else if job.ops.contains(&crate::model::ChangeOp::Create) {
                "create"
            } else {
                "update"
            },
            "representation": job.current.as_ref().map(representation),
            "members_added": job.members_added,
            "members_removed": job.members_removed,
        });
        let path = self.path.clone();
        let written = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            // On the PostgreSQL store nothing else creates `store.data_dir`, where the log
            // lives by default.
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
            writeln!(f, "{line}")?;
            f.sync_data()
        })
        .await;
        match written {
            // Nothing reached an app: no app id and no "last delivered" state are recorded, so
            // a later real target gets everything (see `store::delivery_target`) and a drift
            // report never blames an app for what it never received.
            Ok(Ok(())) => Outcome::Recorded { note: format!("dry run: recorded in {}, not sent", self.path.display()) },
            Ok(Err(e)) => Outcome::Retry { after: None, error: format!("dry-run log {}: {e}", self.path.display()) },
            Err(e) => Outcome::Retry { after: None, error: format!("dry-run task failed: {e}") },
        }
    }
}
