//! The `drops` table: what the kernel side could not record, per interval and reason.

use std::sync::{Arc, LazyLock};

use arrow_array::{
    RecordBatch,
    builder::{Int64Builder, StringBuilder, TimestampMicrosecondBuilder},
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray},
};
use tracer_common::{
    drops::{DROP_REASONS, DropReason},
    maps::DROPS,
};

use super::{Interval, Tracer, TracerError, columns::timestamp, take_map};
use crate::{
    processes::{ProcessKey, Registry},
    snapshot::{Counters, Deltas},
};

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
    /// Run totals per reason, for the summary at exit.
    totals: [u64; DROP_REASONS as usize],
}

impl DropsTracer {
    pub fn new(ebpf: &mut Ebpf) -> Result<Self, TracerError> {
        let counters = PerCpuArray::try_from(take_map(ebpf, DROPS)?)
            .map_err(|source| TracerError::Map { map: DROPS, source })?;
        Ok(DropsTracer {
            counters,
            deltas: Deltas::default(),
            totals: [0; DROP_REASONS as usize],
        })
    }
}

impl Tracer for DropsTracer {
    fn table(&self) -> &'static str {
        TABLE
    }

    fn schema(&self) -> SchemaRef {
        schema()
    }

    fn collect(
        &mut self,
        interval: &Interval,
        _: &Registry,
    ) -> Result<Option<RecordBatch>, TracerError> {
        let mut start = TimestampMicrosecondBuilder::new();
        let mut end = TimestampMicrosecondBuilder::new();
        let mut tracer = StringBuilder::new();
        let mut reason = StringBuilder::new();
        let mut count = Int64Builder::new();
        let mut rows = 0;
        for r in DropReason::ALL {
            let values = self
                .counters
                .get(&(r as u32), 0)
                .map_err(|source| TracerError::Map { map: DROPS, source })?;
            let total = values.iter().fold(0u64, |a, v| a.add(v));
            if let Some(d) = self.deltas.delta(r as u32, total) {
                let (t, why) = r.describe();
                self.totals[r as usize] += d;
                start.append_value(interval.start_unix_ns / 1000);
                end.append_value(interval.end_unix_ns / 1000);
                tracer.append_value(t);
                reason.append_value(why);
                count.append_value(d as i64);
                rows += 1;
            }
        }
        if rows == 0 {
            return Ok(None);
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

    fn reap(&mut self, _: &[ProcessKey]) -> Result<(), TracerError> {
        Ok(())
    }

    fn run_drops(&self) -> Vec<(&'static str, &'static str, u64)> {
        DropReason::ALL
            .iter()
            .filter(|r| self.totals[**r as usize] > 0)
            .map(|r| {
                let (t, why) = r.describe();
                (t, why, self.totals[*r as usize])
            })
            .collect()
    }
}
