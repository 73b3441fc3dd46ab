//! The city's own notes on the handbook's steps, `local/handbook-notes`: how this city adapts
//! each step of the method to its local problems. A local document, so the notes never leave
//! the city and are sealed at rest like the register.
//!
//! Collection `notes`, keyed by the step's id; each record holds `step` (the step's name), the
//! note as Automerge text and `updated_ms`.

use automerge::transaction::{Transactable, Transaction};
use automerge::{ObjId, ReadDoc};
use sfs_proto::v1 as pb;
use sfs_sync::DocId;

use crate::domain::docmodel as dm;
use crate::domain::model::{doc_error, invalid, ModelError};

/// The most characters a note may have.
pub const MAX_NOTE_CHARS: usize = 5000;

/// The notes document.
pub fn notes_doc() -> DocId {
    DocId::local("handbook-notes").expect("local/handbook-notes is a document id")
}

/// The step id of a step name `method/steps/{id}`, or `INVALID_ARGUMENT` naming `step`.
pub fn step_id(step: &str) -> Result<String, ModelError> {
    crate::domain::model::parse_name(step, "method/steps", "step")
}

/// Checks a note's text.
pub fn check(note: &pb::StepNote) -> Result<(), ModelError> {
    let chars = note.text.chars().count();
    if chars > MAX_NOTE_CHARS {
        return Err(invalid(
            "text",
            format!("has {chars} characters; at most {MAX_NOTE_CHARS} are allowed"),
        ));
    }
    Ok(())
}

/// Sets the note on step `id` (or removes it when the text is empty, or only spaces), and
/// returns it as stored.
pub fn write(
    tx: &mut Transaction<'_>,
    id: &str,
    note: &pb::StepNote,
    now_ms: i64,
) -> Result<pb::StepNote, ModelError> {
    if note.text.trim().is_empty() {
        dm::delete_record(tx, "notes", id)?;
        return Ok(pb::StepNote {
            name: format!("step-notes/{id}"),
            step: note.step.clone(),
            text: String::new(),
            update_time_ms: now_ms,
        });
    }
    let obj = match dm::record(tx, "notes", id) {
        Some(obj) => obj,
        None => dm::new_record(tx, "notes", id).map_err(doc_error)?,
    };
    tx.put(&obj, "step", note.step.as_str())
        .map_err(doc_error)?;
    dm::put_text(tx, &obj, "text", &note.text).map_err(doc_error)?;
    tx.put(&obj, "updated_ms", now_ms).map_err(doc_error)?;
    Ok(read(tx, id, &obj))
}

/// Reads one note.
pub fn read<R: ReadDoc>(doc: &R, id: &str, obj: &ObjId) -> pb::StepNote {
    pb::StepNote {
        name: format!("step-notes/{id}"),
        step: dm::get_str(doc, obj, "step"),
        text: dm::get_str(doc, obj, "text"),
        update_time_ms: dm::get_i64(doc, obj, "updated_ms"),
    }
}

/// Every note, by step name.
pub fn read_all<R: ReadDoc>(doc: &R) -> Vec<pb::StepNote> {
    let mut notes: Vec<pb::StepNote> = dm::records(doc, "notes")
        .into_iter()
        .map(|(id, obj)| read(doc, &id, &obj))
        .collect();
    notes.sort_by(|a, b| a.step.cmp(&b.step));
    notes
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::Automerge;

    #[test]
    fn a_note_is_set_changed_and_removed() {
        let mut doc = Automerge::new();
        let note = |text: &str| pb::StepNote {
            step: "method/steps/a1".into(),
            text: text.into(),
            ..Default::default()
        };
        doc.transact(|tx| write(tx, "a1", &note("Hotels first"), 5))
            .unwrap();
        doc.transact(|tx| write(tx, "a1", &note("Hotels and camp sites"), 6))
            .unwrap();
        let all = read_all(&doc);
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].name, "step-notes/a1");
        assert_eq!(all[0].step, "method/steps/a1");
        assert_eq!(all[0].text, "Hotels and camp sites");
        assert_eq!(all[0].update_time_ms, 6);
        doc.transact(|tx| write(tx, "a1", &note("  "), 7)).unwrap();
        assert!(read_all(&doc).is_empty());
    }

    #[test]
    fn over_long_notes_and_bad_step_names_are_refused() {
        let long = pb::StepNote {
            step: "method/steps/a1".into(),
            text: "x".repeat(MAX_NOTE_CHARS + 1),
            ..Default::default()
        };
        assert!(matches!(check(&long), Err(ModelError::Invalid(m)) if m.contains("`text`")));
        let fits = pb::StepNote {
            text: "x".repeat(MAX_NOTE_CHARS),
            ..long
        };
        assert!(check(&fits).is_ok());
        assert!(step_id("method/chapters/a1").is_err());
        assert_eq!(step_id("method/steps/a1").unwrap(), "a1");
    }
}
