//! Line numbers from a code object's line table, in the format of its version:
//! - 3.11+ `co_linetable`, the location table (PEP 657; CPython's `Objects/locations.md`):
//!   entries of one header byte (bit 7 set, a 4-bit code, the number of code units covered
//!   minus one) and the code's operands ([`line_at`]);
//! - 3.10 `co_linetable` (PEP 626; CPython 3.10's `Objects/lnotab_notes.txt`): byte pairs
//!   (bytes covered, signed line delta; -128: no line) ([`pep626_line`]);
//! - 3.9 `co_lnotab`: byte pairs (bytes advanced, signed line delta), the line being the one
//!   in force at the last pair starting at or before the offset ([`lnotab_line`]).

/// 3.9: the line of the instruction at byte offset `addr` (what `PyCode_Addr2Line` computes).
pub fn lnotab_line(table: &[u8], first_line: i32, addr: u32) -> i32 {
    let mut line = first_line;
    let mut start = 0u32;
    for pair in table.chunks_exact(2) {
        start += u32::from(pair[0]);
        if start > addr {
            break;
        }
        line += i32::from(pair[1] as i8);
    }
    line
}

/// 3.10: the line of the instruction at byte offset `addr`; `None` when it has no line or
/// lies past the table.
pub fn pep626_line(table: &[u8], first_line: i32, addr: u32) -> Option<i32> {
    let mut line = first_line;
    let mut start = 0u32;
    for pair in table.chunks_exact(2) {
        let end = start + u32::from(pair[0]);
        let delta = pair[1] as i8;
        if delta != -128 {
            line += i32::from(delta);
        }
        if (start..end).contains(&addr) {
            return (delta != -128).then_some(line);
        }
        start = end;
    }
    None
}

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

    /// CPython 3.9.2 (bullseye), for:
    /// ```text
    /// def f(x):                       # 2
    ///     y = x + 1                   # 3
    ///     if y:                       # 4
    ///                                 # 5
    ///         z = [i                  # 6
    ///              for i in range(y)] # 7
    ///     for _ in range(300):        # 8
    ///         y += 1                  # 9
    ///     return (y,                  # 10
    ///             x)                  # 11
    /// ```
    /// `f.__code__.co_lnotab`, and the line of each instruction as `dis.findlinestarts` gives
    /// it.
    #[test]
    fn lnotab_lines_are_those_of_cpython_3_9() {
        let table = [
            0, 1, 8, 1, 4, 2, 6, 1, 6, 255, 6, 2, 12, 1, 10, 1, 2, 1, 2, 255,
        ];
        let want = [
            3, 3, 3, 3, 4, 4, 6, 6, 6, 7, 7, 7, 6, 6, 6, 8, 8, 8, 8, 8, 8, 9, 9, 9, 9, 9, 10, 11,
            10, 10,
        ];
        for (i, line) in want.iter().enumerate() {
            assert_eq!(
                lnotab_line(&table, 2, 2 * i as u32),
                *line,
                "offset {}",
                2 * i
            );
        }
    }

    /// 3.10's format (no 3.10 interpreter here to take a table from): 4 bytes at +1, 2 with
    /// no line, 2 more on the line in force (delta 0), 6 at -2.
    #[test]
    fn pep626_entries_advance_the_line_and_mark_lines_missing() {
        let table = [4, 1, 2, 0x80, 2, 0, 6, (-2i8) as u8];
        assert_eq!(pep626_line(&table, 10, 0), Some(11));
        assert_eq!(pep626_line(&table, 10, 2), Some(11));
        assert_eq!(pep626_line(&table, 10, 4), None);
        assert_eq!(pep626_line(&table, 10, 6), Some(11));
        assert_eq!(pep626_line(&table, 10, 8), Some(9));
        assert_eq!(pep626_line(&table, 10, 13), Some(9));
        assert_eq!(pep626_line(&table, 10, 14), None);
    }

    #[test]
    fn varints_are_six_bits_a_byte() {
        let t = [0x40 | 1, 2];
        assert_eq!(varint(&t, &mut 0), Some(1 | (2 << 6)));
        assert_eq!(svarint(&[3], &mut 0), Some(-1));
        assert_eq!(varint(&[0x40], &mut 0), None);
    }
}
