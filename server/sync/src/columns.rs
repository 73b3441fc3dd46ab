//! Automerge's storage encoding, read directly: LEB128 numbers, column lists and run-length
//! encoded columns, as the binary format writes them. Used where Automerge has no public reader
//! for what is needed ([`crate::saved`] counts a saved document's rows before it is loaded;
//! [`crate::change_ops`] lists what a change touches without expanding every operation).

/// A cursor over bytes, reading LEB128 numbers as Automerge writes them.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    /// How many bytes have been read.
    pub(crate) at: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, at: 0 }
    }

    pub(crate) fn done(&self) -> bool {
        self.at >= self.bytes.len()
    }

    pub(crate) fn rest(&self) -> usize {
        self.bytes.len() - self.at
    }

    pub(crate) fn take(&mut self, len: u64) -> Option<&'a [u8]> {
        let len = usize::try_from(len).ok()?;
        let end = self.at.checked_add(len)?;
        let taken = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(taken)
    }

    pub(crate) fn uleb(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for i in 0..10 {
            let byte = *self.bytes.get(self.at)?;
            self.at += 1;
            value |= u64::from(byte & 0x7f).checked_shl(7 * i)?;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    pub(crate) fn sleb(&mut self) -> Option<i64> {
        let mut value = 0i64;
        let mut shift = 0u32;
        for _ in 0..10 {
            let byte = *self.bytes.get(self.at)?;
            self.at += 1;
            value |= i64::from(byte & 0x7f).checked_shl(shift)?;
            shift += 7;
            if byte & 0x80 == 0 {
                if shift < 64 && byte & 0x40 != 0 {
                    value |= -1i64 << shift;
                }
                return Some(value);
            }
        }
        None
    }

    /// A list of column specifications and data lengths.
    pub(crate) fn columns(&mut self) -> Option<Vec<(u32, u64)>> {
        let count = self.uleb()?;
        // Each entry takes at least two bytes: the count cannot exceed what is left.
        if count > self.rest() as u64 / 2 {
            return None;
        }
        (0..count)
            .map(|_| {
                let spec = u32::try_from(self.uleb()?).ok()?;
                Some((spec, self.uleb()?))
            })
            .collect()
    }
}

/// The bit of a column specification that marks its data as DEFLATE compressed.
pub(crate) const DEFLATE_BIT: u32 = 0b1000;

/// Decodes a run-length encoded column of exactly `rows` rows, reading each value with
/// `value`: a positive count is a run of one value, a negative count that many literal values,
/// a zero count a run of nulls (its length follows). `None` when the data is malformed or does
/// not hold exactly `rows` rows; runs are checked against `rows` before they are expanded.
pub(crate) fn decode_rle<'a, T: Clone>(
    data: &'a [u8],
    rows: usize,
    mut value: impl FnMut(&mut Reader<'a>) -> Option<T>,
) -> Option<Vec<Option<T>>> {
    let mut reader = Reader::new(data);
    let mut out: Vec<Option<T>> = Vec::with_capacity(rows);
    while !reader.done() {
        let count = reader.sleb()?;
        let room = (rows - out.len()) as u64;
        match count {
            0 => {
                let nulls = reader.uleb()?;
                if nulls > room {
                    return None;
                }
                out.resize(out.len() + nulls as usize, None);
            }
            count if count > 0 => {
                if count as u64 > room {
                    return None;
                }
                let one = value(&mut reader)?;
                out.resize(out.len() + count as usize, Some(one));
            }
            count => {
                if count.unsigned_abs() > room {
                    return None;
                }
                for _ in 0..count.unsigned_abs() {
                    out.push(Some(value(&mut reader)?));
                }
            }
        }
    }
    (out.len() == rows).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_literals_and_nulls_are_decoded_and_the_row_count_is_held() {
        // 3 × 7, then the literals 1 and 2, then 2 nulls.
        let data = [3, 7, 0x7e, 1, 2, 0, 2];
        let uleb = |r: &mut Reader<'_>| r.uleb();
        assert_eq!(
            decode_rle(&data, 7, uleb),
            Some(vec![
                Some(7),
                Some(7),
                Some(7),
                Some(1),
                Some(2),
                None,
                None
            ])
        );
        assert_eq!(decode_rle(&data, 6, uleb), None, "more rows than asked");
        assert_eq!(decode_rle(&data, 8, uleb), None, "fewer rows than asked");
        // A run claiming billions of rows is refused before it is expanded.
        let huge = [0x80, 0x80, 0x80, 0x80, 0x08, 7];
        assert_eq!(decode_rle(&huge, 10, uleb), None);
        assert_eq!(decode_rle(&[1], 1, uleb), None, "a run without its value");
    }
}
