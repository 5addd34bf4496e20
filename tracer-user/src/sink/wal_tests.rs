//! Tests of the write-ahead log, and row helpers for the sink's other tests.
use std::sync::Arc;

use arrow_array::{Int64Array, StringArray};
use arrow_schema::{DataType, Field, Schema};

use super::*;

pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("n", DataType::Int64, false),
        Field::new("name", DataType::Utf8, false),
    ]))
}

pub fn batch(from: i64, rows: i64) -> RecordBatch {
    let n: Vec<i64> = (from..from + rows).collect();
    let names: Vec<String> = n.iter().map(|i| format!("process-{}", i % 7)).collect();
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(n)),
            Arc::new(StringArray::from(names)),
        ],
    )
    .unwrap()
}

pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "scalp-sink-test-{}-{name}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `groups` committed groups (table 0 gets 3 rows, table 1 one row, per group) and
/// then, if `uncommitted`, a chunk of two batches without a commit (not something the writer
/// does: a reader must still not apply it); returns the file's bytes.
fn write_log(path: &Path, groups: i64, uncommitted: bool) -> Vec<u8> {
    let meta = vec![("scalp.host".to_owned(), "h".to_owned())];
    let mut w = WalWriter::create(path, &meta, &[("a", schema()), ("b", schema())]).unwrap();
    for g in 0..groups {
        w.append(0, &batch(g * 10, 3)).unwrap();
        w.append(1, &batch(g * 10, 1)).unwrap();
        w.commit().unwrap();
    }
    if uncommitted {
        w.append(0, &batch(1000, 2)).unwrap();
        w.append(1, &batch(1000, 2)).unwrap();
        w.encoder.flush().unwrap();
        w.write_chunk().unwrap();
    }
    // Appended but never committed: stays out of the file.
    w.append(0, &batch(2000, 2)).unwrap();
    assert_eq!(w.bytes(), std::fs::metadata(path).unwrap().len());
    drop(w.close());
    std::fs::read(path).unwrap()
}

/// A group read back: (table, first value, rows) of each batch.
type Group = Vec<(usize, i64, usize)>;

/// Every committed group.
fn read_all(bytes: &[u8], dir: &Path) -> Result<(Vec<Group>, Tail), String> {
    let path = dir.join("copy.wal");
    std::fs::write(&path, bytes).unwrap();
    let mut r = match WalReader::open(File::open(&path).unwrap()) {
        Ok(r) => r,
        Err(OpenError::Empty) => return Ok((Vec::new(), Tail::default())),
        Err(e) => return Err(e.to_string()),
    };
    assert_eq!(r.tables().len(), 2);
    assert_eq!(r.meta(), &[("scalp.host".to_owned(), "h".to_owned())]);
    let mut groups = Vec::new();
    while let Some(g) = r.next_group() {
        groups.push(
            g.iter()
                .map(|(t, b)| {
                    let n = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                    (*t, n.value(0), b.num_rows())
                })
                .collect(),
        );
    }
    assert!(r.next_group().is_none());
    Ok((groups, r.tail()))
}

fn expected(groups: i64) -> Vec<Group> {
    (0..groups)
        .map(|g| vec![(0, g * 10, 3), (1, g * 10, 1)])
        .collect()
}

#[test]
fn committed_groups_read_back_in_order() {
    let dir = scratch("wal-roundtrip");
    let bytes = write_log(&dir.join("1.wal"), 5, false);
    let (groups, tail) = read_all(&bytes, &dir).unwrap();
    assert_eq!(groups, expected(5));
    assert!(!tail.dropped(), "{tail:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn records_after_the_last_commit_are_dropped_and_counted() {
    let dir = scratch("wal-uncommitted");
    let bytes = write_log(&dir.join("1.wal"), 3, true);
    let (groups, tail) = read_all(&bytes, &dir).unwrap();
    assert_eq!(groups, expected(3));
    assert_eq!(
        tail,
        Tail {
            records: 2,
            torn: false,
            torn_bytes: 0
        }
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_log_cut_anywhere_yields_a_prefix_of_its_groups_and_never_fails() {
    let dir = scratch("wal-cut");
    let full = write_log(&dir.join("1.wal"), 7, false);
    // The first six commits: a prefix of `full` (zstd is deterministic), ending where the
    // sixth commit's chunk ends.
    let six = write_log(&dir.join("2.wal"), 6, false);
    assert_eq!(full[..six.len()], six[..]);
    let mut last = 0;
    for cut in 0..full.len() {
        let (groups, tail) = read_all(&full[..cut], &dir).unwrap();
        assert_eq!(groups, expected(groups.len() as i64), "cut at {cut}");
        assert!(
            groups.len() >= last,
            "cut at {cut}: fewer groups than a shorter cut"
        );
        last = groups.len();
        if cut >= six.len() {
            assert_eq!(groups.len(), 6, "cut at {cut}");
            let torn = (cut - six.len()) as u64;
            assert_eq!(tail.torn_bytes, torn, "cut at {cut}");
            assert_eq!(tail.dropped(), torn > 0, "cut at {cut}");
        }
    }
    let (groups, tail) = read_all(&full, &dir).unwrap();
    assert_eq!((groups.len(), tail.dropped()), (7, false));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn damage_in_the_middle_keeps_the_groups_before_it() {
    let dir = scratch("wal-damage");
    let full = write_log(&dir.join("1.wal"), 6, false);
    for at in (HEADER..full.len()).step_by(7) {
        let mut bytes = full.clone();
        bytes[at] ^= 0x5a;
        // Either the header is unreadable (an error, never a panic) or a prefix is read.
        if let Ok((groups, _)) = read_all(&bytes, &dir) {
            assert_eq!(groups, expected(groups.len() as i64), "damage at {at}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn other_files_are_refused_and_an_empty_log_holds_nothing() {
    let dir = scratch("wal-foreign");
    assert!(matches!(
        read_all(b"PAR1 this is not a log at all", &dir),
        Err(e) if e.contains("not a scalp-bpf write-ahead log")
    ));
    assert_eq!(read_all(b"", &dir).unwrap().0.len(), 0);
    assert_eq!(read_all(b"SCALPW", &dir).unwrap().0.len(), 0);
    let mut v2 = MAGIC.to_vec();
    v2.extend(2u32.to_le_bytes());
    v2.extend([0; 4]);
    assert!(matches!(read_all(&v2, &dir), Err(e) if e.contains("version 2")));
    std::fs::remove_dir_all(&dir).unwrap();
}
