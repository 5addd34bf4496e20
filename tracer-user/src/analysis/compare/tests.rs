use super::*;

fn metric(id: &str) -> &'static Metric {
    metrics().iter().copied().find(|m| m.id == id).unwrap()
}

fn settings() -> Settings {
    Settings {
        per: Per::Auto,
        limits: metrics()
            .iter()
            .map(|m| Limits {
                threshold: m.threshold,
                floor: m.floor,
            })
            .collect(),
        confidence: 0.99,
        new_floor: 0.01,
    }
}

fn limits(m: &Metric) -> Limits {
    Limits {
        threshold: m.threshold,
        floor: m.floor,
    }
}

/// A run of one interval: a total over some units (too few intervals for an interval estimate:
/// threshold and floor decide, as for short runs).
fn once(value: f64, units: f64) -> Cells {
    Cells::Ratio(vec![(value, units)])
}

/// `n` intervals with the same counts each (no noise at all).
fn steady(n: usize, value: f64, units: f64) -> Cells {
    Cells::Ratio(vec![(value, units); n])
}

fn key() -> (String, Vec<String>) {
    ("svc".to_owned(), vec!["k".to_owned()])
}

fn run(m: &'static Metric, l: &Limits, base: Option<&Cells>, head: Option<&Cells>) -> Change {
    let empty_b = Cells::Ratio(vec![(0.0, 1.0)]);
    let empty_h = Cells::Ratio(vec![(0.0, 1.0)]);
    let input = Input {
        bases: vec![base.unwrap_or(&empty_b)],
        head: head.unwrap_or(&empty_h),
        base_present: base.is_some(),
        head_present: head.is_some(),
        seed: 1,
    };
    judge(m, l, &settings(), Basis::Unit, &key(), &input)
}

#[test]
fn twice_the_statements_per_unit_regress() {
    let m = metric("sql.calls");
    // 50 requests each: 50 statements vs 100.
    let c = run(
        m,
        &limits(m),
        Some(&once(50.0, 50.0)),
        Some(&once(100.0, 50.0)),
    );
    assert_eq!((c.base_rate, c.head_rate), (Some(1.0), Some(2.0)));
    assert_eq!((c.base, c.head), (Some(50.0), Some(100.0)));
    assert_eq!(c.change, Some(1.0));
    assert_eq!(c.excess, 50.0);
    assert_eq!(c.verdict, Verdict::Regression);
}

#[test]
fn per_unit_normalization_forgives_more_work() {
    let m = metric("sql.calls");
    // Head did twice the requests: the same statements per request.
    let c = run(
        m,
        &limits(m),
        Some(&once(500.0, 50.0)),
        Some(&once(1000.0, 100.0)),
    );
    assert_eq!(c.verdict, Verdict::Same);
}

#[test]
fn floors_keep_small_numbers_quiet() {
    let m = metric("syscalls.calls");
    // 1 → 2 calls is +100 %, but one call is noise.
    let c = run(m, &limits(m), Some(&once(1.0, 1.0)), Some(&once(2.0, 1.0)));
    assert_eq!(c.change, Some(1.0));
    assert_eq!(c.verdict, Verdict::Same);
    // A syscall new in head with enough calls regresses; with few it does not.
    let c = run(m, &limits(m), None, Some(&once(500.0, 1.0)));
    assert_eq!(c.verdict, Verdict::Regression);
    let c = run(m, &limits(m), None, Some(&once(5.0, 1.0)));
    assert_eq!(c.verdict, Verdict::Same);
}

#[test]
fn new_fingerprints_fail_above_the_floor_per_unit_and_gone_ones_are_reported() {
    let m = metric("sql.calls");
    // 5 in 100 requests: above the 1 % floor for new keys.
    let c = run(m, &limits(m), None, Some(&once(5.0, 100.0)));
    assert_eq!(c.verdict, Verdict::New);
    assert!(c.verdict.fails());
    // Once in 200 requests: reported, not failing.
    let c = run(m, &limits(m), None, Some(&once(1.0, 200.0)));
    assert_eq!(c.verdict, Verdict::NewBelowFloor);
    assert!(!c.verdict.fails());
    let c = run(m, &limits(m), Some(&once(300.0, 1.0)), None);
    assert_eq!(c.verdict, Verdict::Gone);
}

