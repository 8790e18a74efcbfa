//! Shapes calls for the Logs Ingestion limit: request bodies (JSON arrays) no larger than
//! the per-call limit uncompressed — the service applies its 1 MiB limit to both forms, and the uncompressed one is always the
//! larger — filled as close to it as the rows allow.

use crate::codec::json_array;
use crate::config::MAX_CALL_BYTES;

/// A row too large for any call even after its fields were cut.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("row {index} is {size} bytes, over the service's {MAX_CALL_BYTES}-byte call limit")]
pub struct RowTooLarge {
    /// Its position in the batch.
    pub index: usize,
    /// Its serialized size.
    pub size: usize,
}

/// Groups serialized rows into bodies of at most `limit` bytes, preserving order; a row
/// larger than `limit` (but within the service's hard limit) travels alone. Returns the
/// index ranges, so callers can retry or mark parts individually.
pub(crate) fn split(
    rows: &[Vec<u8>],
    limit: usize,
) -> Result<Vec<std::ops::Range<usize>>, RowTooLarge> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut size = 2; // the brackets
    for (i, r) in rows.iter().enumerate() {
        if r.len() + 2 > MAX_CALL_BYTES {
            return Err(RowTooLarge {
                index: i,
                size: r.len(),
            });
        }
        let add = r.len() + usize::from(i > start);
        if i > start && size + add > limit {
            parts.push(start..i);
            start = i;
            size = 2 + r.len();
        } else {
            size += add;
        }
    }
    if start < rows.len() {
        parts.push(start..rows.len());
    }
    Ok(parts)
}

/// The body for one part.
pub(crate) fn body(rows: &[Vec<u8>]) -> Vec<u8> {
    json_array(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cover_every_row_once_and_respect_the_limit() {
        let rows: Vec<Vec<u8>> = (0..1000).map(|i| vec![b'1'; 50 + (i * 37) % 400]).collect();
        let parts = split(&rows, 10_000).unwrap();
        let mut next = 0;
        for p in &parts {
            assert_eq!(p.start, next);
            next = p.end;
            let len = body(&rows[p.clone()]).len();
            assert!(len <= 10_000, "{len}");
        }
        assert_eq!(next, rows.len());
        // Filled: every part but the last could not take its successor's first row.
        for w in parts.windows(2) {
            let with_next = body(&rows[w[0].start..w[1].start + 1]).len();
            assert!(with_next > 10_000);
        }
    }

    #[test]
    fn an_exact_fit_is_one_part_and_a_row_over_the_limit_travels_alone() {
        let rows = vec![vec![b'1'; 4], vec![b'2'; 3]];
        assert_eq!(split(&rows, 10).unwrap(), vec![0..2]); // [1111,222] is 10 bytes
        assert_eq!(split(&rows, 9).unwrap(), vec![0..1, 1..2]);
        let rows = vec![vec![b'1'; 4], vec![b'x'; 20], vec![b'2'; 3]];
        assert_eq!(split(&rows, 10).unwrap(), vec![0..1, 1..2, 2..3]);
        assert_eq!(
            split(&[vec![b'x'; MAX_CALL_BYTES]], 10),
            Err(RowTooLarge {
                index: 0,
                size: MAX_CALL_BYTES
            })
        );
    }
}
