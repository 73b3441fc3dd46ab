//! A city's progress through the method, `shared/progress/{city}`: per method step, started or
//! done, with a date and a short public note. Collection `steps`, keyed by step id.

use automerge::transaction::{Transactable, Transaction};
use automerge::ReadDoc;
use sfs_proto::v1 as pb;
use sfs_sync::ShareableDocId;

use crate::domain::docmodel as dm;
use crate::domain::model::{check_date, check_len, doc_error, now_ms, ModelError};

/// The progress states.
pub const STATES: &[&str] = &["started", "done"];

/// The progress document of `city`.
pub fn progress_doc(city: &str) -> Result<ShareableDocId, ModelError> {
    ShareableDocId::parse(&format!("shared/progress/{city}"))
        .map_err(|e| ModelError::Invalid(e.to_string()))
}

/// Checks a progress entry's own fields.
pub fn check(progress: &pb::StepProgress) -> Result<(), ModelError> {
    if !STATES.contains(&progress.state.as_str()) {
        return Err(ModelError::Invalid(format!(
            "field `state`: {} is not one of {}",
            crate::domain::model::quote(&progress.state),
            STATES.join(", ")
        )));
    }
    check_date("date", &progress.date, true)?;
    check_len("note", &progress.note, 0, 500)
}

/// Writes the entry for the step `method/steps/{step_id}`.
pub fn write(
    tx: &mut Transaction<'_>,
    step_id: &str,
    progress: &pb::StepProgress,
) -> Result<(), ModelError> {
    let obj = dm::new_record(tx, "steps", step_id).map_err(doc_error)?;
    tx.put(&obj, "state", progress.state.as_str())
        .map_err(doc_error)?;
    tx.put(&obj, "date", progress.date.as_str())
        .map_err(doc_error)?;
    tx.put(&obj, "note", progress.note.trim())
        .map_err(doc_error)?;
    tx.put(&obj, "updated_ms", now_ms()).map_err(doc_error)?;
    Ok(())
}

/// Every entry of a city's progress document.
pub fn read_all<R: ReadDoc>(doc: &R, city: &str) -> Vec<pb::StepProgress> {
    let mut all: Vec<pb::StepProgress> = dm::records(doc, "steps")
        .into_iter()
        .map(|(id, obj)| pb::StepProgress {
            name: format!("cities/{city}/progress/{id}"),
            step: format!("method/steps/{id}"),
            state: dm::get_str(doc, &obj, "state"),
            date: dm::get_str(doc, &obj, "date"),
            note: dm::get_str(doc, &obj, "note"),
        })
        .collect();
    all.sort_by(|a, b| a.step.cmp(&b.step));
    all
}
