//! Large values stored as small pieces, so that sled never writes a blob file.
//!
//! sled 0.34 writes any log item larger than `segment_size / MINIMUM_ITEMS_PER_SEGMENT -
//! SEG_HEADER_LEN` (512 KiB / 4 − 20 = 131,052 bytes with the default segments, see
//! `pagecache/logger.rs` `reserve_inner`) into a file of its own under `store/blobs/`, and it
//! never fsyncs those files: a power cut can keep the log's reference and lose the value. The
//! log item is not one value but a whole leaf of the tree when sled consolidates a page, and a
//! leaf splits only once it holds more than 16 entries (`Node::should_split`), so the bound
//! applies to a leaf's entries together. Pieces of [`PIECE_BYTES`] keep even a leaf of 30
//! entries (concurrent writers can overshoot the split for a moment) far under the threshold.
//!
//! A value that fits in one piece is stored as it is (the form every older store has). A larger
//! one is a small manifest under its key plus its pieces under [`piece_key`]s, all added to
//! **one** sled batch by [`put`]: sled applies a batch atomically, also across a crash, so a
//! reader never finds a manifest without its pieces. [`read`] reassembles either form.

/// The most bytes one stored piece holds.
pub const PIECE_BYTES: usize = 4 * 1024;

/// Starts a manifest; no stored value of the node starts so (Automerge's magic bytes, sealed
/// values' `SFS\x01`, JSON and sync states all differ), and [`put`] stores a value that would
/// as a manifest of one piece.
const MANIFEST_MAGIC: &[u8; 8] = b"SFSPCS\x00\x01";
/// Magic, number of pieces (u32), total length (u64).
const MANIFEST_LEN: usize = 8 + 4 + 8;
/// Between a value's key and a piece's number. 0xFF never occurs in UTF-8 keys.
const PIECE_MARK: &[u8; 7] = b"\xFF\xFEpiece";

/// A stored value that does not add up.
#[derive(Debug, thiserror::Error)]
pub enum PieceError {
    #[error("storage: {0}")]
    Sled(#[from] sled::Error),
    #[error("damaged manifest of {pieces} pieces")]
    BadManifest { pieces: usize },
    #[error("piece {index} of {count} is missing")]
    Missing { index: u32, count: u32 },
    #[error("the pieces hold {found} bytes, the manifest says {expected}")]
    WrongLength { found: u64, expected: u64 },
}

/// The key of piece `index` of the value stored under `key`.
pub fn piece_key(key: &[u8], index: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + PIECE_MARK.len() + 4);
    out.extend_from_slice(key);
    out.extend_from_slice(PIECE_MARK);
    out.extend_from_slice(&index.to_be_bytes());
    out
}

/// Whether `key` names a piece (scans skip these; [`read`] finds them from the manifest).
pub fn is_piece_key(key: &[u8]) -> bool {
    key.len() >= PIECE_MARK.len() + 4
        && &key[key.len() - 4 - PIECE_MARK.len()..key.len() - 4] == PIECE_MARK
}

/// Adds the value made of `pieces` (each at most [`PIECE_BYTES`]) under `key` to `batch`.
pub fn put(batch: &mut crate::storage::journal::Batch, key: &[u8], pieces: Vec<Vec<u8>>) {
    if let [one] = pieces.as_slice() {
        if !one.starts_with(MANIFEST_MAGIC) {
            batch.insert(key, one.as_slice());
            return;
        }
    }
    let total: u64 = pieces.iter().map(|p| p.len() as u64).sum();
    let mut manifest = Vec::with_capacity(MANIFEST_LEN);
    manifest.extend_from_slice(MANIFEST_MAGIC);
    manifest.extend_from_slice(&(pieces.len() as u32).to_be_bytes());
    manifest.extend_from_slice(&total.to_be_bytes());
    for (index, piece) in pieces.into_iter().enumerate() {
        batch.insert(piece_key(key, index as u32), piece);
    }
    batch.insert(key, manifest);
}

/// Adds the removal of `key` and of its pieces, if it has any, to `batch`.
pub fn remove(
    tree: &sled::Tree,
    batch: &mut crate::storage::journal::Batch,
    key: &[u8],
) -> Result<(), PieceError> {
    if let Some(value) = tree.get(key)? {
        if let Some((count, _)) = manifest(&value)? {
            for index in 0..count {
                batch.remove(piece_key(key, index));
            }
        }
    }
    batch.remove(key);
    Ok(())
}

/// Splits `value` into pieces of at most `max` bytes (one empty piece for an empty value).
pub fn split(value: &[u8], max: usize) -> Vec<&[u8]> {
    if value.is_empty() {
        return vec![value];
    }
    value.chunks(max.max(1)).collect()
}

/// Starts the plaintext of a piece of a sealed value: the auditor's scan of the files
/// ([`crate::storage::store::readable_with_key`]) finds pieces in any order, and puts them together by
/// this tag.
const TAG_MAGIC: &[u8; 4] = b"SFP\x01";
/// Magic, value id (8 random bytes), index (u32), count (u32).
pub const TAG_LEN: usize = 4 + 8 + 4 + 4;

/// The pieces of a value that is sealed piece by piece: each piece tagged with a random value
/// id, its index and the number of pieces (a value of one piece stays as it is).
pub fn split_tagged(value: &[u8], max: usize) -> Vec<Vec<u8>> {
    let pieces = split(value, max.saturating_sub(TAG_LEN));
    if pieces.len() == 1 {
        return vec![value.to_vec()];
    }
    let id: [u8; 8] = rand::random();
    let count = pieces.len() as u32;
    pieces
        .into_iter()
        .enumerate()
        .map(|(index, piece)| {
            let mut out = Vec::with_capacity(TAG_LEN + piece.len());
            out.extend_from_slice(TAG_MAGIC);
            out.extend_from_slice(&id);
            out.extend_from_slice(&(index as u32).to_be_bytes());
            out.extend_from_slice(&count.to_be_bytes());
            out.extend_from_slice(piece);
            out
        })
        .collect()
}

