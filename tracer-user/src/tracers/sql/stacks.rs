//! `sql_stacks`: the full Python stacks that sent SQL statements, per interval, process,
//! fingerprint and stack (identical stacks counted together), for flame graphs: the frames are
//! three parallel lists, innermost first.

use std::{
    collections::HashMap,
    hash::{Hash, Hasher},
    rc::Rc,
    sync::{Arc, LazyLock},
};

use arrow_array::{
    ArrayRef, RecordBatch,
    builder::{BooleanBuilder, Int32Builder, Int64Builder, ListBuilder, StringBuilder},
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use crate::{
    processes::{ProcessKey, Processes},
    python::Frame,
    tracers::{
        Interval, TracerError,
        columns::{IntervalProcessColumns, batch, interval_process_fields},
    },
};

pub const STACKS: &str = "sql_stacks";

/// A stack as the kernel recorded it, named (frames that could not be named left out).
#[derive(Debug, PartialEq, Eq)]
pub struct Stack {
    /// Innermost first.
    pub frames: Vec<Frame>,
    /// Deeper than the kernel records (the outermost frames are missing).
    pub truncated: bool,
    /// The call site chosen from it.
    pub call_site: Option<Frame>,
    /// A hash of the frames: the same stack has the same id in every run.
    pub id: u64,
}

impl Stack {
    pub fn new(frames: Vec<Frame>, truncated: bool, call_site: Option<Frame>) -> Stack {
        // FNV-1a over the frames' text: stable across runs and builds (std's hasher is not).
        let mut h = Fnv(0xcbf2_9ce4_8422_2325);
        for f in &frames {
            f.function.hash(&mut h);
            f.file.hash(&mut h);
            f.line.hash(&mut h);
        }
        Stack {
            id: h.finish(),
            frames,
            truncated,
            call_site,
        }
    }
}

struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Statements per (process, fingerprint, stack id) in an interval.
#[derive(Default)]
pub struct StackSums {
    pub stack: Option<Rc<Stack>>,
    pub calls: u64,
    pub duration_ns: u64,
}

pub type StackRows = HashMap<(ProcessKey, String, u64), StackSums>;

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let list = |t| DataType::List(Arc::new(Field::new("item", t, true)));
    let mut f = interval_process_fields();
    f.extend([
        Field::new("db_query_text", DataType::Utf8, false),
        Field::new("stack_id", DataType::Int64, false),
        Field::new("code_function_name", DataType::Utf8, true),
        Field::new("code_file_path", DataType::Utf8, true),
        Field::new("code_line_number", DataType::Int32, true),
        Field::new("stack_function_names", list(DataType::Utf8), false),
        Field::new("stack_file_paths", list(DataType::Utf8), false),
        Field::new("stack_line_numbers", list(DataType::Int32), false),
        Field::new("stack_truncated", DataType::Boolean, false),
        Field::new("calls", DataType::Int64, false),
        Field::new("duration_ns_sum", DataType::Int64, false),
    ]);
    Arc::new(Schema::new(f))
});

pub fn schema() -> SchemaRef {
    SCHEMA.clone()
}

pub fn stacks_batch(
    interval: &Interval,
    processes: &Processes,
    rows: &[(&(ProcessKey, String, u64), &StackSums)],
) -> Result<RecordBatch, TracerError> {
    let mut process = IntervalProcessColumns::default();
    let mut text = StringBuilder::new();
    let mut id = Int64Builder::new();
    let (mut site_fn, mut site_file, mut site_line) = (
        StringBuilder::new(),
        StringBuilder::new(),
        Int32Builder::new(),
    );
    let mut functions = ListBuilder::new(StringBuilder::new());
    let mut files = ListBuilder::new(StringBuilder::new());
    let mut lines = ListBuilder::new(Int32Builder::new());
    let mut truncated = BooleanBuilder::new();
    let (mut calls, mut duration) = (Int64Builder::new(), Int64Builder::new());
    for ((key, fingerprint, stack_id), sums) in rows {
        let Some(stack) = &sums.stack else { continue };
        process.append(interval, *key, processes.get(*key));
        text.append_value(fingerprint);
        id.append_value(*stack_id as i64);
        let site = stack.call_site.as_ref();
        site_fn.append_option(site.map(|c| c.function.as_str()));
        site_file.append_option(site.map(|c| c.file.as_str()));
        site_line.append_option(site.map(|c| c.line));
        for f in &stack.frames {
            functions.values().append_value(&f.function);
            files.values().append_value(&f.file);
            lines.values().append_value(f.line);
        }
        functions.append(true);
        files.append(true);
        lines.append(true);
        truncated.append_value(stack.truncated);
        calls.append_value(sums.calls as i64);
        duration.append_value(sums.duration_ns as i64);
    }
    let mut columns = process.finish();
    columns.extend::<[ArrayRef; 11]>([
        Arc::new(text.finish()),
        Arc::new(id.finish()),
        Arc::new(site_fn.finish()),
        Arc::new(site_file.finish()),
        Arc::new(site_line.finish()),
        Arc::new(functions.finish()),
        Arc::new(files.finish()),
        Arc::new(lines.finish()),
        Arc::new(truncated.finish()),
        Arc::new(calls.finish()),
        Arc::new(duration.finish()),
    ]);
    batch(STACKS, schema(), columns)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(function: &str, line: i32) -> Frame {
        Frame {
            function: function.to_owned(),
            file: "/srv/app.py".to_owned(),
            line,
        }
    }

    #[test]
    fn a_stack_id_depends_on_its_frames_only() {
        let a = Stack::new(vec![frame("f", 1), frame("g", 2)], false, None);
        let b = Stack::new(
            vec![frame("f", 1), frame("g", 2)],
            true,
            Some(frame("f", 1)),
        );
        let c = Stack::new(vec![frame("f", 1), frame("g", 3)], false, None);
        assert_eq!(a.id, b.id);
        assert_ne!(a.id, c.id);
        // Stable across builds: the same bytes hash the same.
        assert_eq!(
            Stack::new(Vec::new(), false, None).id,
            0xcbf2_9ce4_8422_2325
        );
    }
}
