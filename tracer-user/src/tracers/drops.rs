//! The `drops` table: what could not be recorded, per interval, tracer and reason. The kernel
//! side counts its losses in the DROPS per-CPU array; tracers count theirs in user space.

use std::{
    collections::BTreeMap,
    sync::{Arc, LazyLock},
};

use arrow_array::{
    RecordBatch,
    builder::{Int64Builder, StringBuilder, TimestampMicrosecondBuilder},
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray},
};
use tracer_common::{drops::DropReason, maps::DROPS};

use super::{Interval, TracerError, columns::timestamp, take_map};
use crate::snapshot::{Counters, Deltas};

pub const TABLE: &str = "drops";

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("interval_start", timestamp(), false),
        Field::new("interval_end", timestamp(), false),
        Field::new("tracer", DataType::Utf8, false),
        Field::new("reason", DataType::Utf8, false),
        Field::new("count", DataType::Int64, false),
    ]))
});

pub fn schema() -> SchemaRef {
    SCHEMA.clone()
}

pub struct DropsTracer {
    counters: PerCpuArray<MapData, u64>,
    deltas: Deltas<u32, u64>,
    /// Run totals per (tracer, reason), for run.json and the summary at exit.
    totals: BTreeMap<(&'static str, &'static str), u64>,
}

impl DropsTracer {
    pub fn new(ebpf: &mut Ebpf) -> Result<Self, TracerError> {
        let counters = PerCpuArray::try_from(take_map(ebpf, DROPS)?)
            .map_err(|source| TracerError::Map { map: DROPS, source })?;
        Ok(DropsTracer {
            counters,
            deltas: Deltas::default(),
            totals: BTreeMap::new(),
        })
    }

    /// This interval's rows: the kernel counters' deltas plus `user` (counted by tracers).
    pub fn collect(
        &mut self,
        interval: &Interval,
        user: Vec<(&'static str, &'static str, u64)>,
    ) -> Result<Option<RecordBatch>, TracerError> {
        let mut rows: BTreeMap<(&'static str, &'static str), u64> = BTreeMap::new();
        for r in DropReason::ALL {
            let values = self
                .counters
                .get(&(r as u32), 0)
                .map_err(|source| TracerError::Map { map: DROPS, source })?;
            let total = values.iter().fold(0u64, |a, v| a.add(v));
            if let Some(d) = self.deltas.delta(r as u32, total) {
                *rows.entry(r.describe()).or_default() += d;
            }
        }
        for (tracer, reason, n) in user {
            if n > 0 {
                *rows.entry((tracer, reason)).or_default() += n;
            }
        }
        if rows.is_empty() {
            return Ok(None);
        }
        let mut start = TimestampMicrosecondBuilder::new();
        let mut end = TimestampMicrosecondBuilder::new();
        let mut tracer = StringBuilder::new();
        let mut reason = StringBuilder::new();
        let mut count = Int64Builder::new();
        for ((t, why), n) in rows {
            *self.totals.entry((t, why)).or_default() += n;
            start.append_value(interval.start_unix_ns / 1000);
            end.append_value(interval.end_unix_ns / 1000);
            tracer.append_value(t);
            reason.append_value(why);
            count.append_value(n as i64);
        }
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(start.finish().with_timezone("UTC")),
                Arc::new(end.finish().with_timezone("UTC")),
                Arc::new(tracer.finish()),
                Arc::new(reason.finish()),
                Arc::new(count.finish()),
            ],
        )
        .map(Some)
        .map_err(|source| TracerError::Arrow {
            table: TABLE,
            source,
        })
    }

    /// (tracer, reason, count) of everything dropped during the run.
    pub fn run_totals(&self) -> Vec<(&'static str, &'static str, u64)> {
        self.totals.iter().map(|((t, r), n)| (*t, *r, *n)).collect()
    }
}