#[test]
fn a_new_key_exactly_at_the_floor_fails_when_units_are_spread_over_intervals() {
    let m = metric("sql.calls");
    // Once in 200 units, the 200 spread over 7 intervals of one run (their float sum is a hair
    // above 200): at a 0.5 % floor, "at least" holds.
    let spread: Vec<(f64, f64)> = (0..7)
        .map(|i| (f64::from(u8::from(i == 3)), 200.0 * 0.1 / 0.7))
        .collect();
    let units: f64 = spread.iter().map(|x| x.1).sum();
    assert!(
        1.0 / units < 0.005,
        "the case needs a sum above 200: {units}"
    );
    let head = Cells::Ratio(spread);
    let empty = Cells::Ratio(vec![(0.0, 1.0)]);
    let input = Input {
        bases: vec![&empty],
        head: &head,
        base_present: false,
        head_present: true,
        seed: 1,
    };
    let at_floor = Settings {
        new_floor: 0.005,
        ..settings()
    };
    let c = judge(m, &limits(m), &at_floor, Basis::Unit, &key(), &input);
    assert_eq!(c.verdict, Verdict::New, "{c:?}");
    let above = Settings {
        new_floor: 0.0051,
        ..settings()
    };
    let c = judge(m, &limits(m), &above, Basis::Unit, &key(), &input);
    assert_eq!(c.verdict, Verdict::NewBelowFloor, "{c:?}");
}

#[test]
fn a_fingerprint_some_base_run_has_is_not_new() {
    let m = metric("sql.calls");
    let seen = steady(10, 1.0, 50.0);
    let unseen = steady(10, 0.0, 50.0);
    let head = steady(10, 1.0, 50.0);
    let input = Input {
        bases: vec![&seen, &unseen],
        head: &head,
        base_present: true,
        head_present: true,
        seed: 3,
    };
    let c = judge(m, &limits(m), &settings(), Basis::Request, &key(), &input);
    assert_ne!(c.verdict, Verdict::New);
    // Half the base runs had it: the spread between them says a run may or may not have it.
    assert_eq!(c.verdict, Verdict::Same, "{c:?}");
}

#[test]
fn thresholds_are_relative_and_improvements_are_not_failures() {
    let m = metric("syscalls.calls");
    let tight = Limits {
        threshold: 0.05,
        floor: 1.0,
    };
    let (b, h) = (once(1000.0, 1.0), once(1080.0, 1.0));
    assert_eq!(
        run(m, &tight, Some(&b), Some(&h)).verdict,
        Verdict::Regression
    );
    assert_eq!(
        run(m, &limits(m), Some(&b), Some(&h)).verdict,
        Verdict::Same
    );
    let c = run(m, &limits(m), Some(&b), Some(&once(500.0, 1.0)));
    assert_eq!(c.verdict, Verdict::Improvement);
    assert!(!c.verdict.fails());
}

#[test]
fn a_change_within_the_noise_does_not_fail() {
    let m = metric("sql.calls");
    // +25 % on average, but the intervals swing between 0 and 2× the mean: not beyond noise.
    let base = Cells::Ratio(
        (0..20)
            .map(|i| (if i % 2 == 0 { 0.0 } else { 80.0 }, 40.0))
            .collect(),
    );
    let head = Cells::Ratio(
        (0..20)
            .map(|i| (if i % 3 == 0 { 150.0 } else { 0.0 }, 40.0))
            .collect(),
    );
    let c = run(m, &limits(m), Some(&base), Some(&head));
    assert!(c.change.unwrap() > 0.2, "{c:?}");
    assert!(c.interval.is_some_and(|i| i.low < 0.0), "{c:?}");
    assert_eq!(c.verdict, Verdict::Same);
    // The same change, steady: a regression, with its interval.
    let c = run(
        m,
        &limits(m),
        Some(&steady(20, 40.0, 40.0)),
        Some(&steady(20, 50.0, 40.0)),
    );
    assert_eq!(c.verdict, Verdict::Regression);
    assert!(
        c.interval.is_some_and(|i| i.low > 0.2 && i.high < 0.3),
        "{c:?}"
    );
}

#[test]
fn latency_needs_samples_a_ratio_and_an_absolute_step() {
    let m = metric("sql.p97");
    let l = limits(m);
    // All calls in one bucket: the p97 sits at 97 % of the bucket's width.
    let hist = |bucket: usize, calls: i64| Cells::Hist {
        q: 0.97,
        hists: vec![{
            let mut h = vec![0; 40];
            h[bucket] = calls;
            h
        }],
    };
    // [1 ms, 2 ms) → [4 ms, 8 ms) with 1000 samples each: regression.
    let c = run(m, &l, Some(&hist(21, 1000)), Some(&hist(23, 1000)));
    assert_eq!(c.verdict, Verdict::Regression);
    // The same with 200 samples: not enough to tell.
    let c = run(m, &l, Some(&hist(21, 200)), Some(&hist(23, 200)));
    assert_eq!(c.verdict, Verdict::Same);
    // [64 µs, 128 µs) → [256 µs, 512 µs): 4x, but below the 1 ms floor.
    let c = run(m, &l, Some(&hist(17, 1000)), Some(&hist(19, 1000)));
    assert_eq!(c.verdict, Verdict::Same);
}

