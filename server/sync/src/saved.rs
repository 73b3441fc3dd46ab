//! A whole saved document from a peer, bounded before Automerge loads it.
//!
//! A peer that holds nothing of a document is sent it whole, as one saved document (the
//! engine's bootstrap path): loading a saved document costs a fraction of applying its changes
//! one by one. Automerge trusts what a saved document claims, though: its columns are
//! run-length encoded (a few bytes can claim billions of operations) and may be DEFLATE
//! compressed (a few kilobytes can inflate to gigabytes). So before Automerge sees the bytes,
//! [`check_saved_document`] reads the chunk's layout itself: exactly one document chunk, every
//! compressed column inflated with a budget, and the rows of every column counted — runs are
//! summed, never expanded — against the same content limits a peer's changes are held to.
//! Anything this reader does not understand completely is refused; the sender runs the same
//! check on what it is about to send and sends changes instead when it fails, so an honest
//! document is never refused here.

use std::io::Read;

use crate::columns::{Reader, DEFLATE_BIT};

/// The most a saved document may claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DocumentBounds {
    /// Operations (rows of each operation column).
    pub max_ops: u64,
    /// Changes (rows of each change column, dependencies included).
    pub max_changes: u64,
    /// Bytes of the chunk once every compressed column is inflated.
    pub max_inflated_bytes: u64,
}

/// What a saved document holds, as far as its layout says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DocumentShape {
    /// Rows of the longest operation column.
    pub ops: u64,
    /// Rows of the longest change column.
    pub changes: u64,
    /// Bytes of the chunk with every column inflated.
    pub inflated_bytes: u64,
}

/// Why a saved document is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// It claims more than the bounds allow (else it is malformed).
    pub over_bound: bool,
    pub problem: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.problem)
    }
}

fn malformed(problem: impl Into<String>) -> Refusal {
    Refusal {
        over_bound: false,
        problem: problem.into(),
    }
}

fn over_bound(problem: impl Into<String>) -> Refusal {
    Refusal {
        over_bound: true,
        problem: problem.into(),
    }
}

/// The first bytes of every Automerge storage chunk.
pub(crate) const CHUNK_MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
/// The chunk type of a whole saved document.
pub(crate) const CHUNK_TYPE_DOCUMENT: u8 = 0;

/// Whether `bytes` start like a whole saved document.
pub fn is_saved_document(bytes: &[u8]) -> bool {
    bytes.len() > 8 && bytes[..4] == CHUNK_MAGIC && bytes[8] == CHUNK_TYPE_DOCUMENT
}

