//! Line numbers from a code object's location table (`co_linetable`, CPython 3.11+, PEP 657;
//! the format of CPython's `Objects/locations.md`): entries of one header byte (bit 7 set, a
//! 4-bit code, the number of code units covered minus one) and the code's operands.

/// The line of the instruction at byte offset `addr` in code starting at `first_line`; `None`
/// when the instruction has no location or lies past the table.
pub fn line_at(table: &[u8], first_line: i32, addr: u64) -> Option<i32> {
    let mut line = first_line;
    let mut start = 0u64;
    let mut i = 0usize;
    while i < table.len() {
        let head = table[i];
        i += 1;
        let code = (head >> 3) & 15;
        let end = start + 2 * (u64::from(head & 7) + 1);
        let delta = match code {
            15 => 0,
            14 => {
                let d = svarint(table, &mut i)?;
                varint(table, &mut i)?; // end line delta
                varint(table, &mut i)?; // column + 1
                varint(table, &mut i)?; // end column + 1
                d
            }
            13 => svarint(table, &mut i)?,
            10..=12 => {
                i += 2; // column, end column
                i32::from(code) - 10
            }
            _ => {
                i += 1; // column bits
                0
            }
        };
        line += delta;
        if (start..end).contains(&addr) {
            return (code != 15).then_some(line);
        }
        start = end;
    }
    None
}

fn varint(t: &[u8], i: &mut usize) -> Option<u32> {
    let mut b = *t.get(*i)?;
    *i += 1;
    let mut val = u32::from(b & 63);
    let mut shift = 0;
    while b & 64 != 0 {
        b = *t.get(*i)?;
        *i += 1;
        shift += 6;
        if shift > 30 {
            return None;
        }
        val |= u32::from(b & 63) << shift;
    }
    Some(val)
}

fn svarint(t: &[u8], i: &mut usize) -> Option<i32> {
    let u = varint(t, i)?;
    Some(if u & 1 != 0 {
        -((u >> 1) as i32)
    } else {
        (u >> 1) as i32
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// def f(x):          # line 10
    ///     y = x + 1      # line 11 (no column info: code 13, +1)
    ///     return y       # line 12 (one-line form: code 11, +1)
    #[test]
    fn entries_advance_the_line() {
        let table = [
            0x80 | (15 << 3),     // RESUME: no location, 1 unit
            0x80 | (13 << 3) | 1, // 2 units, line +1 (svarint 2)
            2,
            0x80 | (11 << 3), // 1 unit, line +1, two column bytes
            4,
            9,
            0x80 | (5 << 3), // short form: same line, 1 unit
            0,
            0x80 | (14 << 3), // long form: line -3 (svarint 7), end, col, end col
            7,
            0,
            1,
            1,
        ];
        assert_eq!(line_at(&table, 10, 0), None);
        assert_eq!(line_at(&table, 10, 2), Some(11));
        assert_eq!(line_at(&table, 10, 4), Some(11));
        assert_eq!(line_at(&table, 10, 6), Some(12));
        assert_eq!(line_at(&table, 10, 8), Some(12));
        assert_eq!(line_at(&table, 10, 10), Some(9));
        assert_eq!(line_at(&table, 10, 12), None);
    }

    #[test]
    fn varints_are_six_bits_a_byte() {
        let t = [0x40 | 1, 2];
        assert_eq!(varint(&t, &mut 0), Some(1 | (2 << 6)));
        assert_eq!(svarint(&[3], &mut 0), Some(-1));
        assert_eq!(varint(&[0x40], &mut 0), None);
    }
}