/// The verdict of `m` (default limits unless given) for `base` → `head` over `units` each.
fn verdict(
    m: &'static Metric,
    l: Option<Limits>,
    base: f64,
    head: f64,
    units: (f64, f64),
) -> Verdict {
    let l = l.unwrap_or_else(|| limits(m));
    run(
        m,
        &l,
        Some(&once(base, units.0)),
        Some(&once(head, units.1)),
    )
    .verdict
}

#[test]
fn a_counter_exactly_at_its_threshold_is_not_a_regression() {
    // syscalls.calls: 10 %, floor 100. +10 % exactly (1000 → 1100; 0.1 is not a binary
    // fraction) is not worse than the threshold; one call more is.
    let m = metric("syscalls.calls");
    assert_eq!(verdict(m, None, 1000.0, 1100.0, (1.0, 1.0)), Verdict::Same);
    assert_eq!(
        verdict(m, None, 1000.0, 1101.0, (1.0, 1.0)),
        Verdict::Regression
    );
    // The same per unit, with units that are not powers of two.
    assert_eq!(verdict(m, None, 3000.0, 3300.0, (3.0, 3.0)), Verdict::Same);
    assert_eq!(
        verdict(m, None, 3000.0, 3301.0, (3.0, 3.0)),
        Verdict::Regression
    );
    assert_eq!(
        verdict(m, None, 1000.0, 2200.0, (10.0, 20.0)),
        Verdict::Same
    );
    // -10 % exactly is not an improvement either; more is.
    assert_eq!(verdict(m, None, 1000.0, 900.0, (1.0, 1.0)), Verdict::Same);
    assert_eq!(
        verdict(m, None, 1000.0, 899.0, (1.0, 1.0)),
        Verdict::Improvement
    );
    // The reported change is the exact +10 %.
    let c = run(
        m,
        &limits(m),
        Some(&once(1000.0, 1.0)),
        Some(&once(1100.0, 1.0)),
    );
    assert_eq!(c.change, Some(0.1));
}

#[test]
fn a_counter_exactly_at_its_floor_is_a_regression() {
    // sql.calls: 10 %, floor 20 (in head's terms). +100 % of 20 is 20 more: at the floor.
    let m = metric("sql.calls");
    assert_eq!(
        verdict(m, None, 20.0, 40.0, (1.0, 1.0)),
        Verdict::Regression
    );
    assert_eq!(verdict(m, None, 19.0, 38.0, (1.0, 1.0)), Verdict::Same);
    // Per unit: base 2 per unit, head 3 per unit over 20 units: 20 more than predicted.
    assert_eq!(
        verdict(m, None, 20.0, 60.0, (10.0, 20.0)),
        Verdict::Regression
    );
    assert_eq!(verdict(m, None, 20.0, 59.0, (10.0, 20.0)), Verdict::Same);
    // Something base did zero times (syscalls.calls, floor 100): the floor alone decides.
    let s = metric("syscalls.calls");
    assert_eq!(
        verdict(s, None, 0.0, 100.0, (1.0, 1.0)),
        Verdict::Regression
    );
    assert_eq!(verdict(s, None, 0.0, 99.0, (1.0, 1.0)), Verdict::Same);
    // Improvements need the floor too: 101 fewer of 1001 is beyond both; 99 fewer of 500 is
    // -19.8 % but below the floor.
    assert_eq!(
        verdict(s, None, 1001.0, 900.0, (1.0, 1.0)),
        Verdict::Improvement
    );
    assert_eq!(verdict(s, None, 500.0, 401.0, (1.0, 1.0)), Verdict::Same);
}

#[test]
fn ratios_exactly_at_their_threshold_and_floor() {
    let m = metric("cache.miss_ratio");
    // Binary fractions, so that the boundaries are exact: 25 %, floor 1/16.
    let l = || {
        Some(Limits {
            threshold: 0.25,
            floor: 0.0625,
        })
    };
    assert_eq!(verdict(m, l(), 0.5, 0.625, (1.0, 1.0)), Verdict::Same);
    assert_eq!(
        verdict(m, l(), 0.5, 0.6875, (1.0, 1.0)),
        Verdict::Regression
    );
    // +50 % but only 1/32 more: below the floor.
    assert_eq!(verdict(m, l(), 0.0625, 0.09375, (1.0, 1.0)), Verdict::Same);
    // +100 % and exactly the floor.
    assert_eq!(
        verdict(m, l(), 0.0625, 0.125, (1.0, 1.0)),
        Verdict::Regression
    );
    // A ratio needs a denominator in each run.
    assert_eq!(verdict(m, l(), 0.5, 1.0, (0.0, 1.0)), Verdict::Same);
}