/// The tag of an opened piece: (value id, index, count, data).
pub fn tag_of(plain: &[u8]) -> Option<([u8; 8], u32, u32, &[u8])> {
    if plain.len() < TAG_LEN || &plain[..4] != TAG_MAGIC {
        return None;
    }
    let id = plain[4..12].try_into().ok()?;
    let index = u32::from_be_bytes(plain[12..16].try_into().ok()?);
    let count = u32::from_be_bytes(plain[16..20].try_into().ok()?);
    Some((id, index, count, &plain[TAG_LEN..]))
}

/// Joins the opened pieces of a value split by [`split_tagged`], checking their tags.
pub fn join_tagged(opened: Vec<Vec<u8>>) -> Result<Vec<u8>, PieceError> {
    if opened.len() == 1 {
        return Ok(opened.into_iter().next().expect("one piece"));
    }
    let count = opened.len() as u32;
    let mut out = Vec::new();
    let mut first_id = None;
    for (index, plain) in opened.iter().enumerate() {
        let (id, at, of, data) = tag_of(plain).ok_or(PieceError::BadManifest {
            pieces: opened.len(),
        })?;
        if at != index as u32 || of != count || *first_id.get_or_insert(id) != id {
            return Err(PieceError::BadManifest {
                pieces: opened.len(),
            });
        }
        out.extend_from_slice(data);
    }
    Ok(out)
}

/// The stored pieces of the value found under `key` (`value` is what the key holds): the
/// value itself in the one-piece form, else the pieces its manifest names, in order.
pub fn read(
    tree: &sled::Tree,
    key: &[u8],
    value: sled::IVec,
) -> Result<Vec<sled::IVec>, PieceError> {
    let Some((count, total)) = manifest(&value)? else {
        return Ok(vec![value]);
    };
    let mut pieces = Vec::with_capacity(count as usize);
    let mut found = 0u64;
    for index in 0..count {
        let piece = tree
            .get(piece_key(key, index))?
            .ok_or(PieceError::Missing { index, count })?;
        found += piece.len() as u64;
        pieces.push(piece);
    }
    if found != total {
        return Err(PieceError::WrongLength {
            found,
            expected: total,
        });
    }
    Ok(pieces)
}

/// The number of pieces and total length a manifest names; `None` for a one-piece value.
fn manifest(value: &[u8]) -> Result<Option<(u32, u64)>, PieceError> {
    if !value.starts_with(MANIFEST_MAGIC) {
        return Ok(None);
    }
    if value.len() != MANIFEST_LEN {
        return Err(PieceError::BadManifest { pieces: 0 });
    }
    let count = u32::from_be_bytes(value[8..12].try_into().expect("4 bytes"));
    let total = u64::from_be_bytes(value[12..20].try_into().expect("8 bytes"));
    Ok(Some((count, total)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(tree: &sled::Tree, key: &[u8]) -> Vec<u8> {
        let value = tree.get(key).unwrap().unwrap();
        read(tree, key, value).unwrap().concat()
    }

    #[test]
    fn values_of_every_size_round_trip_and_scans_can_skip_the_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree("t").unwrap();
        let sizes = [
            0,
            1,
            PIECE_BYTES - 1,
            PIECE_BYTES,
            PIECE_BYTES + 1,
            10 * PIECE_BYTES + 7,
        ];
        for (i, size) in sizes.iter().enumerate() {
            let value: Vec<u8> = (0..*size).map(|b| (b * 31 + i) as u8).collect();
            let mut batch = crate::storage::journal::Batch::default();
            let key = format!("k{i}");
            put(
                &mut batch,
                key.as_bytes(),
                split(&value, PIECE_BYTES)
                    .into_iter()
                    .map(<[u8]>::to_vec)
                    .collect(),
            );
            tree.apply_batch(batch.to_sled()).unwrap();
            assert_eq!(stored(&tree, key.as_bytes()), value, "size {size}");
        }
        let listed: Vec<_> = tree
            .iter()
            .keys()
            .map(Result::unwrap)
            .filter(|k| !is_piece_key(k))
            .collect();
        assert_eq!(listed.len(), sizes.len());
        // Removing takes the pieces along.
        let mut batch = crate::storage::journal::Batch::default();
        remove(&tree, &mut batch, b"k5").unwrap();
        tree.apply_batch(batch.to_sled()).unwrap();
        assert!(tree.iter().keys().all(|k| !k.unwrap().starts_with(b"k5")));
    }

    #[test]
    fn a_value_that_looks_like_a_manifest_is_stored_as_one() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree("t").unwrap();
        let mut value = MANIFEST_MAGIC.to_vec();
        value.extend_from_slice(&[0; 12]);
        let mut batch = crate::storage::journal::Batch::default();
        put(&mut batch, b"k", vec![value.clone()]);
        tree.apply_batch(batch.to_sled()).unwrap();
        assert_eq!(stored(&tree, b"k"), value);
    }

    #[test]
    fn a_missing_piece_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree("t").unwrap();
        let mut batch = crate::storage::journal::Batch::default();
        put(&mut batch, b"k", vec![vec![1; 10], vec![2; 10]]);
        tree.apply_batch(batch.to_sled()).unwrap();
        tree.remove(piece_key(b"k", 1)).unwrap();
        let value = tree.get(b"k").unwrap().unwrap();
        assert!(matches!(
            read(&tree, b"k", value),
            Err(PieceError::Missing { index: 1, count: 2 })
        ));
    }
}
