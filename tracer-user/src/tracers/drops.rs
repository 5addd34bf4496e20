//! The `drops` table: what could not be recorded, per interval, tracer and reason. Each tracer
//! counts its kernel-side losses in a per-CPU array of its own (its registration's
//! [`KernelDrops`]) and its user-side losses itself ([`Tracer::take_drops`]); the session hands
//! both to [`DropsTable`] at the end of every interval.
//!
//! [`Tracer::take_drops`]: super::Tracer::take_drops

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

use super::{
    DropCount, Interval, KernelDrops, Registration, Table, TracerError, columns::timestamp,
};
use crate::{
    kernel::maps::{self, MapAccessError},
    snapshot::{Counters, Deltas},
};

pub const TABLE: &str = "drops";

pub static REGISTRATION: Registration = Registration {
    name: "drops",
    selectable: false,
    wanted: super::always,
    probes: &[],
    tables: &[Table {
        name: TABLE,
        schema,
        summary: None,
    }],
    metrics: &[],
    drops: None,
    setup: super::no_setup,
    hooks: super::no_hooks,
    // The session builds the table from every enabled tracer's counters (`DropsTable::new`).
    build: super::no_collector,
};

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

/// One tracer's kernel counters.
struct Counter {
    drops: KernelDrops,
    map: PerCpuArray<MapData, u64>,
    deltas: Deltas<u32, u64>,
    /// Totals read at the last snapshot, per index.
    totals: Vec<u64>,
}

/// Every enabled tracer's drop counters, and the run's totals.
pub struct DropsTable {
    counters: Vec<Counter>,
    /// Run totals per (tracer, reason), for run.json and the summary at exit.
    totals: BTreeMap<(&'static str, &'static str), u64>,
}

impl DropsTable {
    /// Takes the drop counters of the `enabled` registrations out of the object.
    pub fn new(ebpf: &mut Ebpf, enabled: &[&'static Registration]) -> Result<Self, TracerError> {
        let mut counters = Vec::new();
        for r in enabled {
            let Some(drops) = r.drops else { continue };
            let drops = drops();
            counters.push(Counter {
                map: maps::take_as(ebpf, drops.map)?,
                drops,
                deltas: Deltas::default(),
                totals: Vec::new(),
            });
        }
        Ok(DropsTable {
            counters,
            totals: BTreeMap::new(),
        })
    }

    /// Reads every counter (with the tracers' maps, at the interval's end).
    pub fn snapshot(&mut self) -> Result<(), TracerError> {
        for c in &mut self.counters {
            c.totals.clear();
            for i in 0..c.drops.reasons.len() as u32 {
                let values = c.map.get(&i, 0).map_err(MapAccessError::of(c.drops.map))?;
                c.totals.push(values.iter().fold(0u64, |a, v| a.add(v)));
            }
        }
        Ok(())
    }

    /// This interval's rows: the kernel counters' deltas since the last call plus `user`
    /// (counted by the tracers themselves).
    pub fn batch(
        &mut self,
        interval: &Interval,
        user: Vec<DropCount>,
    ) -> Result<Option<RecordBatch>, TracerError> {
        let mut rows: BTreeMap<(&'static str, &'static str), u64> = BTreeMap::new();
        for c in &mut self.counters {
            for (i, total) in c.totals.iter().enumerate() {
                if let Some(d) = c.deltas.delta(i as u32, *total) {
                    *rows
                        .entry((c.drops.tracer, c.drops.reasons[i]))
                        .or_default() += d;
                }
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
        super::columns::batch(
            TABLE,
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
    }

    /// (tracer, reason, count) of everything dropped during the run.
    pub fn run_totals(&self) -> Vec<DropCount> {
        self.totals.iter().map(|((t, r), n)| (*t, *r, *n)).collect()
    }
}