/// Reads the layout of a saved document — one document chunk and nothing after it — and
/// counts what it claims without building anything; `Err` says what is wrong or over
/// `bounds`. Automerge's own checks (checksum, change hashes against the heads) still run
/// when it loads the bytes.
pub fn check_saved_document(
    bytes: &[u8],
    bounds: &DocumentBounds,
) -> Result<DocumentShape, Refusal> {
    if !is_saved_document(bytes) {
        return Err(malformed("not a saved Automerge document"));
    }
    let mut header = Reader::new(&bytes[9..]);
    let length = header
        .uleb()
        .ok_or_else(|| malformed("a document chunk with a malformed length"))?;
    let body_start = 9 + header.at;
    if length != (bytes.len() - body_start) as u64 {
        return Err(malformed(format!(
            "a document chunk declaring {length} bytes in an entry of {} bytes after its \
             header; exactly one document is accepted",
            bytes.len() - body_start
        )));
    }
    let mut body = Reader::new(&bytes[body_start..]);
    let actors = body
        .uleb()
        .ok_or_else(|| malformed("a malformed list of actors"))?;
    for _ in 0..actors {
        let len = body.uleb().ok_or_else(|| malformed("a malformed actor"))?;
        body.take(len)
            .ok_or_else(|| malformed("an actor longer than the document"))?;
    }
    let heads = body
        .uleb()
        .ok_or_else(|| malformed("a malformed list of heads"))?;
    heads
        .checked_mul(32)
        .and_then(|len| body.take(len))
        .ok_or_else(|| malformed("more heads than the document holds"))?;
    let change_columns = body
        .columns()
        .ok_or_else(|| malformed("a malformed list of change columns"))?;
    let op_columns = body
        .columns()
        .ok_or_else(|| malformed("a malformed list of operation columns"))?;
    let mut inflated: u64 = body_start as u64 + body.at as u64;
    let mut shape = DocumentShape {
        ops: 0,
        changes: 0,
        inflated_bytes: 0,
    };
    for (table, columns, max_rows) in [
        ("change", &change_columns, bounds.max_changes),
        ("operation", &op_columns, bounds.max_ops),
    ] {
        for &(spec, len) in columns.iter() {
            let data = body
                .take(len)
                .ok_or_else(|| malformed(format!("a {table} column longer than the document")))?;
            let budget = bounds.max_inflated_bytes.saturating_sub(inflated);
            let rows = if spec & DEFLATE_BIT != 0 {
                let plain = inflate(data, budget).ok_or_else(|| {
                    over_bound(format!(
                        "a compressed {table} column that does not inflate within the {} bytes \
                         a document may take",
                        bounds.max_inflated_bytes
                    ))
                })?;
                inflated += plain.len() as u64;
                count_rows(spec, &plain, max_rows)
            } else {
                inflated += data.len() as u64;
                count_rows(spec, data, max_rows)
            }
            .map_err(|mut refusal| {
                refusal.problem = format!("{table} column {spec:#x}: {}", refusal.problem);
                refusal
            })?;
            if inflated > bounds.max_inflated_bytes {
                return Err(over_bound(format!(
                    "a document of more than {} bytes once inflated",
                    bounds.max_inflated_bytes
                )));
            }
            let longest = match table {
                "change" => &mut shape.changes,
                _ => &mut shape.ops,
            };
            *longest = (*longest).max(rows);
        }
    }
    // What follows the columns (the heads' indexes) is small and read as it is.
    inflated += body.rest() as u64;
    if inflated > bounds.max_inflated_bytes {
        return Err(over_bound(format!(
            "a document of more than {} bytes once inflated",
            bounds.max_inflated_bytes
        )));
    }
    shape.inflated_bytes = inflated;
    Ok(shape)
}

/// Inflates raw DEFLATE `data` if it takes at most `budget` bytes.
fn inflate(data: &[u8], budget: u64) -> Option<Vec<u8>> {
    let mut plain = Vec::new();
    flate2::read::DeflateDecoder::new(data)
        .take(budget.saturating_add(1))
        .read_to_end(&mut plain)
        .ok()?;
    (plain.len() as u64 <= budget).then_some(plain)
}

/// Rows in one column's data, by the column's type (the low three bits of its specification):
/// run-length encoded values (groups, actors, integers, strings, value metadata), deltas
/// (run-length encoded signed numbers), booleans (alternating run lengths) or raw values (no
/// rows of their own). Refuses more than `max_rows` as soon as the sum passes it, and any byte
/// it cannot read.
fn count_rows(spec: u32, data: &[u8], max_rows: u64) -> Result<u64, Refusal> {
    let mut reader = Reader::new(data);
    let mut rows: u64 = 0;
    let mut add = |count: u64| -> Result<(), Refusal> {
        rows = rows
            .checked_add(count)
            .filter(|rows| *rows <= max_rows)
            .ok_or_else(|| over_bound(format!("more than {max_rows} rows")))?;
        Ok(())
    };
    let malformed = || malformed("malformed data");
    match spec & 0b111 {
        // Raw values: their lengths are in the value-metadata column.
        7 => return Ok(0),
        // Booleans: run lengths, alternately false and true.
        4 => {
            while !reader.done() {
                add(reader.uleb().ok_or_else(malformed)?)?;
            }
        }
        kind => {
            let value = |reader: &mut Reader<'_>| -> Option<()> {
                match kind {
                    3 => reader.sleb().map(|_| ()),
                    5 => {
                        let len = reader.uleb()?;
                        reader.take(len).map(|_| ())
                    }
                    _ => reader.uleb().map(|_| ()),
                }
            };
            while !reader.done() {
                let count = reader.sleb().ok_or_else(malformed)?;
                match count {
                    0 => add(reader.uleb().ok_or_else(malformed)?)?,
                    count if count > 0 => {
                        add(count as u64)?;
                        value(&mut reader).ok_or_else(malformed)?;
                    }
                    count => {
                        let literals = count.unsigned_abs();
                        add(literals)?;
                        for _ in 0..literals {
                            value(&mut reader).ok_or_else(malformed)?;
                        }
                    }
                }
            }
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::transaction::Transactable;
    use automerge::{Automerge, ObjType, ReadDoc, ROOT};

    const GENEROUS: DocumentBounds = DocumentBounds {
        max_ops: 1_000_000,
        max_changes: 10_000,
        max_inflated_bytes: 64 * 1024 * 1024,
    };

    fn lessons(n: usize) -> Automerge {
        let mut doc = Automerge::new();
        for i in 0..n {
            doc.transact::<_, _, automerge::AutomergeError>(|tx| {
                let lesson = tx.put_object(ROOT, format!("l{i}"), ObjType::Map)?;
                let body = tx.put_object(&lesson, "body", ObjType::Text)?;
                tx.splice_text(&body, 0, 0, &"what the network learnt ".repeat(4))?;
                tx.put(&lesson, "title", format!("lesson {i}"))?;
                Ok(())
            })
            .unwrap();
        }
        doc
    }

    #[test]
    fn an_honest_document_is_counted_as_automerge_holds_it() {
        let doc = lessons(50);
        let stats = doc.stats();
        for bytes in [doc.save(), doc.save_nocompress()] {
            let shape = check_saved_document(&bytes, &GENEROUS).unwrap();
            assert_eq!(shape.ops, stats.num_ops, "ops");
            assert_eq!(shape.changes, stats.num_changes, "changes");
            assert!(shape.inflated_bytes >= bytes.len() as u64);
        }
    }

    #[test]
    fn an_empty_document_is_empty() {
        let shape = check_saved_document(&Automerge::new().save(), &GENEROUS).unwrap();
        assert_eq!((shape.ops, shape.changes), (0, 0));
    }

    #[test]
    fn a_document_over_a_bound_is_refused() {
        let doc = lessons(50);
        let bytes = doc.save();
        let stats = doc.stats();
        let refused = |bounds: DocumentBounds| {
            let refusal = check_saved_document(&bytes, &bounds).unwrap_err();
            assert!(refusal.over_bound, "{refusal}");
            refusal.problem
        };
        let ops = refused(DocumentBounds {
            max_ops: stats.num_ops - 1,
            ..GENEROUS
        });
        assert!(ops.contains("operation column"), "{ops}");
        let changes = refused(DocumentBounds {
            max_changes: stats.num_changes - 1,
            ..GENEROUS
        });
        assert!(changes.contains("change column"), "{changes}");
        let inflated = refused(DocumentBounds {
            max_inflated_bytes: bytes.len() as u64,
            ..GENEROUS
        });
        assert!(inflated.contains("inflate"), "{inflated}");
    }

    #[test]
    fn a_compressed_column_that_inflates_beyond_the_budget_is_refused_before_it_is_inflated_whole()
    {
        // 8 MiB of one letter in a single value: a few kilobytes saved.
        let mut doc = Automerge::new();
        doc.transact::<_, _, automerge::AutomergeError>(|tx| {
            tx.put(ROOT, "x", "x".repeat(8 * 1024 * 1024))?;
            Ok(())
        })
        .unwrap();
        let bytes = doc.save();
        assert!(bytes.len() < 64 * 1024);
        let err = check_saved_document(
            &bytes,
            &DocumentBounds {
                max_inflated_bytes: 1024 * 1024,
                ..GENEROUS
            },
        )
        .unwrap_err();
        assert!(err.over_bound && err.problem.contains("inflate"), "{err}");
    }

    /// `doc` saved without compression, with its action column replaced by `column` (when
    /// given), the lengths and the checksum made right: what a hostile peer can send.
    fn with_action_column(doc: &Automerge, column: Option<&[u8]>) -> Vec<u8> {
        let bytes = doc.save_nocompress();
        let mut header = Reader::new(&bytes[9..]);
        header.uleb().unwrap();
        let body = &bytes[9 + header.at..];
        let mut reader = Reader::new(body);
        for _ in 0..reader.uleb().unwrap() {
            let len = reader.uleb().unwrap();
            reader.take(len).unwrap();
        }
        let heads = reader.uleb().unwrap();
        reader.take(heads * 32).unwrap();
        let changes = reader.columns().unwrap();
        let ops_meta_at = reader.at;
        let ops = reader.columns().unwrap();
        let changes_at = reader.at;
        let ops_at = changes_at + changes.iter().map(|c| c.1 as usize).sum::<usize>();
        let mut meta = Vec::new();
        let mut data = Vec::new();
        leb(&mut meta, ops.len() as u64);
        let mut at = ops_at;
        for &(spec, len) in &ops {
            let original = &body[at..at + len as usize];
            at += len as usize;
            // The action column: integers (type 2) of column 4.
            let chosen = match column {
                Some(column) if spec == (4 << 4) | 2 => column,
                _ => original,
            };
            leb(&mut meta, u64::from(spec));
            leb(&mut meta, chosen.len() as u64);
            data.extend_from_slice(chosen);
        }
        let new_body = [
            &body[..ops_meta_at],
            &meta,
            &body[changes_at..ops_at],
            &data,
            &body[at..],
        ]
        .concat();
        let mut length = Vec::new();
        leb(&mut length, new_body.len() as u64);
        use sha2::{Digest, Sha256};
        let checksum = Sha256::new()
            .chain_update([CHUNK_TYPE_DOCUMENT])
            .chain_update(&length)
            .chain_update(&new_body)
            .finalize();
        [
            &CHUNK_MAGIC[..],
            &checksum[..4],
            &[CHUNK_TYPE_DOCUMENT],
            &length,
            &new_body,
        ]
        .concat()
    }

    fn leb(out: &mut Vec<u8>, mut value: u64) {
        loop {
            let byte = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    #[test]
    fn a_run_that_claims_billions_of_operations_is_refused_without_expanding_it() {
        let doc = lessons(2);
        // The helper rebuilds a document byte for byte when it changes nothing.
        assert_eq!(with_action_column(&doc, None), doc.save_nocompress());
        // One run: four billion times the same action, in six bytes, with a valid checksum.
        let mut column = Vec::new();
        sleb(&mut column, 4_000_000_000);
        column.push(1);
        let bomb = with_action_column(&doc, Some(&column));
        let err = check_saved_document(&bomb, &GENEROUS).unwrap_err();
        assert!(
            err.over_bound && err.problem.contains("more than 1000000 rows"),
            "{err}"
        );
        // Within the bound, the same edit is counted as claimed (and Automerge, which checks
        // the change hashes, refuses the result).
        let mut column = Vec::new();
        sleb(&mut column, 1000);
        column.push(1);
        let claimed = with_action_column(&doc, Some(&column));
        assert_eq!(check_saved_document(&claimed, &GENEROUS).unwrap().ops, 1000);
        assert!(Automerge::load(&claimed).is_err());
    }

    fn sleb(out: &mut Vec<u8>, mut value: i64) {
        loop {
            let byte = (value & 0x7f) as u8;
            value >>= 7;
            let done = (value == 0 && byte & 0x40 == 0) || (value == -1 && byte & 0x40 != 0);
            if done {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    #[test]
    fn anything_but_exactly_one_document_chunk_is_refused() {
        let doc = lessons(3);
        let bytes = doc.save();
        let mut trailing = bytes.clone();
        trailing.extend_from_slice(&doc.save_after(&[]));
        let err = check_saved_document(&trailing, &GENEROUS).unwrap_err();
        assert!(
            !err.over_bound && err.problem.contains("exactly one document"),
            "{err}"
        );
        let change = doc.get_changes(&[])[0].raw_bytes().to_vec();
        assert!(check_saved_document(&change, &GENEROUS).is_err());
        for cut in [10, bytes.len() / 2, bytes.len() - 1] {
            assert!(
                check_saved_document(&bytes[..cut], &GENEROUS).is_err(),
                "cut at {cut}"
            );
        }
        let mut garbled = bytes.clone();
        let last = garbled.len() - 1;
        garbled[last] ^= 0xff;
        // The layout may still read; Automerge's checksum refuses it when it loads.
        let _ = check_saved_document(&garbled, &GENEROUS);
    }
}
